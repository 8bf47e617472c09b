"""The activator's aiohttp applications and process lifecycle.

``create_app`` builds the proxy (port 8012): its ``cleanup_ctx`` owns the Kubernetes client, the one upstream
ClientSession, the watch caches and every background task. ``create_admin_app`` serves
/metrics, /healthz, /readyz and /debug/coldstarts (port 9090). ``serve`` runs both and drains on SIGTERM:
readiness fails first, the proxy keeps serving for ``drain_seconds`` so routing moves away, then stops listening
and gives in-flight and queued requests up to ``shutdown_timeout_seconds``. (``web.run_app`` stops listening before
any shutdown hook runs, so it cannot drain.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from activator.coldstart import ColdStarts
from activator.forwarding import Forwarder, new_session
from activator.journal import Journal
from activator.listening import Listener
from activator.metrics import GcPauses, Metrics, ThrottlerCollector
from activator.proxying import Proxy
from activator.recovering import STANDALONE, Recovery
from activator.reporting import Reporter, ReporterMetrics, Sender, ServiceSenders
from activator.scaling import ColdStartPath, StandardPath
from activator.scheduling import LocalPath, claim_order
from activator.settings import Settings
from activator.tracking import Tracker
from localsched.knative import REVISION_LABEL, revision_key_of
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.slices import SERVICE_NAME_LABEL
from localsched.kube.watching import WatchCache
from localsched.metrics import daemon_registry
from localsched.tasks import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    kube: KubeClient
    tracker: Tracker
    cold_starts: ColdStarts
    journal: Journal
    proxy: Proxy
    supervisor: Supervisor = field(default_factory=Supervisor)
    caches: list[WatchCache] = field(default_factory=list)
    draining: bool = False
    listening: bool = True  # serve() holds it False until the proxy port listens (after the caches sync)

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.listening:
            return False, "not listening yet"
        if not self.supervisor.healthy:
            return False, f"background task failed: {self.supervisor.failed}"
        if not all(c.synced.is_set() for c in self.caches):
            return False, "watch caches not synced yet"
        return True, "ready"


SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", Metrics)
RUNTIME = web.AppKey("runtime", Runtime)


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    identity = settings.identity
    kube = await KubeClient.from_environment(settings.kubeconfig, user_agent=f"activator/{identity.node_name}")
    session = new_session(connect_timeout=settings.forwarding.connect_timeout_seconds)
    closing: list[Callable[[], Awaitable[None]]] = []
    try:
        slice_resource = await kube.endpointslice_resource()
        demand: asyncio.Queue[str] = asyncio.Queue()

        def want(key: str) -> None:  # the cold starts are built below, once their path is
            cold_starts.want(key)

        tracker = Tracker(kube, slice_resource, queue_limit=settings.throttling.queue_limit,
                          metrics=metrics, on_no_capacity=want, node_name=identity.node_name,
                          probe_interval=settings.throttling.probe_interval_seconds)  # fmt: skip
        closing.append(tracker.prober.close)
        caches = list(tracker.caches)
        # This process, as the creator of the stand-ins it writes (a restarted container is another process).
        activator = f"{identity.pod_name or STANDALONE + identity.node_name}/{secrets.token_hex(4)}"
        reporter, endpointsctl = _reporter(settings, session, app[REGISTRY], kube, slice_resource)
        if endpointsctl is not None:
            caches.append(endpointsctl.slices)
            closing.append(endpointsctl.close)
        path = await _cold_start_path(settings, kube, tracker, reporter, activator, metrics, caches, closing)
        recovery = Recovery(kube, tracker.local_pods, node_name=identity.node_name, activator=activator,
                            activator_namespace=identity.pod_namespace, metrics=metrics)  # fmt: skip
        closing.append(recovery.close)
        gc_pauses = GcPauses(metrics.gc_pauses)
        closing.append(gc_pauses.close)
        journal = Journal()
        local = isinstance(path, LocalPath)  # it claims replicas itself: the autoscaler hears once it has
        cold_starts = ColdStarts(tracker, path, demand=demand, journal=journal, metrics=metrics,
                                 timeout=settings.throttling.activation_timeout_seconds,
                                 hold=reporter.hold if local else None,
                                 release=reporter.release if local else None)  # fmt: skip
        closing.append(cold_starts.close)
        forwarder = Forwarder(
            session,
            connect_timeout=settings.forwarding.connect_timeout_seconds,
            max_body_bytes=settings.server.max_body_bytes,
        )
        proxy = Proxy(settings, tracker, forwarder, metrics, journal, reporter)
        runtime = Runtime(kube, tracker, cold_starts, journal, proxy, caches=caches)
        collector = ThrottlerCollector(tracker.throttlers.items)
        app[REGISTRY].register(collector)
        for cache in caches:
            runtime.supervisor.start(f"watch:{cache.name}", cache.run())
        runtime.supervisor.start("cold-starts", cold_starts.run())
        runtime.supervisor.start("stat-reports", reporter.run())
        for sender in reporter.senders:
            runtime.supervisor.start(f"stat-sender:{sender.name}", sender.run())
        app[RUNTIME] = runtime
        yield
        app[REGISTRY].unregister(collector)
        await runtime.supervisor.stop()
    finally:
        for close in reversed(closing):
            await close()
        await session.close()
        await kube.close()


def _reporter(
    settings: Settings,
    session: aiohttp.ClientSession,
    registry: CollectorRegistry,
    kube: KubeClient,
    slice_resource: r.Resource,
) -> tuple[Reporter, ServiceSenders | None]:
    """Demand reports to Knative's autoscaler, and to every endpointsctl replica (for KEDA), as configured."""
    reporting, identity = settings.reporting, settings.identity
    metrics = ReporterMetrics.create(registry)

    def sender(name: str, url: str) -> Sender:
        return Sender(name, url, session, metrics, buffer=reporting.buffer, autoscaler=name == "autoscaler")

    senders = [sender("autoscaler", reporting.autoscaler_url)] if reporting.autoscaler_url else []
    # Knative's autoscaler tells the activators' reports apart by pod name.
    # A hold lasts as long as the local cold start it covers, which ends by the activation timeout. A shorter one
    # lapsed in bursts, where the kubelet takes seconds to report: the autoscaler then raised the replicas beside the
    # local claim, which lost at maxScale 1 and threw its running pod away.
    reporter = Reporter(identity.pod_name or f"activator-{identity.node_name}", senders,
                        interval=reporting.interval_seconds,
                        hold_limit_seconds=settings.throttling.activation_timeout_seconds)  # fmt: skip
    if not reporting.demand_service:
        return reporter, None
    namespace, _, service = reporting.demand_service.partition("/")
    slices = WatchCache(kube, slice_resource, namespace=namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}",
                        name="endpointsctl-slices")  # fmt: skip
    return reporter, ServiceSenders("endpointsctl", slices, reporter, sender)


