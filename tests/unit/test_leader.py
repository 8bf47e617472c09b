"""Lease decisions and the read-then-write protocol, with an in-memory Lease store that enforces resourceVersions
the way the API server does (the loop itself runs against the real API server in the integration tests)."""

import copy
from collections.abc import Callable
from typing import Any

import pytest

from endpointsctl.leader import LeaderElector, LeaseRecord, may_take, next_spec
from endpointsctl.settings import LeaderElection
from localsched.kube import resources as r
from localsched.kube.errors import AlreadyExists, Conflict, NotFound

Obj = dict[str, Any]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseStore:
    """get/create/replace of one Lease with optimistic concurrency on resourceVersion."""

    def __init__(self) -> None:
        self.lease: Obj | None = None
        self.version = 0
        self.before_write: Callable[[Obj], None] | None = None  # another writer, once

    async def get(self, resource: r.Resource, name: str, namespace: str) -> Obj:
        if self.lease is None:
            raise NotFound("not found")
        return copy.deepcopy(self.lease)

    async def create(self, resource: r.Resource, body: Obj, namespace: str) -> Obj:
        if self.lease is not None:
            raise AlreadyExists("exists")
        return self._store(body)

    async def replace(self, resource: r.Resource, body: Obj, namespace: str | None = None) -> Obj:
        assert self.lease is not None
        if self.before_write is not None:
            interloper, self.before_write = self.before_write, None
            interloper(self.lease)
            self.version += 1
            self.lease["metadata"]["resourceVersion"] = str(self.version)
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        return self._store(body)

    def _store(self, body: Obj) -> Obj:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)

    @property
    def holder(self) -> str:
        return LeaseRecord.from_lease(self.lease or {}).holder


CONFIG = LeaderElection(lease_name="endpointsctl", lease_namespace="ns", lease_duration_seconds=15)


def elector(store: LeaseStore, identity: str, clock: Clock) -> LeaderElector:
    config = LeaderElection(**{**CONFIG.__dict__, "identity": identity})
    return LeaderElector(store, config, clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "observed_at", "now", "may"),
    [
        pytest.param(None, 0, 0, True, id="no-lease-yet"),
        pytest.param(LeaseRecord(holder=""), 0, 0, True, id="released"),
        pytest.param(LeaseRecord(holder="me", duration_seconds=15), 0, 1, True, id="ours"),
        pytest.param(LeaseRecord(holder="other", duration_seconds=15), 100, 114.9, False, id="theirs-and-fresh"),
        pytest.param(LeaseRecord(holder="other", duration_seconds=15), 100, 115, True, id="theirs-and-expired"),
    ],
)
def test_a_lease_may_be_taken_when_free_ours_or_unchanged_for_its_duration(
    record: LeaseRecord | None, observed_at: float, now: float, may: bool
) -> None:
    assert may_take(record, "me", observed_at, now) is may


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = next_spec(LeaseRecord(holder="other", acquire_time="t0", transitions=2), "me", 15, "t1")
    assert taken == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "t1", "renewTime": "t1",
                     "leaseTransitions": 3}  # fmt: skip
    renewed = next_spec(LeaseRecord(holder="me", acquire_time="t1", transitions=3), "me", 15, "t2")
    assert (renewed["acquireTime"], renewed["renewTime"], renewed["leaseTransitions"]) == ("t1", "t2", 3)


async def test_of_two_candidates_one_leads_and_the_other_takes_over_only_after_the_lease_expires() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 10
    assert await a.try_acquire_or_renew()  # a renews: b sees the lease change and restarts its count
    assert not await b.try_acquire_or_renew()
    clock.now += 14.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.1  # 15 s since b last saw a change: a is gone
    assert await b.try_acquire_or_renew()
    assert store.holder == "b"
    assert LeaseRecord.from_lease(store.lease or {}).transitions == 1
    assert not await a.try_acquire_or_renew()  # a, if it comes back, finds b there


async def test_of_two_writes_from_the_same_read_only_the_first_wins() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 15  # expired for b
    store.before_write = lambda lease: lease["spec"].update(holderIdentity="c")  # c writes between b's read and write
    assert not await b.try_acquire_or_renew()
    assert store.holder == "c"


async def test_releasing_frees_the_lease_at_once_for_the_next_candidate() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert store.holder == ""
    assert await b.try_acquire_or_renew()  # no waiting for expiry


async def test_release_leaves_someone_elses_lease_alone() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await b.try_acquire_or_renew()
    await a.release()
    assert store.holder == "b"


async def test_a_leader_is_fresh_only_within_the_renew_deadline_of_its_last_renewal() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, "a", clock)
    assert await a.try_acquire_or_renew()
    a.leading = True  # as run() sets it
    assert a.fresh()
    clock.now += CONFIG.renew_deadline_seconds  # paused this long: another replica may be about to take over
    assert not a.fresh()
    assert await a.try_acquire_or_renew()
    assert a.fresh()
    a.leading = False
    assert not a.fresh()
