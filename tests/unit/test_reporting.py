"""The activator's demand reports: Knative's wire format byte for byte, the averaging, holds, and the sender."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from activator.reporting import Reporter, ReporterMetrics, Sender, ServiceSenders
from localsched.stats import Stat, StatMessage, WireFormatError, decode, encode
from tests.unit.support import Clock


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + varint(len(body)) + body


def double(tag: int, x: float) -> bytes:
    return bytes([tag]) + struct.pack("<d", x)


# What knative/serving's generated marshaller (pkg/autoscaler/metrics/protocol/stat.pb.go, gogo protobuf) writes,
# spelled out by hand from its MarshalToSizedBuffer: fields in ascending number, zero values left out;
# Stat: pod_name 0x0a (bytes), the five doubles 0x11 0x19 0x21 0x29 0x31 (fixed64, little endian), timestamp 0x38
# (varint); WireStatMessage: namespace 0x0a, name 0x12, stat 0x1a; WireStatMessages: messages 0x0a, repeated.
STAT = (
    length_delimited(0x0A, b"activator-x7k2p")
    + double(0x11, 2.5)
    + double(0x21, 3.0)
    + double(0x31, 12.25)
    + bytes([0x38])
    + varint(1_764_600_000)
)
FIRST = length_delimited(0x0A, b"default") + length_delimited(0x12, b"hello-00001") + length_delimited(0x1A, STAT)
ZERO_STAT = length_delimited(0x0A, b"activator-x7k2p")  # a report of nothing: every number is zero, so left out
SECOND = length_delimited(0x0A, b"shop") + length_delimited(0x12, b"cart-00003") + length_delimited(0x1A, ZERO_STAT)
KNATIVE_BYTES = length_delimited(0x0A, FIRST) + length_delimited(0x0A, SECOND)

MESSAGES = [
    StatMessage("default", "hello-00001", Stat("activator-x7k2p", average_concurrent_requests=2.5,
                                                request_count=3.0, process_uptime=12.25, timestamp=1_764_600_000)),
    StatMessage("shop", "cart-00003", Stat("activator-x7k2p")),
]  # fmt: skip


def test_the_reports_are_knatives_wire_format_byte_for_byte() -> None:
    assert encode(MESSAGES) == KNATIVE_BYTES
    assert decode(KNATIVE_BYTES) == MESSAGES


def test_bytes_that_are_no_wire_stat_messages_are_an_error_and_a_message_without_stat_is_skipped() -> None:
    with pytest.raises(WireFormatError):
        decode(b"\x0a\xff\xff")
    no_stat = length_delimited(0x0A, length_delimited(0x0A, b"ns") + length_delimited(0x12, b"rev"))
    assert decode(no_stat) == []


class Collecting:
    """A sender stand-in that keeps what it is given (the reporter's output, decoded)."""

    def __init__(self, autoscaler: bool = True) -> None:
        self.autoscaler = autoscaler
        self.reports: list[list[StatMessage]] = []

    def put(self, payload: bytes) -> None:
        self.reports.append(decode(payload))


def reporter(clock: Clock) -> tuple[Reporter, Collecting]:
    """A reporter with a collecting autoscaler; ``endpointsctl(rep)`` adds a collecting endpointsctl."""
    sink = Collecting()
    return Reporter("activator-a", [sink], clock=clock, wall=lambda: 1_764_600_000.0), sink  # type: ignore[list-item]


def endpointsctl(rep: Reporter) -> Collecting:
    sink = Collecting(autoscaler=False)
    rep.senders.append(sink)  # type: ignore[arg-type]
    return sink


def test_concurrency_is_averaged_over_the_period_and_an_idle_revision_is_reported_once_then_forgotten() -> None:
    clock = Clock()
    rep, sink = reporter(clock)
    rep.request_in("ns/a")  # 1 request for the whole second
    clock.now += 0.5
    rep.request_in("ns/a")  # a second one for its last half
    clock.now += 0.5
    [[first]] = [rep.tick()]
    assert (first.key, first.stat.average_concurrent_requests, first.stat.request_count) == ("ns/a", 1.5, 2.0)
    assert first.stat.pod_name == "activator-a"
    assert first.stat.timestamp == 1_764_600_000
    rep.request_out("ns/a")
    rep.request_out("ns/a")  # both done at once, at the start of the period
    clock.now += 1.0
    [second] = rep.tick()
    assert second.stat.average_concurrent_requests == 0.0
    assert rep.tick() == []  # said "nothing" once: forgotten
    assert len(sink.reports) == 2


def test_a_local_cold_start_holds_the_autoscalers_report_until_its_claim_is_decided_not_endpointsctls() -> None:
    clock = Clock()
    rep, sink = reporter(clock)
    keda = endpointsctl(rep)
    rep.request_in("ns/a")
    rep.flush_first()  # the first request: at once to endpointsctl (KEDA), not to the autoscaler
    rep.hold("ns/a")
    assert [[m.key for m in r] for r in keda.reports] == [["ns/a"]]
    assert sink.reports == []
    clock.now += 1.0
    assert rep.tick() == []
    assert [m.key for m in keda.reports[-1]] == ["ns/a"]  # endpointsctl goes on hearing of it
    rep.release("ns/a")
    [[now]] = sink.reports
    assert now.stat.average_concurrent_requests == 1.0
    clock.now += 1.0
    [after] = rep.tick()
    assert after.stat.average_concurrent_requests == pytest.approx(1.0)


def test_a_hold_lapses_by_itself_and_the_standard_path_reports_at_once() -> None:
    clock = Clock()
    rep, sink = reporter(clock)
    rep.request_in("ns/a")
    rep.hold("ns/a")
    clock.now += rep.hold_limit + 0.1
    assert [m.key for m in rep.tick()] == ["ns/a"]
    rep.report_now("ns/b")  # the standard path: at least one request, even before the throttler counted it
    [b] = sink.reports[-1]
    assert (b.key, b.stat.average_concurrent_requests, b.stat.request_count) == ("ns/b", 1.0, 1.0)


async def test_the_sender_delivers_reconnects_after_the_server_goes_away_and_drops_the_oldest_when_full() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    connections: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()

    async def stats(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await connections.put(ws)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                await received.put(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    registry = CollectorRegistry()
    metrics = ReporterMetrics.create(registry)
    async with aiohttp.ClientSession() as session:
        sender = Sender("autoscaler", f"ws://127.0.0.1:{port}/", session, metrics, buffer=2, backoff=(0.01, 0.05))
        task = asyncio.create_task(sender.run())
        try:
            sender.put(b"one")
            async with asyncio.timeout(10):
                assert await received.get() == b"one"
                first = await connections.get()
                await first.close()  # the autoscaler restarts: the sender reconnects by itself
                second = await connections.get()
                sender.put(b"two")
                assert await received.get() == b"two"
                assert second is not first
            assert registry.get_sample_value("activator_stat_connects_total",
                                             {"destination": "autoscaler", "outcome": "connected"}) == 2  # fmt: skip
        finally:
            task.cancel()
            await runner.cleanup()
    for payload in (b"a", b"b", b"c"):
        sender.put(payload)  # nobody listening: a bounded buffer
    assert list(sender.buffer) == [b"b", b"c"]
    assert registry.get_sample_value("activator_stat_reports_total",
                                     {"destination": "autoscaler", "outcome": "dropped"}) == 1  # fmt: skip


class Slices:
    """What ServiceSenders reads of a WatchCache: iteration and change handlers."""

    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []
        self.handlers: list[object] = []

    def add_handler(self, handler: object) -> None:
        self.handlers.append(handler)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def publish(self, *addresses: str, terminating: str = "") -> None:
        endpoints = [{"addresses": [a], "conditions": {"ready": False}} for a in addresses]
        if terminating:
            endpoints.append({"addresses": [terminating], "conditions": {"terminating": True}})
        self.items = [{"ports": [{"name": "http-stats", "port": 9090}], "endpoints": endpoints}]
        for handler in self.handlers:
            handler(None)  # type: ignore[operator]


async def test_every_endpointsctl_replica_gets_a_sender_and_loses_it_when_it_goes() -> None:
    clock = Clock()
    rep = Reporter("activator-a", [], clock=clock)
    metrics = ReporterMetrics.create(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        slices = Slices()
        pool = ServiceSenders("endpointsctl", slices, rep,  # type: ignore[arg-type]
                              lambda name, url: Sender(name, url, session, metrics))  # fmt: skip
        slices.publish("127.0.0.7", "127.0.0.8", terminating="127.0.0.9")  # not-ready replicas count: they will be
        assert sorted(s.url for s in rep.senders) == ["ws://127.0.0.7:9090/stats", "ws://127.0.0.8:9090/stats"]
        slices.publish("127.0.0.8")
        assert [s.url for s in rep.senders] == ["ws://127.0.0.8:9090/stats"]
        await pool.close()
        assert rep.senders == []
