"""TEST SCAFFOLDING — a stand-in for Knative Serving's autoscaler (the KPA), which cannot run on the devcluster.

Every activator opens a websocket to this process's root URL (as Knative's activator dials the autoscaler
Service) and sends, once a second and at once when a revision needs a scale from zero, one binary message: a
serialized ``WireStatMessages`` (``localsched.stats``). The stand-in

* records each stat in its revision's decider (``devcluster.kpa``), at the time it arrives;
* decides every revision every tick (2 s, as Knative's autoscaler), and at once when a stat with requests arrives
  for a revision at zero (Knative's "poke");
* writes the decision to the scale subresource of the revision's Deployment (``{rev}-deployment``, made by the
  revision stand-in), with the resourceVersion it read: a conflict, or replicas that moved since the decision
  (an activator's claim), leaves it to the next tick to decide again.

It reads Revisions, their Deployments and ``config-autoscaler`` in ``knative-serving`` from watch caches
(a missing ConfigMap means Knative's defaults; an invalid one is logged and the last valid one kept). A Revision
whose annotations Knative would reject is logged and left alone. ``/decisions`` shows every revision's last
decision, and ``/healthz``, ``/readyz`` and ``/metrics`` the process. docs/autoscaler-standin.md says what is
modelled from Knative and what is not.

The app is split so that the stats side runs without Kubernetes: :class:`Autoscaler` (stats in, decisions out) is
all the websocket needs; :class:`StandIn` adds the watches, the tick and the writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from devcluster.kpa import Config, Decider, DeciderSpec, Decision, should_poke, stat_value
from localsched import knative
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Conflict, KubeError, NotFound
from localsched.kube.watching import Event, WatchCache, key_of
from localsched.stats import StatMessage, WireFormatError, decode
from localsched.tasks import Supervisor, TaskSet

CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KPA_CLASS = "kpa.autoscaling.knative.dev"  # the default class; Knative's KPA reconciles only its own

log = logging.getLogger("autoscaler-standin")

T = TypeVar("T")
Clock = Callable[[], float]
ScaleOf = Callable[[str], "tuple[int, int] | None"]  # revision key -> (Deployment replicas, ready replicas)

KNATIVE_NAMESPACE = "knative-serving"
TICK_SECONDS = 2.0  # Knative's autoscaler tickInterval
HEARTBEAT_SECONDS = 10.0  # a hung activator's websocket is closed after missing a pong


@dataclass(frozen=True)
class Metrics:
    messages: Counter  # outcome: recorded, undecodable, refused
    stats: Counter
    connections: Gauge
    desired: Gauge  # namespace, revision
    panic: Gauge  # namespace, revision
    scale_writes: Counter  # result: scaled, conflict, moved, failed

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        rev = ["namespace", "revision"]
        return cls(
            messages=Counter("autoscaler_standin_messages_total",
                             "Websocket messages from activators, by outcome: recorded, undecodable (not a "
                             "WireStatMessages), refused (text, or a stat without a revision).",
                             ["outcome"], registry=registry),
            stats=Counter("autoscaler_standin_stats_total", "Stats recorded into a revision's decider.",
                          registry=registry),
            connections=Gauge("autoscaler_standin_activator_connections", "Activator websockets open now.",
                              registry=registry),
            desired=Gauge("autoscaler_standin_desired_pods", "The revision's last decided replicas.", rev,
                          registry=registry),
            panic=Gauge("autoscaler_standin_panic_mode", "1 while the revision's decider is in panic mode.", rev,
                        registry=registry),
            scale_writes=Counter("autoscaler_standin_scale_writes_total",
                                 "Deployment scale writes, by result: scaled, conflict (409), moved (the replicas "
                                 "changed since the decision), failed.", ["result"], registry=registry),
        )  # fmt: skip


class Connection:
    """One activator's websocket: where from, and which revisions it has reported."""

    __slots__ = ("messages", "peer", "revisions")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.revisions: set[str] = set()
        self.messages = 0


def _no_scale(key: str) -> tuple[int, int] | None:
    return None


