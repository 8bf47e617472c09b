"""Demand reports to the autoscaler, as Knative's activator sends them (and to endpointsctl, for KEDA).

Knative's autoscaler (the KPA) owns a revision's replicas: it scales from zero when an activator reports demand
for a revision at zero, and to zero once the reports have said "nothing" for the stable window and the grace
period. So the activator reports, for every revision it has requests for, one ``Stat`` a second: the requests in
the house (queued plus being forwarded) averaged over the second, the requests that arrived in it, this
activator's pod name and a timestamp, in Knative's wire format (``localsched.stats``) over a websocket. A revision
whose requests are all done gets one last report of zero and is then dropped, as in Knative.

Three things are not periodic:

* **The report that scales from zero** (``report_now``): the standard path's cold start sends it at once, so the
  autoscaler decides without waiting for its tick (Knative's autoscaler "pokes" its decider on such a stat).
* **A hold during a local cold start** (``hold``): local scheduling writes the pod and claims its replica itself,
  so it keeps the revision out of the autoscaler's reports until the claim is decided (``release``), at most
  ``hold_limit_seconds`` (the activation timeout: the local path gives up by then anyway). Reported earlier, the
  autoscaler would raise the replicas from zero at the same moment and the ReplicaSet would bring a second pod
  through kube-scheduler for the same request (docs/local-scheduling.md, "Beside an autoscaler").
* **A revision's first request** is reported at once to endpointsctl (``flush_first``), whose KEDA scaler pushes
  "active" from it; the autoscaler hears of a revision at zero from the cold start instead (the two above).

Each destination has its own sender: a bounded buffer of encoded reports (the oldest dropped and counted when the
autoscaler is away), a connection re-established with capped exponential backoff, and counters. A report is
never awaited by a request: losing the autoscaler delays no request and fails none.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from localsched.kube.slices import endpoints_of, port_of
from localsched.kube.watching import WatchCache
from localsched.stats import Stat, StatMessage, encode

log = logging.getLogger(__name__)


class Concurrency:
    """One revision's requests in this activator: how many now, and their time integral since the last report."""

    __slots__ = ("area", "arrived", "current", "reported", "since")

    def __init__(self, now: float) -> None:
        self.current = 0
        self.area = 0.0  # request-seconds since the last report
        self.arrived = 0  # requests that arrived since the last report
        self.since = now  # the last change
        self.reported = now  # the end of the last report's period (a hold can stretch it over several ticks)

    def change(self, now: float, delta: int) -> None:
        self.area += self.current * (now - self.since)
        self.since = now
        self.current += delta

    def report(self, now: float) -> tuple[float, int]:
        """(average concurrency since the last report, requests that arrived since), and start the next period."""
        self.change(now, 0)
        elapsed = max(now - self.reported, 1e-9)
        average, arrived = self.area / elapsed, self.arrived
        self.area, self.arrived, self.reported = 0.0, 0, now
        return average, arrived


@dataclass(frozen=True)
class ReporterMetrics:
    reports: Counter  # destination, outcome: sent, dropped (buffer full), failed (written to a dead connection)
    connected: Gauge  # destination
    connects: Counter  # destination, outcome: connected, failed

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReporterMetrics:
        return cls(
            reports=Counter("activator_stat_reports_total",
                            "Demand reports (one websocket message of Stat messages) by destination and outcome: "
                            "sent, dropped (the buffer was full while the destination was away).",
                            ["destination", "outcome"], registry=registry),
            connected=Gauge("activator_stat_destination_connected",
                            "Open websockets to the destination (autoscaler: 1; endpointsctl: one per replica).",
                            ["destination"], registry=registry),
            connects=Counter("activator_stat_connects_total",
                             "Websocket connection attempts to a report destination, by outcome.",
                             ["destination", "outcome"], registry=registry),
        )  # fmt: skip