async def _cold_start_path(
    settings: Settings,
    kube: KubeClient,
    tracker: Tracker,
    reporter: Reporter,
    activator: str,
    metrics: Metrics,
    caches: list[WatchCache],
    closing: list[Callable[[], Awaitable[None]]],
) -> ColdStartPath:
    """The standard path, or local scheduling in front of it (adding its cache and its close to the runtime's)."""
    standard = StandardPath(reporter)
    if not settings.local_scheduling:
        return standard
    node = settings.identity.node_name
    replicasets = WatchCache(kube, r.REPLICASETS, label_selector=REVISION_LABEL, name="replicasets")
    replicasets.add_index("revision", revision_key_of)
    caches.append(replicasets)
    local = LocalPath(
        kube, tracker, node_name=node, activator=activator, replicasets=replicasets, standard=standard,
        probe_interval=settings.throttling.probe_interval_seconds,
        timeout=settings.throttling.activation_timeout_seconds, metrics=metrics,
        claim_at=claim_order(settings.claim_at, await kube.server_version()),
    )  # fmt: skip
    closing.append(local.close)
    log.info("local scheduling on %s: replicas claimed at %s", node, local.claim_at)
    return local


async def _proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[RUNTIME].proxy.handle(request)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    # client_max_size only limits bodies read whole; the proxy streams bodies (limited by --max-body-bytes).
    # The connections' own limits (header sizes, idle time, how many) are the listener's: activator/listening.py.
    app = web.Application()
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else daemon_registry()
    app[METRICS] = Metrics.create(app[REGISTRY])
    app.cleanup_ctx.append(_runtime)
    app.router.add_route("*", "/{tail:.*}", _proxy_handler)
    return app


