"""The simulated kubelet's clockwork: timing presets, the PLEG relister, the status manager and the object cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, cast

import pytest

from devcluster import kubelet
from devcluster.kubelet import Key, ObjectCache, Relister, StatusManager, Timing
from localsched.kube import resources as r
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj
from localsched.kube.errors import KubeError, ServerError

DEADLINE = 2.0  # how long a test waits for something that should happen within a few event loop turns
NS = "default"
P, Q = (NS, "pod-p"), (NS, "pod-q")
INSTANT = Timing.instant()
STATUS_PATCH = {"subresource": "status", "content_type": STRATEGIC_PATCH}


@pytest.mark.parametrize(
    ("name", "relist", "expected", "described"),
    [
        pytest.param("realistic", None, Timing(), "relist every 1s", id="realistic-is-the-default"),
        pytest.param("instant", None, INSTANT, "container events reported at once", id="instant"),
        pytest.param("realistic", 0.25, Timing(relist_seconds=0.25), "relist every 0.25s", id="relist-override"),
        pytest.param("instant", 0.5, replace(INSTANT, relist_seconds=0.5), "relist every 0.5s", id="instant-override"),
    ],
)
def test_timing_named_is_the_preset_with_its_relist_period_and_says_so(
    name: str, relist: float | None, expected: Timing, described: str
) -> None:
    timing = Timing.named(name, relist)
    assert timing == expected
    assert described in timing.describe()


@pytest.mark.parametrize(
    ("name", "relist", "named_value"),
    [pytest.param("realistic", -1.0, "-1.0", id="negative-relist"), pytest.param("fast", None, "'fast'", id="unknown")],
)
def test_timing_named_rejects_a_bad_value_naming_it(name: str, relist: float | None, named_value: str) -> None:
    with pytest.raises(ValueError, match=named_value):
        Timing.named(name, relist)


def relister(period: float, *changed: Key) -> tuple[Relister, list[list[Key]]]:
    """A relister whose ``observe`` always finds ``changed``; and the list of what ``on_events`` received."""
    received: list[list[Key]] = []
    return Relister(period, lambda: changed, lambda keys: received.append(list(keys))), received


@pytest.mark.parametrize(
    ("period", "at_once"), [pytest.param(0, 1, id="period-zero-at-once"), pytest.param(1.0, 0, id="period-waits")]
)
async def test_a_change_relists_at_once_only_with_period_zero(period: float, at_once: int) -> None:
    pleg, received = relister(period, P, Q)
    pleg.changed()
    assert (pleg.relists, received) == (at_once, [[P, Q]] * at_once)
    pleg.relist()
    assert (pleg.relists, received) == (at_once + 1, [[P, Q]] * (at_once + 1))


@pytest.mark.parametrize(
    ("period", "relist_first"),
    [pytest.param(1.0, True, id="relisted-since-the-moment"), pytest.param(0, False, id="period-zero-never-waits")],
)
async def test_newer_than_returns_without_waiting(period: float, relist_first: bool) -> None:
    pleg, _ = relister(period)
    moment = pleg.last_relist
    if relist_first:
        pleg.relist()
    waiting = pleg.newer_than(moment)
    with pytest.raises(StopIteration):  # finished on its first step: it never suspended
        waiting.send(None)


async def test_newer_than_waits_for_the_next_relist_when_none_came_after_the_moment() -> None:
    pleg, _ = relister(1.0)
    waiter = asyncio.create_task(pleg.newer_than(pleg.last_relist))
    for _ in range(5):
        await asyncio.sleep(0)  # a few event loop turns, not a timed wait; noqa: sleep-ok
    assert not waiter.done()
    pleg.relist()
    await asyncio.wait_for(waiter, DEADLINE)


class FakeApi:
    """Just enough of KubeClient: records GETs and PATCHes (of pod status), fails PATCHes on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (verb, name)
        self.patches: list[tuple[str, Obj]] = []  # (pod name, body) of the PATCHes that succeeded
        self.uids: dict[str, str] = {}  # pod name -> uid the API holds (default: "uid-" + name)
        self.failures: dict[str, list[KubeError]] = {}  # pod name -> errors for its next PATCHes
        self.changed = asyncio.Condition()

    async def get(self, resource: r.Resource, name: str, namespace: str) -> Obj:
        await self._record("GET", name)
        return {"metadata": {"name": name, "namespace": namespace, "uid": self.uids.get(name, f"uid-{name}")}}

    async def patch(self, resource: r.Resource, name: str, body: Obj, namespace: str, **options: Any) -> Obj:
        assert (resource, namespace, options) == (r.PODS, NS, STATUS_PATCH)
        if self.failures.get(name):
            await self._record("PATCH", name)
            raise self.failures[name].pop(0)
        self.patches.append((name, body))
        await self._record("PATCH", name)
        return body

    async def _record(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        async with self.changed:
            self.changed.notify_all()

    def phases(self, name: str) -> list[str]:
        return [body["status"]["phase"] for pod, body in self.patches if pod == name]

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE), self.changed:
            await self.changed.wait_for(predicate)


@contextlib.asynccontextmanager
async def running(timing: Timing) -> AsyncIterator[tuple[StatusManager, FakeApi]]:
    api = FakeApi()
    manager = StatusManager(cast(KubeClient, api), timing)
    sender = asyncio.create_task(manager.run(), name="status-sender")
    try:
        yield manager, api
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


