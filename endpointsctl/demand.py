"""The activators' demand per revision, as KEDA's external scaler answers it (``endpointsctl/keda.py``).

Every activator sends Knative's autoscaler stat stream (``localsched.stats``) to a websocket on endpointsctl's admin
server, ``/stats``: one binary message a second, and one at once when a revision at zero gets its first request.
Each message is a ``WireStatMessages``: per revision, this activator's requests for it (queued plus in flight)
averaged over the last second. A revision that goes idle gets one last report of 0, then no more.

:class:`Demand` keeps, per revision, the latest report of each activator pod with the time it arrived. A revision's
demand is the sum over the activators of their latest reports that are fresher than the staleness bound (3 s: an
activator reports every second, so a report that old means the activator stopped reporting, or died). A revision is
*active* while its demand is above 0. Watchers (KEDA's ``StreamIsActive``) are woken the moment a revision turns
active or inactive: on the report that says so, or, when the reports just stop, on the next sweep (:meth:`sweep`,
every 0.5 s) that finds them stale.

Nothing here needs the Kubernetes API or the Lease: a replica only sums what it is sent, so every replica answers,
provided every activator reports to every replica (``docs/keda.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from endpointsctl.metrics import Metrics
from localsched.stats import Stat, StatMessage, WireFormatError, decode

log = logging.getLogger(__name__)

STALENESS_SECONDS = 3.0  # three missed reports
SWEEP_SECONDS = 0.5  # how late a revision whose reports stopped is seen inactive, at most
HEARTBEAT_SECONDS = 10.0  # websocket pings: a vanished activator's connection is closed (and uncounted) this soon


@dataclass(frozen=True)
class Report:
    """One activator's latest stat for one revision, and when it arrived (on the table's clock)."""

    stat: Stat
    received: float

    @property
    def concurrency(self) -> float:
        value = self.stat.average_concurrent_requests
        return value if math.isfinite(value) and value > 0 else 0.0


class Demand:
    """Per revision key (``namespace/name``), the latest report of each activator pod; see the module docstring."""

    def __init__(
        self, *, staleness_seconds: float = STALENESS_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.staleness_seconds = staleness_seconds
        self.clock = clock
        self._reports: dict[str, dict[str, Report]] = {}  # revision key -> activator pod -> its latest report
        self._active: set[str] = set()  # revisions last announced active to their watchers
        self._watchers: dict[str, set[asyncio.Event]] = {}

    def record(self, message: StatMessage, *, sender: str = "") -> None:
        """Take one activator's report; ``sender`` names the activator when the stat carries no pod name."""
        pod = message.stat.pod_name or sender
        self._reports.setdefault(message.key, {})[pod] = Report(message.stat, self.clock())
        self._settle(message.key)

    def demand(self, key: str) -> float:
        """The revision's requests in the activators: the sum of their fresh reports (0.0 when none is)."""
        reports = self._reports.get(key)
        if not reports:
            return 0.0
        now = self.clock()
        return sum(report.concurrency for report in reports.values() if self._fresh(report, now))

    def active(self, key: str) -> bool:
        return self.demand(key) > 0

    @property
    def active_count(self) -> int:
        """Revisions announced active (a revision whose reports just went stale counts until the next sweep)."""
        return len(self._active)

    def reporters(self, key: str) -> dict[str, float]:
        """Activator pod -> its fresh report's concurrency, for one revision (diagnostics)."""
        now = self.clock()
        reports = self._reports.get(key, {})
        return {pod: report.concurrency for pod, report in reports.items() if self._fresh(report, now)}

    def sweep(self) -> None:
        """Forget stale reports, and wake the watchers of every revision that turned inactive because of it."""
        now = self.clock()
        for key in list(self._reports):
            reports = self._reports[key]
            for pod in [pod for pod, report in reports.items() if not self._fresh(report, now)]:
                del reports[pod]
            if not reports:
                del self._reports[key]
            self._settle(key)

    async def sweep_forever(self, interval: float = SWEEP_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``key`` turns active or inactive; the watcher clears it, then reads the state."""
        event = asyncio.Event()
        self._watchers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]

    def _fresh(self, report: Report, now: float) -> bool:
        return now - report.received <= self.staleness_seconds

    def _settle(self, key: str) -> None:
        active = self.active(key)
        if active == (key in self._active):
            return
        if active:
            self._active.add(key)
        else:
            self._active.discard(key)
        log.debug("revision %s is %s", key, "active" if active else "inactive")
        for event in self._watchers.get(key, ()):
            event.set()


class StatsSink:
    """The websocket ``/stats``: binary messages are ``WireStatMessages`` recorded in :class:`Demand`.

    Bytes that do not decode are logged (the first per connection as a warning) and counted, and the connection is
    kept: the next second's report may be fine. A text message is refused: the connection is closed with 1003
    (unsupported data), since a peer that sends text does not speak this protocol at all.
    """

    def __init__(self, demand: Demand, metrics: Metrics, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.demand = demand
        self.metrics = metrics
        self.heartbeat_seconds = heartbeat_seconds
        self._open: set[web.WebSocketResponse] = set()

    @property
    def connections(self) -> int:
        return len(self._open)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_seconds)
        await ws.prepare(request)
        sender = request.remote or "unknown"
        self._open.add(ws)
        self.metrics.demand_connections.inc()
        log.info("activator at %s connected to report its demand", sender)
        warned = False
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    try:
                        stats = decode(message.data)
                    except WireFormatError as exc:
                        self.metrics.demand_refused.labels("undecodable").inc()
                        log.log(logging.DEBUG if warned else logging.WARNING,
                                "activator at %s sent a report that does not decode: %s", sender, exc)  # fmt: skip
                        warned = True
                        continue
                    for stat in stats:
                        self.demand.record(stat, sender=sender)
                    self.metrics.demand_reports.inc(len(stats))
                elif message.type == WSMsgType.TEXT:
                    self.metrics.demand_refused.labels("text").inc()
                    log.warning("activator at %s sent text on /stats: closing (binary WireStatMessages only)", sender)
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary WireStatMessages only")
                    break
        finally:
            self._open.discard(ws)
            self.metrics.demand_connections.dec()
            log.info("activator at %s disconnected from /stats", sender)
        return ws

    async def close(self) -> None:
        """Close every connection, 1001 (on shutdown: the activators reconnect, with their own backoff)."""
        for ws in list(self._open):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"endpointsctl is shutting down")
