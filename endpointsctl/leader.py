"""Lease-based leader election (``coordination.k8s.io/v1`` Lease), in the shape of client-go's ``leaderelection``.

* A candidate reads the Lease and takes it when it is free (no holder, or released), already its own, or expired.
  Expiry is judged by the candidate's own clock: a Lease is expired ``leaseDurationSeconds`` after the candidate
  last *saw it change*, never by comparing ``renewTime`` with local time (no clock-skew assumptions).
* Every write is a PUT carrying the ``resourceVersion`` that was read: of two candidates, exactly one wins (the
  other gets 409 Conflict).
* The leader renews every retry period. If it cannot renew within the renew deadline (shorter than the lease
  duration), or sees another holder, it stops leading at once: the ``lead`` coroutine is cancelled before any other
  replica can consider the Lease expired.
* On shutdown the leader releases the Lease (empty holder, 1 s duration) so that a rolling update hands over
  without waiting for expiry. Identities are unique per process (``settings.unique_identity``): a restarted
  process is a new candidate and never resumes its predecessor's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from endpointsctl.settings import LeaderElection
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Conflict, KubeError, NotFound

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class LeaseRecord:
    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Obj) -> LeaseRecord:
        spec: dict[str, Any] = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def may_take(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> bool:
    """May ``identity`` write the Lease now? Yes when there is none, nobody holds it, it is ours, or it has not
    changed for its whole duration as seen by our clock (``observed_at``: when we last saw it change)."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return observed_at + record.duration_seconds <= now


def next_spec(record: LeaseRecord | None, identity: str, duration_seconds: float, now: str) -> Obj:
    """The spec that takes or renews the Lease: acquireTime and leaseTransitions move only when the holder does."""
    ours = record is not None and record.holder == identity
    transitions = 0 if record is None else record.transitions + (0 if ours else 1)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": math.ceil(duration_seconds),
        "acquireTime": record.acquire_time if ours and record is not None and record.acquire_time else now,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        config: LeaderElection,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self.config = config
        self.identity = config.identity
        self._on_change = on_change
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at = -math.inf
        self.leading = False

    def fresh(self) -> bool:
        """Leading, and the Lease was renewed within the renew deadline: nobody else can hold it yet. A leader
        that was paused (SIGSTOP, a long GC, a frozen VM) must not write before its next renewal tells it whether
        it still leads; the controller checks this before every reconcile."""
        return self.leading and self._clock() - self._renewed_at < self.config.renew_deadline_seconds

    @property
    def holder(self) -> str:
        """The holder as last seen ("" when unknown or released)."""
        return self._observed.holder if self._observed else ""

    # -- one attempt ----------------------------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One read-then-write attempt. True when this candidate holds the Lease afterwards."""
        name, namespace = self.config.lease_name, self.config.lease_namespace
        try:
            lease = await self._client.get(r.LEASES, name, namespace)
        except NotFound:
            body = {
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"app.kubernetes.io/name": "endpointsctl"}},
                "spec": next_spec(None, self.identity, self.config.lease_duration_seconds, timestamps.micro_now()),
            }  # fmt: skip
            try:
                created = await self._client.create(r.LEASES, body, namespace)
            except Conflict:  # AlreadyExists: another candidate created it first
                return False
            self._observe(LeaseRecord.from_lease(created))
            self._renewed_at = self._clock()
            return True
        record = LeaseRecord.from_lease(lease)
        self._observe(record)
        if not may_take(record, self.identity, self._observed_at, self._clock()):
            return False
        lease["spec"] = next_spec(record, self.identity, self.config.lease_duration_seconds, timestamps.micro_now())
        try:
            updated = await self._client.replace(r.LEASES, lease)  # carries the resourceVersion that was read
        except Conflict:
            return False
        self._observe(LeaseRecord.from_lease(updated))
        self._renewed_at = self._clock()
        return True

    def _observe(self, record: LeaseRecord) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()

    async def _attempt(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(max(0.05, timeout)):
                return await self.try_acquire_or_renew()
        except (KubeError, OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.config.lease_namespace, self.config.lease_name, exc)
            return False

    # -- the loop -------------------------------------------------------------------------------------------------

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Acquire, run ``lead()`` while renewing, cancel it when the Lease is lost, and start over. When
        ``lead()`` ends by itself, release the Lease and return (or re-raise what it raised)."""
        while True:
            await self._acquire()
            task = asyncio.create_task(_as_coroutine(lead), name="leading")
            self._set_leading(True)
            try:
                await self._renew_until_lost(task)
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([task])
                self._set_leading(False)
            if task.done() and not task.cancelled():  # lead() ended by itself: give the Lease up, and fail if it did
                await self.release()
                error = task.exception()
                if error is not None:
                    raise error
                return

    async def _acquire(self) -> None:
        retry = self.config.retry_period_seconds
        logged = False
        while not await self._attempt(retry):
            if not logged:
                log.info("lease %s/%s not acquired (last seen holder: %r); standing by as %s",
                         self.config.lease_namespace, self.config.lease_name, self.holder, self.identity)  # fmt: skip
                logged = True
            await asyncio.sleep(retry * random.uniform(1.0, 1.2))  # client-go's jitter factor 1.2
        log.info("acquired lease %s/%s as %s", self.config.lease_namespace, self.config.lease_name, self.identity)

    async def _renew_until_lost(self, task: asyncio.Task[None]) -> None:
        retry, deadline_seconds = self.config.retry_period_seconds, self.config.renew_deadline_seconds
        while True:
            await asyncio.wait([task], timeout=retry)
            if task.done():
                return
            deadline = self._clock() + deadline_seconds
            while not await self._attempt(deadline - self._clock()):
                if self.holder not in ("", self.identity):
                    log.warning("lease taken over by %r: stopping reconciling", self.holder)
                    return
                if self._clock() >= deadline:
                    log.warning("could not renew the lease within %.1fs: stopping reconciling", deadline_seconds)
                    return
                await asyncio.sleep(min(retry, max(0.0, deadline - self._clock())))

    async def release(self) -> None:
        """Give the Lease up if we hold it (best effort), so that a standby takes over without waiting."""
        name, namespace = self.config.lease_name, self.config.lease_namespace
        try:
            async with asyncio.timeout(self.config.retry_period_seconds * 2):
                lease = await self._client.get(r.LEASES, name, namespace)
                record = LeaseRecord.from_lease(lease)
                if record.holder != self.identity:
                    return
                now = timestamps.micro_now()
                lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1,
                                 "renewTime": now, "acquireTime": now}  # fmt: skip
                await self._client.replace(r.LEASES, lease)
                log.info("released lease %s/%s", namespace, name)
        except (KubeError, OSError, TimeoutError) as exc:
            log.warning("could not release lease %s/%s: %s", namespace, name, exc)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if self._on_change is not None:
            self._on_change(leading)


async def _as_coroutine(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()
