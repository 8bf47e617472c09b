"""The parts of a kubelet whose timing decides what the control plane sees: the simulated kubelet's clockwork.

A real kubelet does not report what happens on its node the moment it happens. ``docs/kubelet-model.md`` has the
model and its sources; in short:

* **Generic PLEG.** Container state (started, exited) reaches the kubelet's pod workers only through the pod
  lifecycle event generator's *relist*, every second by default. The first status of a new pod is written before
  its sandbox exists (``Pending``, no pod IP); the pod IP and ``Running`` arrive with the status of the sync that
  the next relist triggers. :class:`Relister` keeps what the kubelet has *seen* apart from what really runs.
* **Pod workers wait for a newer cache.** Every sync of a pod waits until the runtime cache is newer than the
  pod's previous sync (``podCache.GetNewerThan``), so a change written to a pod by another controller (a
  readiness-gate condition, say) is picked up at once on a settled pod but only at the next relist on a pod that
  synced less than a period ago: :meth:`Relister.newer_than`.
* **Status manager.** One sender per kubelet, the latest status per pod wins, an unchanged status is not sent, and
  each send reads the pod before it patches it (``GET`` then ``PATCH``). A status the API server disagrees with
  (the node controller marked the pod NotReady while the node was unreachable) is sent again by the periodic
  reconcile: :class:`StatusManager`.
* **API client limits**: ``--kube-api-qps``/``--kube-api-burst``, 50/100 by default since Kubernetes 1.27, applied
  by the client (:class:`localsched.kube.client.RateLimit`).

``Timing.instant()`` turns the clockwork off (container events reported at once, no client limit), for fast
tests of things that do not depend on it; the benchmarks and the local-scheduling tests use the realistic one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from localsched.kube import resources as r
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj
from localsched.kube.errors import KubeError, NotFound

log = logging.getLogger("nodesim.kubelet")

Key = tuple[str, str]

RELIST_SECONDS = 1.0  # kubelet genericPLEG relistPeriod
STATUS_RECONCILE_SECONDS = 10.0  # kubelet status manager syncPeriod (syncBatch)
API_QPS = 50.0  # KubeletConfiguration kubeAPIQPS default since 1.27
API_BURST = 100  # kubeAPIBurst default since 1.27
RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class Timing:
    """How the simulated kubelet reports. ``relist_seconds`` 0 reports container events at once."""

    name: str = "realistic"
    relist_seconds: float = RELIST_SECONDS
    api_qps: float = API_QPS  # 0: no client-side limit
    api_burst: int = API_BURST
    status_reconcile_seconds: float = STATUS_RECONCILE_SECONDS
    read_before_status_write: bool = True

    @classmethod
    def instant(cls) -> Timing:
        return cls("instant", 0.0, 0.0, 0, 0.0, False)

    @classmethod
    def named(cls, name: str, relist_seconds: float | None = None) -> Timing:
        """``realistic`` (the default) or ``instant``; ``relist_seconds`` overrides the relist period."""
        if name == "instant":
            base = cls.instant()
        elif name == "realistic":
            base = cls()
        else:
            raise ValueError(f"unknown kubelet timing {name!r}: realistic or instant")
        if relist_seconds is None:
            return base
        if relist_seconds < 0:
            raise ValueError(f"relist period must be >= 0, got {relist_seconds}")
        return cls(base.name, relist_seconds, base.api_qps, base.api_burst, base.status_reconcile_seconds,
                   base.read_before_status_write)  # fmt: skip

    def describe(self) -> str:
        if self.relist_seconds == 0 and self.api_qps == 0:
            return "instant (container events reported at once, no API client limit)"
        relist = f"relist every {self.relist_seconds:g}s" if self.relist_seconds else "events reported at once"
        limit = f"API client {self.api_qps:g} QPS / burst {self.api_burst}" if self.api_qps else "no API client limit"
        return f"{self.name} ({relist}, {limit})"


class Relister:
    """Generic PLEG: every ``period`` seconds, ``observe()`` compares what runs with what the kubelet has seen.

    ``observe`` returns the keys whose state changed at this relist (the PLEG events); ``on_events`` gets them and
    kicks those pods' workers. With ``period`` 0, :meth:`changed` relists at once instead of waiting for a tick.
    """

    def __init__(
        self, period: float, observe: Callable[[], Iterable[Key]], on_events: Callable[[Iterable[Key]], None]
    ) -> None:
        self.period = period
        self._observe = observe
        self._on_events = on_events
        self.last_relist = time.monotonic()
        self.relists = 0
        self._tick = asyncio.Event()

    def relist(self) -> None:
        self.last_relist = time.monotonic()
        self.relists += 1
        changed = list(self._observe())
        self._tick.set()
        self._tick = asyncio.Event()
        if changed:
            self._on_events(changed)

    def changed(self) -> None:
        """Something started or exited. Only an evented (period 0) PLEG hears of it before the next relist."""
        if self.period == 0:
            self.relist()

    async def newer_than(self, moment: float) -> None:
        """Until the runtime cache is newer than ``moment`` (``GetNewerThan``): at once if a relist came since."""
        while self.period > 0 and self.last_relist <= moment:
            await self._tick.wait()

    async def run(self) -> None:
        if self.period == 0:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(self.period)  # like wait.Until: the period counts from the end of the last relist
            self.relist()


@dataclass
class _Pending:
    namespace: str
    name: str
    uid: str
    status: Obj


class StatusManager:
    """One sender, the latest status per pod, unchanged statuses skipped, read before write (as the kubelet)."""

    def __init__(self, client: KubeClient, timing: Timing) -> None:
        self.client = client
        self.timing = timing
        self._pending: OrderedDict[Key, _Pending] = OrderedDict()
        self._sent: dict[Key, _Pending] = {}
        self._resend: set[Key] = set()
        self._generation: dict[Key, int] = {}  # set() calls per pod: a retry yields to anything newer
        self._wake = asyncio.Event()
        self.writes = 0

    def set(self, namespace: str, name: str, uid: str, status: Obj) -> None:
        """Queue ``status`` for the pod (replacing a queued one); a status equal to the last one sent is dropped."""
        key = (namespace, name)
        self._generation[key] = self._generation.get(key, 0) + 1
        sent = self._sent.get(key)
        if sent is not None and sent.uid == uid and sent.status == status and key not in self._resend:
            self._pending.pop(key, None)
            return
        self._pending[key] = _Pending(namespace, name, uid, status)
        self._wake.set()

    def last_sent(self, key: Key) -> Obj | None:
        sent = self._sent.get(key)
        return None if sent is None else sent.status

    def forget(self, key: Key) -> None:
        self._pending.pop(key, None)
        self._sent.pop(key, None)
        self._resend.discard(key)
        self._generation.pop(key, None)

    def reconcile(self, key: Key) -> None:
        """The API disagrees with the last status sent: send it again at the next periodic reconcile."""
        if key in self._sent:
            self._resend.add(key)
            if self.timing.status_reconcile_seconds == 0:
                self._flush_resends()

    def _flush_resends(self) -> None:
        for key in list(self._resend):
            sent = self._sent.get(key)
            if sent is not None and key not in self._pending:
                self._pending[key] = sent
        self._wake.set()

    async def run(self) -> None:
        reconciler = asyncio.create_task(self._reconcile_loop(), name="status-reconcile")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    key, item = self._pending.popitem(last=False)
                    self._resend.discard(key)
                    try:
                        await self._send(item)
                    except NotFound:
                        self._sent.pop(key, None)
                    except (KubeError, OSError) as exc:
                        # Like syncBatch: this pod is retried later; the others are not held up.
                        log.warning("status of %s/%s not written (%s); retrying", key[0], key[1], exc)
                        generation = self._generation.get(key, 0)
                        asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry, key, item, generation)
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler

    def _retry(self, key: Key, item: _Pending, generation: int) -> None:
        if key not in self._pending and self._generation.get(key) == generation:  # nothing newer was set since
            self._pending[key] = item
            self._wake.set()

    async def _reconcile_loop(self) -> None:
        if self.timing.status_reconcile_seconds == 0:
            return
        while True:
            await asyncio.sleep(self.timing.status_reconcile_seconds)
            if self._resend:
                self._flush_resends()

    async def _send(self, item: _Pending) -> None:
        if self.timing.read_before_status_write:
            current = await self.client.get(r.PODS, item.name, item.namespace)
            if current["metadata"]["uid"] != item.uid:
                return  # another pod of the same name now: ours is gone
        body: dict[str, Any] = {"metadata": {"uid": item.uid}, "status": item.status}
        await self.client.patch(r.PODS, item.name, body, item.namespace, subresource="status",
                                content_type=STRATEGIC_PATCH)  # fmt: skip
        self.writes += 1
        self._sent[(item.namespace, item.name)] = item


class ObjectCache:
    """ConfigMaps and Secrets pods refer to, read once per object for a short while (the kubelet's
    configmap/secret managers watch them rather than reading them for every pod)."""

    def __init__(self, client: KubeClient, ttl: float = 5.0) -> None:
        self.client = client
        self.ttl = ttl
        self._entries: dict[tuple[str, str, str], tuple[float, asyncio.Task[Obj]]] = {}

    async def get(self, resource: r.Resource, name: str, namespace: str) -> Obj:
        key = (resource.plural, namespace, name)
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            task = asyncio.ensure_future(self.client.get(resource, name, namespace))
            entry = self._entries[key] = (time.monotonic(), task)
        try:
            return await asyncio.shield(entry[1])
        except Exception:
            if self._entries.get(key) is entry:
                del self._entries[key]  # a failure is not remembered: the next pod asks again
            raise