class Autoscaler:
    """Knative's autoscaler without Kubernetes: the stat collector (a decider per revision, fed by the
    activators' websockets) and the multiscaler's decisions, pokes included.

    What it knows of Kubernetes it is told: revisions' specs (:meth:`set_spec`), config-autoscaler
    (:meth:`set_config`), and through ``scale_of`` a revision's Deployment replicas and ready pods. A poke's
    decision that changes the replicas is handed to ``on_decision`` (the :class:`StandIn` writes it). ``clock`` is
    injectable, and every change wakes :meth:`wait_for`, so tests neither sleep nor poll.
    """

    def __init__(
        self, config: Config | None = None, *, clock: Clock = time.monotonic, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config or Config()
        self.config_error: str | None = None
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics.create(self.registry)
        self.deciders: dict[str, Decider] = {}
        self.specs: dict[str, DeciderSpec] = {}  # from the revisions; others are decided with the config's spec
        self.errors: dict[str, str] = {}  # revision key -> why its Revision is not autoscaled
        self.decisions: dict[str, Decision] = {}
        self.connections: set[Connection] = set()
        self.messages = 0
        self.stats = 0
        self.decode_errors = 0
        self.refused = 0
        self.scale_of: ScaleOf = _no_scale
        self.on_decision: Callable[[str, Decision], None] | None = None
        self._default_spec = DeciderSpec.from_config(self.config)
        self._changed = asyncio.Event()

    # -- what Kubernetes says ----------------------------------------------------------------------------------

    def set_config(self, config: Config) -> None:
        """A new config-autoscaler: revisions without a spec of their own are decided with it from now on."""
        self.config = config
        self._default_spec = DeciderSpec.from_config(config)
        for key, decider in self.deciders.items():
            if key not in self.specs:
                decider.update(self._default_spec)
        self._notify()

    def set_spec(self, key: str, spec: DeciderSpec) -> None:
        self.specs[key] = spec
        self.errors.pop(key, None)
        decider = self.deciders.get(key)
        if decider is not None:
            decider.update(spec)
        self._notify()

    def set_error(self, key: str, error: str) -> None:
        """The revision cannot be parsed: it is not decided until it can be."""
        self.errors[key] = error
        self.specs.pop(key, None)
        self._notify()

    def forget(self, key: str) -> None:
        """A deleted revision: its history, spec and last decision go."""
        self.deciders.pop(key, None)
        self.specs.pop(key, None)
        self.errors.pop(key, None)
        self.decisions.pop(key, None)
        namespace, _, name = key.partition("/")
        for gauge in (self.metrics.desired, self.metrics.panic):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        self._notify()

    def prune(self, known: Collection[str]) -> None:
        """Forget the deciders of keys that are not known revisions once their stats have aged out."""
        for key in [k for k, decider in self.deciders.items() if k not in known and decider.idle]:
            self.forget(key)

    # -- the activators' websockets ------------------------------------------------------------------------------

    def connect(self, peer: str) -> Connection:
        connection = Connection(peer)
        self.connections.add(connection)
        self.metrics.connections.set(len(self.connections))
        log.info("activator %s connected (%d connected)", peer, len(self.connections))
        self._notify()
        return connection

    def disconnect(self, connection: Connection) -> None:
        """The activator's stats stay in the windows until they age out; it simply stops adding to them."""
        self.connections.discard(connection)
        self.metrics.connections.set(len(self.connections))
        log.info("activator %s disconnected after %d messages", connection.peer, connection.messages)
        self._notify()

    def receive(self, data: bytes, connection: Connection | None = None) -> int:
        """One binary websocket message: record its stats and return how many. Bytes that are not a
        ``WireStatMessages`` are logged and counted, and the connection carries on (as Knative's stat server)."""
        peer = connection.peer if connection is not None else "?"
        try:
            messages = decode(data)
        except WireFormatError as exc:
            self.decode_errors += 1
            self.metrics.messages.labels("undecodable").inc()
            log.warning("activator %s: dropping a message: %s", peer, exc)
            self._notify()
            return 0
        self.messages += 1
        self.metrics.messages.labels("recorded").inc()
        if connection is not None:
            connection.messages += 1
        recorded = sum(self.record(message, connection) for message in messages)
        self._notify()
        return recorded

    def refuse(self, connection: Connection | None, what: str) -> None:
        """A message that is not a stat report (a text frame): logged, counted, and the connection stays open."""
        self.refused += 1
        self.metrics.messages.labels("refused").inc()
        log.warning("activator %s: refusing %s", connection.peer if connection is not None else "?", what)
        self._notify()

    def record(self, message: StatMessage, connection: Connection | None = None) -> bool:
        """Record one stat at the time it arrives (its own timestamp is the activator's clock, not ours); poke
        the revision's decider if the stat says "requests" and the revision is at zero."""
        if not message.namespace or not message.name:
            self.refuse(connection, f"a stat without a revision ({message.namespace!r}/{message.name!r})")
            return False
        key = message.key
        decider = self.decider(key)
        decider.record(self.clock(), stat_value(message.stat))
        self.stats += 1
        self.metrics.stats.inc()
        if connection is not None:
            connection.revisions.add(key)
        if should_poke(message.stat, self._current_scale(key, decider)):
            self.poke(key)
        return True

    def _current_scale(self, key: str, decider: Decider) -> int:
        """The Deployment's replicas, else the last decision's, else 0 (a revision never decided)."""
        scale = self.scale_of(key)
        if scale is not None:
            return scale[0]
        return decider.last.desired if decider.last is not None else 0

    # -- deciding ----------------------------------------------------------------------------------------------

    def decider(self, key: str, *, ready_pods: int = 0) -> Decider:
        decider = self.deciders.get(key)
        if decider is None:
            spec = self.specs.get(key, self._default_spec)
            decider = self.deciders[key] = Decider(spec, now=self.clock(), ready_pods=ready_pods)
        return decider

    def decide(self, key: str, *, current: int, ready: int) -> Decision:
        """Decide ``key`` now, given its Deployment's replicas and ready pods; the decision is kept for
        ``/decisions``."""
        decision = self.decider(key, ready_pods=ready).decide(self.clock(), ready, current)
        self.decisions[key] = decision
        namespace, _, name = key.partition("/")
        self.metrics.desired.labels(namespace, name).set(decision.desired)
        self.metrics.panic.labels(namespace, name).set(1 if decision.in_panic else 0)
        self._notify()
        return decision

    def poke(self, key: str) -> Decision:
        """Decide at once (a stat with requests for a revision at zero) and hand a change to ``on_decision``."""
        decider = self.decider(key)
        scale = self.scale_of(key)
        current, ready = scale if scale is not None else (self._current_scale(key, decider), 0)
        decision = self.decide(key, current=current, ready=ready)
        log.info("revision %s: poked at zero: %d -> %d (%s)", key, current, decision.desired, decision.reason)
        if decision.desired != decision.current and self.on_decision is not None:
            self.on_decision(key, decision)
        return decision

    # -- reading -------------------------------------------------------------------------------------------------

    def activators_of(self, key: str) -> int:
        """The open activator websockets that have reported ``key``."""
        return sum(1 for connection in self.connections if key in connection.revisions)

    def snapshot(self) -> dict[str, Any]:
        """What ``/decisions`` serves: the counters, and per revision key its last decision (or why none)."""
        revisions: dict[str, Any] = {}
        for key, decision in sorted(self.decisions.items()):
            revisions[key] = {**decision.as_dict(), "activators": self.activators_of(key)}
        for key, error in sorted(self.errors.items()):
            revisions[key] = {"error": error, "activators": self.activators_of(key)}
        return {
            "activators": len(self.connections),
            "messages": self.messages,
            "stats": self.stats,
            "decode_errors": self.decode_errors,
            "refused": self.refused,
            "config_error": self.config_error,
            "revisions": revisions,
        }

    async def wait_for(self, predicate: Callable[[Autoscaler], T | None], timeout: float) -> T:
        """Wait until ``predicate(self)`` returns something truthy, re-checked on every change; return it.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                value = predicate(self)
                if value:
                    return value
                await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def revision_key(obj: Obj) -> str:
    namespace, name = key_of(obj)
    return f"{namespace}/{name}"


def deployment_scale(deployment: Obj) -> tuple[int, int]:
    """(replicas, ready replicas) of a Deployment; absent replicas mean 1, as in Kubernetes and Knative's scaler."""
    replicas = deployment.get("spec", {}).get("replicas")
    ready = deployment.get("status", {}).get("readyReplicas") or 0
    return (1 if replicas is None else int(replicas)), int(ready)


class StandIn:
    """The Kubernetes side: watch caches for config-autoscaler, Revisions and their Deployments, the tick that
    decides every revision, and the scale writes (one at a time per revision)."""

    def __init__(
        self,
        client: KubeClient,
        autoscaler: Autoscaler,
        *,
        tick_seconds: float = TICK_SECONDS,
        knative_namespace: str = KNATIVE_NAMESPACE,
    ) -> None:
        self.client = client
        self.autoscaler = autoscaler
        self.tick_seconds = tick_seconds
        self.configmap = WatchCache(client, r.CONFIGMAPS, namespace=knative_namespace, name="config-autoscaler",
                                    field_selector=f"metadata.name={knative.AUTOSCALER_CONFIGMAP}")  # fmt: skip
        self.revisions = WatchCache(client, r.REVISIONS, name="revisions")
        # Knative's Deployments (and the revision stand-in's) carry the revision label: only those are watched.
        self.deployments = WatchCache(client, r.DEPLOYMENTS, label_selector=knative.REVISION_LABEL, name="deployments")
        self.configmap.add_handler(self._on_config)
        self.revisions.add_handler(self._on_revision)
        self.writes = TaskSet("autoscaler-standin")
        self._writing: set[str] = set()
        autoscaler.scale_of = self.scale_of
        autoscaler.on_decision = self.apply_soon

    def synced(self) -> bool:
        return all(cache.synced.is_set() for cache in (self.configmap, self.revisions, self.deployments))

    # -- watches ---------------------------------------------------------------------------------------------------

    def _on_config(self, event: Event) -> None:
        data = None if event.type == "DELETED" else event.obj.get("data")
        try:
            config = Config.from_configmap(data)
        except knative.AutoscalerConfigError as exc:
            self.autoscaler.config_error = f"config-autoscaler: {exc}; keeping the last valid configuration"
            log.error("%s", self.autoscaler.config_error)
            return
        self.autoscaler.config_error = None
        if config != self.autoscaler.config:
            log.info("config-autoscaler: %s", "deleted: Knative's defaults" if data is None else config)
        self.autoscaler.set_config(config)
        for revision in self.revisions:
            self._read_revision(revision)

    def _on_revision(self, event: Event) -> None:
        if event.type == "DELETED":
            self.autoscaler.forget(revision_key(event.obj))
        else:
            self._read_revision(event.obj)

    def _read_revision(self, revision: Obj) -> None:
        key = revision_key(revision)
        annotations = revision["metadata"].get("annotations") or {}
        autoscaler_class = annotations.get(CLASS_ANNOTATION, KPA_CLASS)
        if autoscaler_class != KPA_CLASS:  # another autoscaler owns it (KEDA, the HPA): hands off, as Knative's KPA
            if key in self.autoscaler.specs or key not in self.autoscaler.errors:
                log.info("revision %s: class %s, not autoscaled here", key, autoscaler_class)
            self.autoscaler.forget(key)
            self.autoscaler.set_error(key, f"autoscaling class {autoscaler_class}: not the KPA's")
            return
        try:
            spec = DeciderSpec.from_revision(revision, self.autoscaler.config)
        except ValueError as exc:  # RevisionSpecError, and any other value Knative's webhook would refuse
            if self.autoscaler.errors.get(key) != str(exc):
                log.warning("revision %s: %s; not autoscaling it", key, exc)
            self.autoscaler.set_error(key, str(exc))
            return
        self.autoscaler.set_spec(key, spec)

    def scale_of(self, key: str) -> tuple[int, int] | None:
        """(replicas, ready replicas) of the revision's Deployment in the cache, None before it exists."""
        namespace, _, name = key.partition("/")
        deployment = self.deployments.get(knative.deployment_name(name), namespace)
        return None if deployment is None else deployment_scale(deployment)

    # -- the tick ----------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch (config-autoscaler first, so that revisions are read with it), then decide every tick. A watch
        or the tick ending ends this (the supervisor then fails ``/healthz``)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.configmap.run(), name="watch:config-autoscaler")
                await self.configmap.synced.wait()
                group.create_task(self.revisions.run(), name="watch:revisions")
                group.create_task(self.deployments.run(), name="watch:deployments")
                await self.revisions.synced.wait()
                await self.deployments.synced.wait()
                log.info("caches synced: %d revisions; deciding every %gs", len(self.revisions), self.tick_seconds)
                group.create_task(self._tick_forever(), name="tick")
        finally:
            await self.writes.close()

    async def _tick_forever(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.tick_seconds)

    def tick(self) -> list[Decision]:
        """Decide every autoscaled revision with a Deployment once; start the writes of those that change."""
        decisions = []
        known = set()
        for revision in self.revisions:
            key = revision_key(revision)
            known.add(key)
            scale = self.scale_of(key)
            if key not in self.autoscaler.specs or scale is None:
                continue  # not parsable (logged), or no Deployment yet
            current, ready = scale
            decision = self.autoscaler.decide(key, current=current, ready=ready)
            decisions.append(decision)
            if decision.desired != current:
                self.apply_soon(key, decision)
        self.autoscaler.prune(known)
        return decisions

    def apply_soon(self, key: str, decision: Decision) -> None:
        """Write ``decision`` in the background, unless a write for ``key`` is under way (the next tick decides
        again with what it did)."""
        if key in self._writing:
            return
        self._writing.add(key)
        task = self.writes.spawn(self.apply(key, decision), name=f"scale:{key}")
        task.add_done_callback(lambda _: self._writing.discard(key))

    async def apply(self, key: str, decision: Decision) -> str:
        """Set the Deployment's scale to the decision, with the resourceVersion read; return the result.

        ``moved``: the replicas are no longer those the decision was made with (an activator claimed a replica,
        or the cache was behind), so the decision is stale and the next tick makes a fresh one; ``conflict``: the
        same, found out by the API server (409).
        """
        namespace, _, name = key.partition("/")
        deployment = knative.deployment_name(name)
        try:
            scale = await self.client.get_scale(r.DEPLOYMENTS, deployment, namespace)
            replicas = int(scale.get("spec", {}).get("replicas") or 0)
            if replicas != decision.current:
                result = "moved"
                log.info("revision %s: replicas moved to %d since the decision (from %d); deciding again next tick",
                         key, replicas, decision.current)  # fmt: skip
            else:
                scale.setdefault("spec", {})["replicas"] = decision.desired
                await self.client.replace_scale(r.DEPLOYMENTS, scale)
                result = "scaled"
                log.info("revision %s: scaled %d -> %d: %s", key, decision.current, decision.desired, decision.reason)
        except Conflict:
            result = "conflict"
            log.info("revision %s: the scale changed while writing it (409); deciding again next tick", key)
        except NotFound:
            result = "failed"
            log.info("revision %s: Deployment %s/%s is gone", key, namespace, deployment)
        except KubeError as exc:
            result = "failed"
            log.warning("revision %s: scaling to %d failed: %s", key, decision.desired, exc)
        self.autoscaler.metrics.scale_writes.labels(result).inc()
        return result


