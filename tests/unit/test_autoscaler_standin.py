"""The autoscaler stand-in without Kubernetes: stats over a real websocket into the deciders, ``/decisions``, pokes;
then the Kubernetes side against fakes: the tick, config-autoscaler, bad revisions and the scale writes.

No test waits on a timer: the clock is injected; the tests await :meth:`Autoscaler.wait_for` or the fake API's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devcluster.autoscaler_standin import Autoscaler, Options, StandIn, create_app, parse_args
from devcluster.kpa import Config, Decision
from localsched.kube import resources as r
from localsched.kube.client import Obj
from localsched.kube.errors import Conflict, NotFound
from localsched.kube.watching import Event
from localsched.stats import Stat, StatMessage, encode
from tests.unit.support import ClientFactory, Clock

NS = "demo"
NAME = "hello-00001"
KEY = f"{NS}/{NAME}"


def report(concurrency: float, name: str = NAME, pod: str = "activator-a") -> bytes:
    stat = Stat(pod_name=pod, average_concurrent_requests=concurrency, request_count=concurrency, timestamp=1)
    return encode([StatMessage(NS, name, stat)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def autoscaler(clock: Clock) -> Autoscaler:
    return Autoscaler(clock=clock)


# -- the stats side, over a real websocket ------------------------------------------------------------------------


async def test_a_stat_for_a_revision_at_zero_is_decided_at_once(
    aiohttp_client: ClientFactory, autoscaler: Autoscaler
) -> None:
    client = await aiohttp_client(create_app(autoscaler))
    async with client.ws_connect("/") as ws:
        await ws.send_bytes(report(1.0))
        decision = await autoscaler.wait_for(lambda a: a.decisions.get(KEY), timeout=5)
        assert (decision.desired, decision.current, decision.ready) == (1, 0, 0)
        shown = await (await client.get("/decisions")).json()
    assert (shown["activators"], shown["messages"], shown["stats"], shown["decode_errors"]) == (1, 1, 1, 0)
    revision = shown["revisions"][KEY]
    assert (revision["desired"], revision["current"], revision["ready"], revision["activators"]) == (1, 0, 0, 1)
    assert (revision["stable"], revision["panic"], revision["in_panic"]) == (1.0, 1.0, False)
    assert "stable 1" in revision["reason"]


async def test_garbage_is_counted_and_the_connection_carries_on(
    aiohttp_client: ClientFactory, autoscaler: Autoscaler
) -> None:
    client = await aiohttp_client(create_app(autoscaler))
    async with client.ws_connect("/") as ws:
        await ws.send_bytes(b"\xff\xff\xff not a WireStatMessages")
        await autoscaler.wait_for(lambda a: a.decode_errors == 1, timeout=5)
        await ws.send_str('{"namespace": "demo"}')
        await autoscaler.wait_for(lambda a: a.refused == 1, timeout=5)
        await ws.send_bytes(report(0.0))  # the same connection still delivers
        await autoscaler.wait_for(lambda a: a.stats == 1, timeout=5)
        assert not ws.closed
        shown = await (await client.get("/decisions")).json()
        metrics = await (await client.get("/metrics")).text()
    assert (shown["decode_errors"], shown["refused"], shown["messages"]) == (1, 1, 1)
    assert 'autoscaler_standin_messages_total{outcome="undecodable"} 1.0' in metrics
    assert 'autoscaler_standin_messages_total{outcome="refused"} 1.0' in metrics
    assert KEY not in shown["revisions"]  # a report of nothing pokes nobody


async def test_activators_that_disconnect_stop_counting_but_their_stats_stay(
    aiohttp_client: ClientFactory, autoscaler: Autoscaler
) -> None:
    client = await aiohttp_client(create_app(autoscaler))
    async with client.ws_connect("/") as first, client.ws_connect("/") as second:
        await first.send_bytes(report(2.0, pod="activator-a"))
        await second.send_bytes(report(3.0, pod="activator-b"))
        await autoscaler.wait_for(lambda a: a.stats == 2, timeout=5)
        assert autoscaler.activators_of(KEY) == 2
        await first.close()
        await autoscaler.wait_for(lambda a: len(a.connections) == 1, timeout=5)
    await autoscaler.wait_for(lambda a: not a.connections, timeout=5)
    decision = autoscaler.decide(KEY, current=1, ready=1)
    assert decision.stable == 5.0  # both stats of the second, summed as Knative's buckets do
    assert (await (await client.get("/decisions")).json())["activators"] == 0


async def test_health_and_a_plain_request_to_the_websocket(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app())
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200  # no Kubernetes: nothing to sync
    assert (await client.get("/")).status == 400


def test_a_poke_hands_a_change_to_the_writer_and_a_revision_with_pods_is_not_poked(autoscaler: Autoscaler) -> None:
    written: list[tuple[str, Decision]] = []
    autoscaler.on_decision = lambda key, decision: written.append((key, decision))
    scales = {KEY: (0, 0), f"{NS}/warm": (2, 2)}
    autoscaler.scale_of = scales.get
    assert autoscaler.receive(report(1.0) + report(1.0, name="warm")) == 2
    assert [(key, d.current, d.desired) for key, d in written] == [(KEY, 0, 1)]
    assert f"{NS}/warm" not in autoscaler.decisions  # decided at the next tick, not now


def test_the_command_line() -> None:
    options = parse_args(["--host", "127.0.0.1", "--port", "18080", "--tick-seconds", "0.5"])
    assert options == Options(host="127.0.0.1", port=18080, tick_seconds=0.5)
    with pytest.raises(SystemExit):
        parse_args(["--tick-seconds", "0"])


# -- the Kubernetes side, against fakes ---------------------------------------------------------------------------


def revision(name: str = NAME, annotations: dict[str, str] | None = None, rv: str = "1") -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"namespace": NS, "name": name, "uid": f"{name}-uid", "resourceVersion": rv,
                     "annotations": annotations or {}},
        "spec": {"containerConcurrency": 0, "containers": [{"image": "hello"}]},
    }  # fmt: skip


def deployment(name: str = NAME, replicas: int = 0, ready: int = 0) -> Obj:
    return {
        "metadata": {"namespace": NS, "name": f"{name}-deployment", "resourceVersion": "1"},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready} if ready else {},
    }


def configmap(data: dict[str, str]) -> Obj:
    return {"metadata": {"namespace": "knative-serving", "name": "config-autoscaler", "resourceVersion": "1"},
            "data": data}  # fmt: skip


class FakeAPI:
    """The scale subresource of Deployments: replicas and a resourceVersion per Deployment, optimistic writes; and
    lists (``listed``, by resource plural) whose watches stay silent."""

    def __init__(self) -> None:
        self.listed: dict[str, list[Obj]] = {}
        self.silent = asyncio.Event()  # never set
        self.replicas: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.writes: list[tuple[str, int]] = []
        self.written = asyncio.Event()
        self.fail: Exception | None = None

    async def list(self, resource: r.Resource, namespace: str | None = None, **selectors: Any) -> Obj:
        return {"metadata": {"resourceVersion": "1"}, "items": copy.deepcopy(self.listed.get(resource.plural, []))}

    async def watch(self, resource: r.Resource, namespace: str | None = None, **options: Any) -> AsyncIterator[Obj]:
        await self.silent.wait()
        yield {}  # pragma: no cover

    async def get_scale(self, resource: r.Resource, name: str, namespace: str) -> Obj:
        assert resource == r.DEPLOYMENTS
        if name not in self.replicas:
            raise NotFound("deployments not found", status=404)
        meta = {"name": name, "namespace": namespace, "resourceVersion": str(self.versions.setdefault(name, 1))}
        return {"kind": "Scale", "metadata": meta, "spec": {"replicas": self.replicas[name]}}

    async def replace_scale(self, resource: r.Resource, scale: Obj) -> Obj:
        name = scale["metadata"]["name"]
        if self.fail is not None:
            raise self.fail
        if scale["metadata"]["resourceVersion"] != str(self.versions[name]):
            raise Conflict("the object has been modified", status=409)
        self.replicas[name] = scale["spec"]["replicas"]
        self.versions[name] += 1
        self.writes.append((name, scale["spec"]["replicas"]))
        self.written.set()
        return scale


class Writes:
    """Stands in for :meth:`StandIn.apply_soon`: the decisions the tick wants written."""

    def __init__(self) -> None:
        self.wanted: list[tuple[str, int, int]] = []

    def __call__(self, key: str, decision: Decision) -> None:
        self.wanted.append((key, decision.current, decision.desired))


def standin_with(api: FakeAPI, autoscaler: Autoscaler, *objects: tuple[str, Obj]) -> StandIn:
    standin = StandIn(api, autoscaler)  # type: ignore[arg-type]
    for kind, obj in objects:
        observe(standin, kind, obj)
    return standin


def observe(standin: StandIn, kind: str, obj: Obj, event: Any = "ADDED") -> None:
    cache = {"revision": standin.revisions, "deployment": standin.deployments, "config": standin.configmap}[kind]
    cache._apply(Event(event, obj))


def test_the_tick_decides_every_revision_with_a_deployment_and_writes_only_changes(
    autoscaler: Autoscaler, clock: Clock
) -> None:
    standin = standin_with(
        FakeAPI(), autoscaler,
        ("revision", revision()), ("deployment", deployment(replicas=0)),
        ("revision", revision("pinned", {"autoscaling.knative.dev/min-scale": "2"})),
        ("deployment", deployment("pinned", replicas=0)),
        ("revision", revision("warm")), ("deployment", deployment("warm", replicas=1, ready=1)),
        ("revision", revision("no-deployment-yet")),
    )  # fmt: skip
    writes = Writes()
    standin.apply_soon = writes  # type: ignore[method-assign]
    autoscaler.receive(report(1.0, name="warm"))
    decisions = standin.tick()
    assert len(decisions) == 3
    assert writes.wanted == [(f"{NS}/pinned", 0, 2)]  # min-scale is honoured; a revision at zero stays there
    assert autoscaler.decisions[KEY].desired == 0
    assert autoscaler.decisions[f"{NS}/warm"].desired == 1
    assert f"{NS}/no-deployment-yet" not in autoscaler.decisions
    clock.now += 120  # the warm revision's stat is long gone: it waits out the grace (30 s), then goes to zero
    standin.tick()
    clock.now += 30
    standin.tick()
    assert writes.wanted[-1] == (f"{NS}/warm", 1, 0)


def test_a_revision_knative_would_reject_is_reported_and_skipped_until_fixed(autoscaler: Autoscaler) -> None:
    bad = revision(annotations={"autoscaling.knative.dev/window": "5s"})
    standin = standin_with(FakeAPI(), autoscaler, ("revision", bad), ("deployment", deployment(replicas=3, ready=3)))
    writes = Writes()
    standin.apply_soon = writes  # type: ignore[method-assign]
    assert standin.tick() == []
    assert "autoscaling.knative.dev/window" in autoscaler.snapshot()["revisions"][KEY]["error"]
    observe(standin, "revision", revision(rv="2"), "MODIFIED")
    assert [d.desired for d in standin.tick()] == [3]  # a decider for 3 pods starts in panic: no scale-down yet
    observe(standin, "revision", revision(rv="2"), "DELETED")
    assert KEY not in autoscaler.snapshot()["revisions"]


def test_a_revision_of_another_autoscaling_class_is_left_to_its_autoscaler(autoscaler: Autoscaler) -> None:
    keda = revision(annotations={"autoscaling.knative.dev/class": "keda.autoscaling.knative.dev"})
    standin = standin_with(FakeAPI(), autoscaler, ("revision", keda), ("deployment", deployment(replicas=3, ready=3)))
    writes = Writes()
    standin.apply_soon = writes  # type: ignore[method-assign]
    autoscaler.receive(report(0.0))
    assert standin.tick() == []
    assert writes.wanted == []
    assert "not the KPA's" in autoscaler.snapshot()["revisions"][KEY]["error"]
    kpa = revision(annotations={"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}, rv="2")
    observe(standin, "revision", kpa, "MODIFIED")
    assert [d.current for d in standin.tick()] == [3]


def test_config_autoscaler_is_applied_and_a_bad_one_keeps_the_last_good(autoscaler: Autoscaler) -> None:
    standin = standin_with(FakeAPI(), autoscaler, ("revision", revision()))
    observe(standin, "config", configmap({"stable-window": "6s", "scale-to-zero-grace-period": "10s"}))
    assert autoscaler.config.stable_window == 6
    assert autoscaler.specs[KEY].stable_window == 6  # the revisions are read again with it
    observe(standin, "config", configmap({"stable-window": "6 seconds"}), "MODIFIED")
    assert autoscaler.config.stable_window == 6
    assert "stable-window" in (autoscaler.snapshot()["config_error"] or "")
    observe(standin, "config", configmap({}), "DELETED")
    assert autoscaler.config == Config()
    assert autoscaler.config_error is None


def test_a_zero_initial_scale_annotation_needs_the_configs_permission(autoscaler: Autoscaler) -> None:
    zero = revision(annotations={"autoscaling.knative.dev/initial-scale": "0"})
    standin = standin_with(FakeAPI(), autoscaler, ("revision", zero))
    assert KEY in autoscaler.errors
    observe(standin, "config", configmap({"initial-scale": "0", "allow-zero-initial-scale": "true"}))
    assert KEY not in autoscaler.errors
    assert autoscaler.specs[KEY].initial_scale == 0


async def test_a_write_uses_the_version_it_read_and_gives_way_to_a_change(autoscaler: Autoscaler) -> None:
    api = FakeAPI()
    standin = standin_with(api, autoscaler)
    api.replicas["hello-00001-deployment"] = 0
    up = Decision(desired=1, current=0, ready=0, stable=1.0, panic=1.0, in_panic=False, reason="poked")
    assert await standin.apply(KEY, up) == "scaled"
    assert api.writes == [("hello-00001-deployment", 1)]
    assert await standin.apply(KEY, up) == "moved"  # the replicas are no longer those the decision saw
    api.fail = Conflict("the object has been modified", status=409)
    down = Decision(desired=0, current=1, ready=1, stable=0.0, panic=0.0, in_panic=False, reason="idle")
    assert await standin.apply(KEY, down) == "conflict"
    assert await standin.apply(f"{NS}/gone", up) == "failed"
    assert api.writes == [("hello-00001-deployment", 1)]


async def test_a_stat_over_the_websocket_scales_a_revision_from_zero_through_the_api(
    aiohttp_client: ClientFactory, autoscaler: Autoscaler
) -> None:
    api = FakeAPI()
    api.replicas["hello-00001-deployment"] = 0
    standin_with(api, autoscaler, ("revision", revision()), ("deployment", deployment(replicas=0)))
    client = await aiohttp_client(create_app(autoscaler))
    async with client.ws_connect("/") as ws:
        await ws.send_bytes(report(1.0))
        await asyncio.wait_for(api.written.wait(), 5)
    assert api.writes == [("hello-00001-deployment", 1)]


async def test_the_standin_syncs_its_watches_then_ticks_and_writes(autoscaler: Autoscaler) -> None:
    api = FakeAPI()
    pinned = revision(annotations={"autoscaling.knative.dev/min-scale": "1"})
    api.listed = {"revisions": [pinned], "deployments": [deployment(replicas=0)]}  # no config-autoscaler: defaults
    api.replicas["hello-00001-deployment"] = 0
    standin = StandIn(api, autoscaler, tick_seconds=3600)  # type: ignore[arg-type]
    running = asyncio.create_task(standin.run())
    try:
        await asyncio.wait_for(api.written.wait(), 5)  # the first tick comes as soon as the caches are synced
        assert standin.synced()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert api.writes == [("hello-00001-deployment", 1)]
    assert autoscaler.config == Config()
    assert "min-scale 1" in autoscaler.decisions[KEY].reason