def create_admin_app(proxy_app: web.Application) -> web.Application:
    admin = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(proxy_app[REGISTRY])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        runtime = proxy_app.get(RUNTIME)
        if runtime is not None and not runtime.supervisor.healthy:
            return web.Response(status=500, text=f"unhealthy: {runtime.supervisor.failed}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        runtime = proxy_app.get(RUNTIME)
        ready, why = runtime.readiness() if runtime is not None else (False, "starting")
        return web.Response(status=200 if ready else 503, text=why + "\n")

    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", healthz)

    async def coldstarts(_: web.Request) -> web.Response:
        """The last cold starts, step by step (``activator/journal.py``): what benchmarks and people read."""
        runtime = proxy_app.get(RUNTIME)
        return web.json_response(runtime.journal.recent() if runtime is not None else [])

    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/debug/coldstarts", coldstarts)
    return admin


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    admin = create_admin_app(app)
    server = settings.server
    # handler_cancellation: a client that goes away cancels its request, as a Go server's request context does
    # for Knative's activator: a queued one frees its slot at once (the cold start goes on for the others), a
    # forwarded one releases its pod.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=server.shutdown_timeout_seconds,
                           access_log=None, handler_cancellation=True)  # fmt: skip
    admin_runner = web.AppRunner(admin, handle_signals=False, access_log=None)
    await runner.setup()
    app[RUNTIME].listening = False
    await admin_runner.setup()
    await web.TCPSite(admin_runner, server.bind_address, server.admin_port).start()
    # Listen for requests only once the watch caches hold the cluster: before that every revision would look
    # unknown (404). Until then a connection is refused, which a gateway retries on another activator.
    log.info("waiting for the watch caches to sync before listening on :%d", server.port)
    await asyncio.gather(*(cache.synced.wait() for cache in app[RUNTIME].caches))
    metrics = app[METRICS]
    listener = Listener(runner, max_connections=server.max_connections, idle_timeout=server.idle_timeout_seconds,
                        open_connections=metrics.open_connections, refused=metrics.connections_refused,
                        refusals=metrics.refusals)  # fmt: skip
    await listener.start(server.bind_address, server.port)
    app[RUNTIME].listening = True
    log.info("activator on node %s listening on %s:%d (admin :%d)", settings.identity.node_name,
             server.bind_address, server.port, server.admin_port)  # fmt: skip
    # Everything loaded so far (modules, classes, settings, the clients) lives as long as the process: moved out
    # of the collector's reach, a full collection scans only what came later. Without this, each one stalled
    # every request in the house for some 70 ms (activator_gc_pause_seconds{generation="2"}).
    gc.collect()
    gc.freeze()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    runtime = app[RUNTIME]
    runtime.draining = True
    queued = sum(t.queue_depth + t.in_flight for _, t in runtime.tracker.throttlers.items())
    log.info("draining: unready now, serving %.1fs more (%d requests in the house)", server.drain_seconds, queued)
    await asyncio.sleep(server.drain_seconds)
    listener.close()  # stop listening
    await runner.cleanup()  # wait for in-flight and queued requests; then close the runtime
    await admin_runner.cleanup()
    log.info("activator stopped")