# -- the app ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The command line (see :func:`parse_args`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tick_seconds: float = TICK_SECONDS
    knative_namespace: str = KNATIVE_NAMESPACE
    kubeconfig: str | None = None
    log_level: str = "INFO"


AUTOSCALER = web.AppKey("autoscaler", Autoscaler)
OPTIONS = web.AppKey("options", Options)
STANDIN = web.AppKey("standin", StandIn)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])


def create_app(autoscaler: Autoscaler | None = None, *, kubernetes: Options | None = None) -> web.Application:
    """The stand-in's app. Without ``kubernetes`` it is the stats side only (the websocket, ``/decisions``): what
    the unit tests run. With it, a cleanup context connects to the API server and runs the :class:`StandIn`."""
    app = web.Application()
    app[AUTOSCALER] = autoscaler if autoscaler is not None else Autoscaler()
    app[SUPERVISOR] = Supervisor()
    app[SOCKETS] = set()
    app.router.add_get("/", stats_socket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/decisions", decisions)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(close_sockets)
    if kubernetes is not None:
        app[OPTIONS] = kubernetes
        app.cleanup_ctx.append(running_standin)
    return app


async def stats_socket(request: web.Request) -> web.StreamResponse:
    """An activator's stat stream: binary ``WireStatMessages`` only; anything else is counted, not fatal."""
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text="the autoscaler's stat websocket: connect with a websocket\n")
    await ws.prepare(request)
    autoscaler = request.app[AUTOSCALER]
    request.app[SOCKETS].add(ws)
    connection = autoscaler.connect(request.remote or "unknown")
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                autoscaler.receive(message.data, connection)
            elif message.type == WSMsgType.TEXT:
                autoscaler.refuse(connection, "a text message (stats are binary WireStatMessages)")
            elif message.type == WSMsgType.ERROR:
                log.warning("activator %s: websocket error: %s", connection.peer, ws.exception())
    finally:
        request.app[SOCKETS].discard(ws)
        autoscaler.disconnect(connection)
    return ws