class Sender:
    """One destination's websocket: reports are buffered (bounded) and written in order; reconnects by itself."""

    def __init__(
        self,
        name: str,
        url: str,
        session: aiohttp.ClientSession,
        metrics: ReporterMetrics,
        *,
        buffer: int = 30,
        backoff: tuple[float, float] = (0.1, 5.0),
        autoscaler: bool = False,
    ) -> None:
        self.name = name
        self.autoscaler = autoscaler  # it decides scales from zero: local claims' holds apply to it
        self.url = url
        self.session = session
        self.metrics = metrics
        self.buffer: collections.deque[bytes] = collections.deque()
        self.limit = buffer
        self.backoff = backoff
        self.ready = asyncio.Event()
        self.connected = False

    def put(self, payload: bytes) -> None:
        if len(self.buffer) >= self.limit:
            self.buffer.popleft()
            self.metrics.reports.labels(self.name, "dropped").inc()
        self.buffer.append(payload)
        self.ready.set()

    async def run(self) -> None:
        """Connect, write what is buffered, and on any failure reconnect after a jittered, growing delay."""
        delay = self.backoff[0]
        try:
            while True:
                try:
                    async with self.session.ws_connect(self.url, heartbeat=10.0) as ws:
                        self.metrics.connects.labels(self.name, "connected").inc()
                        self._connected(True)
                        delay = self.backoff[0]
                        await self._write(ws)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.metrics.connects.labels(self.name, "failed").inc()
                    log.log(logging.INFO if self.connected else logging.DEBUG,
                            "stat reports to %s (%s): %s; reconnecting", self.name, self.url, exc)  # fmt: skip
                self._connected(False)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff[1])
        finally:
            self._connected(False)

    def _connected(self, up: bool) -> None:
        """Counted in ``activator_stat_destination_connected``: open websockets to the destination (endpointsctl
        has one per replica)."""
        if up == self.connected:
            return
        log.info("stat reports to %s (%s): %s", self.name, self.url, "connected" if up else "disconnected")
        self.connected = up
        gauge = self.metrics.connected.labels(self.name)
        gauge.inc() if up else gauge.dec()

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        closed = asyncio.ensure_future(ws.receive())  # the peer closing (or a frame we ignore) ends the session
        try:
            while not closed.done():
                while self.buffer:
                    await ws.send_bytes(self.buffer[0])  # raises on a dead connection: the report stays buffered
                    self.buffer.popleft()
                    self.metrics.reports.labels(self.name, "sent").inc()
                self.ready.clear()
                waiting = asyncio.ensure_future(self.ready.wait())
                await asyncio.wait((waiting, closed), return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        finally:
            closed.cancel()
        raise aiohttp.ClientConnectionError(f"closed by the peer ({ws.close_code})")


class Reporter:
    """Counts requests per revision on the hot path (two O(1) calls a request) and reports once a second."""

    def __init__(
        self,
        pod_name: str,
        senders: list[Sender],
        *,
        interval: float = 1.0,
        hold_limit_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pod_name = pod_name
        self.senders = senders
        self.interval = interval
        self.hold_limit = hold_limit_seconds
        self.clock = clock
        self.wall = wall
        self.started = clock()
        self.period_start = self.started
        self.revisions: dict[str, Concurrency] = {}
        self.held: dict[str, float] = {}  # revision key -> when its hold lapses
        self.first: set[str] = set()  # revisions new since the last flush (a first request, reported at once)
        self.loop: asyncio.AbstractEventLoop | None = None  # set by run(); without it, flush_first() is called

    # -- the hot path ----------------------------------------------------------------------------------------

    def request_in(self, key: str) -> None:
        now = self.clock()
        revision = self.revisions.get(key)
        if revision is None:
            revision = self.revisions[key] = Concurrency(self.period_start)
            if not self.first and self.loop is not None:
                self.loop.call_soon(self.flush_first)
            self.first.add(key)
        revision.change(now, 1)
        revision.arrived += 1

    def request_out(self, key: str) -> None:
        revision = self.revisions.get(key)
        if revision is not None:
            revision.change(self.clock(), -1)

    def flush_first(self) -> None:
        """A revision's first request is reported at once, as Knative's activator does, to the destinations that
        scale on demand without deciding a scale from zero (endpointsctl, for KEDA's StreamIsActive): the
        autoscaler hears of a revision at zero from its cold start (``report_now``, or once a hold is released)."""
        messages = [self._message(key, float(max(1, self.demand(key))), 1.0) for key in sorted(self.first)]
        self.first.clear()
        self._send(messages, to_autoscaler=False)

    # -- cold starts -----------------------------------------------------------------------------------------

    def hold(self, key: str) -> None:
        """Keep ``key`` out of the autoscaler's reports while a local cold start claims its replica (at most the
        hold limit); the other destinations go on hearing of it."""
        self.held[key] = self.clock() + self.hold_limit

    def release(self, key: str) -> None:
        """The claim is decided: report the revision's demand at once."""
        if self.held.pop(key, None) is not None:
            self.report_now(key)

    def report_now(self, key: str) -> None:
        """Send ``key``'s demand now (the scale-from-zero signal), without waiting for the next tick. Like Knative's
        first-request report, it says at least one request, so the autoscaler's decider sees demand at once."""
        self.held.pop(key, None)
        revision = self.revisions.get(key)
        arrived = revision.arrived if revision is not None else 0
        self._send([self._message(key, float(max(1, self.demand(key))), float(max(1, arrived)))])

    # -- the tick --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            self.tick()

    def tick(self) -> list[StatMessage]:
        """One period's report: every revision with requests in it (to the autoscaler, held ones excepted), then
        forget the idle. Returns what the autoscaler was sent."""
        now = self.clock()
        self.period_start = now
        messages, held = [], set()
        for key, revision in list(self.revisions.items()):
            lapse = self.held.get(key)
            if lapse is not None and now < lapse:
                held.add(key)
            elif lapse is not None:
                del self.held[key]
                log.info("revision %s: reporting its demand (the local claim took over %.0fs)", key, self.hold_limit)
            average, arrived = revision.report(now)
            messages.append(self._message(key, average, float(arrived)))
            if revision.current == 0 and average == 0 and arrived == 0:
                del self.revisions[key]  # reported "nothing" once; that is what the autoscaler needed to hear
        to_autoscaler = [m for m in messages if m.key not in held]
        self._send(to_autoscaler, to_others=False)
        self._send(messages, to_autoscaler=False)
        return to_autoscaler

    def demand(self, key: str) -> int:
        """Requests in the house for ``key`` right now."""
        revision = self.revisions.get(key)
        return revision.current if revision is not None else 0

    def _message(self, key: str, average: float, arrived: float) -> StatMessage:
        namespace, _, name = key.partition("/")
        stat = Stat(pod_name=self.pod_name, average_concurrent_requests=average, request_count=arrived,
                    process_uptime=self.clock() - self.started, timestamp=int(self.wall()))  # fmt: skip
        return StatMessage(namespace, name, stat)

    def _send(self, messages: list[StatMessage], *, to_autoscaler: bool = True, to_others: bool = True) -> None:
        if not messages:
            return
        payload = encode(messages)
        for sender in self.senders:
            if to_autoscaler if sender.autoscaler else to_others:
                sender.put(payload)


class ServiceSenders:
    """A sender to every address of a Service, from its EndpointSlices: one per endpointsctl replica.

    endpointsctl's replicas each add up what they are sent, and KEDA may ask any of them, so every activator reports
    to all of them (docs/keda.md). The headless Service ``endpointsctl-stats`` publishes their addresses, not-ready
    ones included; a replica that comes or goes gets or loses its sender as the slices change. No DNS is needed."""

    def __init__(
        self,
        name: str,
        slices: WatchCache,
        reporter: Reporter,
        make: Callable[[str, str], Sender],
        *,
        port_name: str = "http-stats",
        path: str = "/stats",
    ) -> None:
        self.name = name
        self.slices = slices
        self.reporter = reporter
        self.make = make
        self.port_name = port_name
        self.path = path
        self.running: dict[str, tuple[Sender, asyncio.Task[None]]] = {}
        slices.add_handler(lambda _: self.sync())

    def urls(self) -> set[str]:
        found = set()
        for slice_obj in self.slices:
            port = port_of(slice_obj, self.port_name) or port_of(slice_obj)
            if port is None:
                continue
            for endpoint in endpoints_of(slice_obj):
                if not endpoint.terminating:
                    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
                    found.add(f"ws://{host}:{port}{self.path}")
        return found

    def sync(self) -> None:
        wanted = self.urls()
        for url in set(self.running) - wanted:
            sender, task = self.running.pop(url)
            task.cancel()
            self.reporter.senders.remove(sender)
            log.info("stat reports to %s: %s left", self.name, url)
        for url in sorted(wanted - set(self.running)):
            sender = self.make(self.name, url)
            self.reporter.senders.append(sender)
            self.running[url] = (sender, asyncio.get_running_loop().create_task(sender.run(), name=f"stats:{url}"))
            log.info("stat reports to %s: %s joined", self.name, url)

    async def close(self) -> None:
        for sender, task in self.running.values():
            task.cancel()
            self.reporter.senders.remove(sender)
        await asyncio.gather(*(task for _, task in self.running.values()), return_exceptions=True)
        self.running.clear()
