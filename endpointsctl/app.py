"""endpointsctl's process: an aiohttp admin app that owns the Kubernetes client and every background task.

``/metrics`` (Prometheus), ``/healthz`` (every background task alive) and ``/readyz`` (healthy and caches synced),
and the websocket ``/stats`` where the activators report their demand (``endpointsctl/demand.py``), which the gRPC
server for KEDA's external scaler answers from (``--keda-port``, ``endpointsctl/keda.py``). Every replica watches,
stays ready and serves KEDA; only the Lease holder reconciles. The background tasks -- one per watch cache, the
demand sweep, and the leader election running :meth:`Controller.lead` -- are named and guarded: an unexpected exit
is logged and fails ``/healthz`` (so the kubelet restarts the pod); on shutdown they are cancelled and awaited, and
the Lease is released so that the standby takes over at once. The stats connections and KEDA's streams are closed
at the start of shutdown, so that neither holds it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from endpointsctl.controller import Controller
from endpointsctl.demand import Demand, StatsSink
from endpointsctl.keda import ExternalScaler, ScalerServer
from endpointsctl.leader import LeaderElector
from endpointsctl.metrics import Metrics
from endpointsctl.recording import Recorder
from endpointsctl.settings import Settings
from endpointsctl.subsetting.framework import Algorithm
from endpointsctl.subsetting.registry import load_algorithm
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.metrics import daemon_registry
from localsched.tasks import Supervisor

log = logging.getLogger(__name__)


SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", Metrics)
ALGORITHM = web.AppKey("algorithm", Algorithm)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
CLIENT = web.AppKey("client", KubeClient)
CONTROLLER = web.AppKey("controller", Controller)
ELECTOR = web.AppKey("elector", LeaderElector)
DEMAND = web.AppKey("demand", Demand)
STATS = web.AppKey("stats", StatsSink)
SCALER = web.AppKey("scaler", ScalerServer)


def create_app(
    settings: Settings, *, registry: CollectorRegistry | None = None, demand: Demand | None = None
) -> web.Application:
    """The admin app. Resolves the subsetting algorithm now, so that a bad one fails before anything starts."""
    app = web.Application()
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else daemon_registry()
    app[METRICS] = Metrics.create(app[REGISTRY])
    app[ALGORITHM] = load_algorithm(settings.subsetting.config)
    app[SUPERVISOR] = Supervisor()
    app[DEMAND] = demand if demand is not None else Demand(staleness_seconds=settings.keda.staleness_seconds)
    app[STATS] = StatsSink(app[DEMAND], app[METRICS])
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", app[STATS].handle)
    app.on_shutdown.append(closing)
    app.cleanup_ctx.append(scaling)  # first: needs no API server, and is stopped last
    app.cleanup_ctx.append(kubernetes)
    app.cleanup_ctx.append(controlling)
    return app


# -- handlers -------------------------------------------------------------------------------------------------------


async def metrics_handler(request: web.Request) -> web.Response:
    controller = request.app.get(CONTROLLER)
    if controller is not None:
        controller.observe()
    request.app[METRICS].demand_active_revisions.set(request.app[DEMAND].active_count)
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    status, text = request.app[SUPERVISOR].health()
    return web.Response(status=status, text=text)


async def readyz(request: web.Request) -> web.Response:
    if not request.app[SUPERVISOR].healthy:
        return await healthz(request)
    controller = request.app.get(CONTROLLER)
    if controller is None or not controller.synced():
        return web.Response(status=503, text="watch caches are not synced yet\n")
    elector = request.app.get(ELECTOR)
    role = "leader" if controller.leading else f"standby (leader: {elector.holder or 'unknown'})" if elector else "-"
    return web.Response(text=f"ok, {role}\n")


# -- background -----------------------------------------------------------------------------------------------------


async def scaling(app: web.Application) -> AsyncIterator[None]:
    """The demand table's sweep (supervised), and the gRPC server for KEDA unless ``--keda-port`` is 0."""
    settings, demand = app[SETTINGS], app[DEMAND]
    sweep = app[SUPERVISOR].start("demand-sweep", demand.sweep_forever())
    if settings.keda.port:
        server = ScalerServer(ExternalScaler(demand, app[METRICS]),
                              settings.keda.host or settings.server.bind_address, settings.keda.port)  # fmt: skip
        await server.start()
        app[SCALER] = server
    try:
        yield
    finally:
        scaler = app.get(SCALER)
        if scaler is not None:
            await scaler.stop(settings.server.shutdown_timeout_seconds)
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sweep


async def closing(app: web.Application) -> None:
    """At the start of shutdown: end KEDA's calls (KEDA reconnects to another replica through the Service) and close
    the activators' stats connections (they would hold the admin server's shutdown for its whole timeout)."""
    scaler = app.get(SCALER)
    if scaler is not None:
        await scaler.stop(app[SETTINGS].server.shutdown_timeout_seconds)
    await app[STATS].close()


async def kubernetes(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = await KubeClient.from_environment(settings.kubeconfig, user_agent="endpointsctl")
    app[CLIENT] = client
    try:
        yield
    finally:
        await client.close()


async def controlling(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client, metrics = app[CLIENT], app[METRICS]
    recorder = Recorder(client, metrics, host=settings.identity.pod_name or settings.leader.identity)
    elector: LeaderElector | None = None
    if settings.leader.enabled:

        def changed(leading: bool) -> None:
            metrics.leader_transitions.labels("started" if leading else "stopped").inc()
            if leading:
                lease = {"apiVersion": r.LEASES.api_version, "kind": r.LEASES.kind,
                         "metadata": {"name": settings.leader.lease_name,
                                      "namespace": settings.leader.lease_namespace}}  # fmt: skip
                recorder.record(lease, "Normal", "LeaderElection", f"{settings.leader.identity} became leader")

        elector = LeaderElector(client, settings.leader, on_change=changed)
        app[ELECTOR] = elector
    fence = elector.fresh if elector is not None else None
    controller = Controller(client, settings, app[ALGORITHM], metrics, recorder=recorder, fence=fence)
    await controller.setup()
    app[CONTROLLER] = controller
    supervisor = app[SUPERVISOR]
    for name, run in controller.watches().items():
        supervisor.start(name, run())
    if elector is not None:
        supervisor.start("leader-election", elector.run(controller.lead))
    else:
        supervisor.start("controller", controller.lead())
    try:
        yield
    finally:
        await supervisor.stop()
        if elector is not None:
            await elector.release()
        await recorder.close()