async def healthz(request: web.Request) -> web.Response:
    status, text = request.app[SUPERVISOR].health()
    return web.Response(status=status, text=text)


async def readyz(request: web.Request) -> web.Response:
    """Ready once the watch caches are synced (at once without Kubernetes)."""
    if request.app[SUPERVISOR].failed:
        return await healthz(request)
    standin = request.app.get(STANDIN)
    if OPTIONS in request.app and (standin is None or not standin.synced()):
        return web.Response(status=503, text="watch caches are not synced yet\n")
    return web.Response(text="ok\n")


async def decisions(request: web.Request) -> web.Response:
    return web.json_response(request.app[AUTOSCALER].snapshot())


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[AUTOSCALER].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def close_sockets(app: web.Application) -> None:
    """Close the activators' websockets on shutdown, so that they reconnect to the next instance at once."""
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"autoscaler shutting down")


async def running_standin(app: web.Application) -> AsyncIterator[None]:
    options = app[OPTIONS]
    client = await KubeClient.from_environment(options.kubeconfig, user_agent="autoscaler-standin")
    standin = StandIn(client, app[AUTOSCALER], tick_seconds=options.tick_seconds,
                      knative_namespace=options.knative_namespace)  # fmt: skip
    app[STANDIN] = standin
    supervisor = app[SUPERVISOR]
    supervisor.start("standin", standin.run())
    try:
        yield
    finally:
        await supervisor.stop()
        await client.close()