def set_phase(manager: StatusManager, key: Key, phase: str) -> None:
    manager.set(key[0], key[1], f"uid-{key[1]}", {"phase": phase})


async def flush(manager: StatusManager, api: FakeApi) -> None:
    """Queue a status for pod Q and wait for its write: what was queued before it has been handled by then."""
    before = len(api.phases("pod-q"))
    set_phase(manager, Q, f"marker-{before}")
    await api.until(lambda: len(api.phases("pod-q")) > before)


@pytest.mark.parametrize(
    ("timing", "calls"),
    [
        pytest.param(Timing(), [("GET", "pod-p"), ("PATCH", "pod-p")], id="realistic-reads-then-patches"),
        pytest.param(INSTANT, [("PATCH", "pod-p")], id="instant-patches-without-reading"),
    ],
)
async def test_each_send_makes_the_calls_the_timing_says(timing: Timing, calls: list[tuple[str, str]]) -> None:
    async with running(timing) as (manager, api):
        set_phase(manager, P, "Pending")
        await api.until(lambda: len(api.patches) == 1)
        set_phase(manager, P, "Running")
        await api.until(lambda: len(api.patches) == 2)
    assert api.calls == calls * 2
    assert api.patches[1] == ("pod-p", {"metadata": {"uid": "uid-pod-p"}, "status": {"phase": "Running"}})
    assert (manager.writes, manager.last_sent(P)) == (2, {"phase": "Running"})


async def test_only_the_latest_status_is_sent_and_only_when_it_changed() -> None:
    async with running(Timing()) as (manager, api):
        for phase in ("Pending", "Running", "Succeeded"):  # all set before the sender runs
            set_phase(manager, P, phase)
        await flush(manager, api)
        set_phase(manager, P, "Succeeded")
        await flush(manager, api)
    assert api.phases("pod-p") == ["Succeeded"]


async def test_a_failed_write_holds_up_no_other_pod_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubelet, "RETRY_SECONDS", 0.01)
    async with running(Timing()) as (manager, api):
        api.failures["pod-p"] = [ServerError("etcd leader changed")]
        set_phase(manager, P, "Running")
        await flush(manager, api)
        assert (api.phases("pod-p"), api.calls.count(("PATCH", "pod-p"))) == ([], 1)
        await api.until(lambda: api.phases("pod-p") == ["Running"])


async def test_a_late_retry_does_not_overwrite_a_newer_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet's syncBatch always sends a pod's latest status; a retry must never send an older one."""
    held: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()  # the retry timer's calls, to make by hand
    async with running(Timing()) as (manager, api):
        real_retry = manager._retry
        monkeypatch.setattr(manager, "_retry", lambda *args: held.put_nowait(args))
        monkeypatch.setattr(kubelet, "RETRY_SECONDS", 0.01)
        api.failures["pod-p"] = [ServerError("etcd leader changed")]
        set_phase(manager, P, "Pending")
        await api.until(lambda: ("PATCH", "pod-p") in api.calls)
        set_phase(manager, P, "Running")
        await api.until(lambda: api.phases("pod-p") == ["Running"])
        real_retry(*await asyncio.wait_for(held.get(), DEADLINE))  # fires after the newer write, as 0.5 s later may
        await flush(manager, api)
    assert api.phases("pod-p")[-1] == "Running"
    assert manager.last_sent(P) == {"phase": "Running"}


async def test_a_pod_of_another_uid_under_the_same_name_is_not_written() -> None:
    async with running(Timing()) as (manager, api):
        api.uids["pod-p"] = "uid-of-a-newer-pod"
        set_phase(manager, P, "Running")
        await flush(manager, api)
    assert (("GET", "pod-p") in api.calls, ("PATCH", "pod-p") in api.calls) == (True, False)
    assert manager.last_sent(P) is None


@pytest.mark.parametrize(
    "seconds", [pytest.param(0.0, id="reconcile-at-once"), pytest.param(0.01, id="periodic-reconcile")]
)
async def test_reconcile_sends_the_last_status_again(seconds: float) -> None:
    async with running(Timing(status_reconcile_seconds=seconds)) as (manager, api):
        set_phase(manager, P, "Running")
        await api.until(lambda: len(api.patches) == 1)
        manager.reconcile(P)
        manager.reconcile(Q)  # never sent: nothing to reconcile
        await api.until(lambda: len(api.patches) == 2)
    assert (api.phases("pod-p"), api.phases("pod-q")) == (["Running", "Running"], [])


async def test_concurrent_gets_of_one_object_make_one_call() -> None:
    api = FakeApi()
    cache = ObjectCache(cast(KubeClient, api))
    async with asyncio.timeout(DEADLINE):
        a, b, _ = await asyncio.gather(*(cache.get(r.CONFIGMAPS, name, NS) for name in ("config", "config", "other")))
    assert a is b
    assert sorted(api.calls) == [("GET", "config"), ("GET", "other")]


async def test_a_get_after_the_ttl_makes_a_new_call() -> None:
    api = FakeApi()
    cache = ObjectCache(cast(KubeClient, api), ttl=0)
    async with asyncio.timeout(DEADLINE):
        first = await cache.get(r.CONFIGMAPS, "config", NS)
        second = await cache.get(r.CONFIGMAPS, "config", NS)
    assert first is not second
    assert api.calls == [("GET", "config")] * 2