# -- the command line -----------------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port 0..65535, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="localsched-autoscaler-standin",
        description="TEST SCAFFOLDING: a stand-in for Knative's autoscaler (KPA) on the devcluster. Activators "
        "send stats to ws://HOST:PORT/; /decisions shows each revision's last decision.",
    )
    parser.add_argument("--host", default=Options.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=_port, default=Options.port,
                        help="port for the stat websocket (/), /healthz, /readyz, /decisions and /metrics "
                             "(default %(default)s, as Knative's autoscaler Service)")  # fmt: skip
    parser.add_argument("--tick-seconds", type=_positive, default=Options.tick_seconds,
                        help="how often every revision is decided (default %(default)s, as Knative)")  # fmt: skip
    parser.add_argument("--knative-namespace", default=Options.knative_namespace,
                        help="namespace of the config-autoscaler ConfigMap (default %(default)s)")  # fmt: skip
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    parser.add_argument("--log-level", default=Options.log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    return Options(host=args.host, port=args.port, tick_seconds=args.tick_seconds,
                   knative_namespace=args.knative_namespace, kubeconfig=args.kubeconfig,
                   log_level=args.log_level)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    log.info("listening on %s:%d, deciding every %gs", options.host, options.port, options.tick_seconds)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(create_app(kubernetes=options), host=options.host, port=options.port, access_log=None,
                    print=None, shutdown_timeout=5)  # fmt: skip


if __name__ == "__main__":
    main()
