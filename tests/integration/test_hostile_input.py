"""Hostile and malformed clients against a running activator: each gets a defined answer, nothing crashes, and the
requests of everyone else keep being served (activator/listening.py, activator/proxying.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from devcluster.samples import sample_revision
from localsched.kube.client import KubeClient
from tests.integration.activators import Activator, running_activator
from tests.integration.conftest import TEST_IP_BASE
from tests.integration.kit import Cluster, create_revision, poll_until

ACTIVATOR_IP = f"{TEST_IP_BASE}.1.249"  # on node-1's range, apart from the addresses its pods get
IDLE = 2.0  # --idle-timeout-seconds of these activators


async def raw(activator: Activator, data: bytes, *, read_timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the activator closes it (or ``read_timeout``)."""
    reader, writer = await asyncio.open_connection(activator.ip, activator.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
async def warm(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[tuple[Activator, dict[str, str]]]:
    """An activator with tight limits and a revision it has served once (warm), with its routing headers."""
    await create_revision(kube, sample_revision("warm-00001", namespace, timeout_seconds=5))
    settings = {"idle_timeout_seconds": str(IDLE), "max_connections": "40", "max_body_bytes": str(1 << 20)}
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, **settings) as act:
        headers = act.headers(namespace, "warm-00001")
        first = await http.get(f"{act.url}/", headers=headers, timeout=60)
        assert first.status_code == 200
        yield act, headers


async def test_trickled_headers_are_cut_at_the_idle_timeout_and_others_keep_their_latency(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient
) -> None:
    activator, headers = warm

    async def latencies(n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = time.monotonic()
            assert (await http.get(f"{activator.url}/", headers=headers)).status_code == 200
            out.append(time.monotonic() - started)
        return out

    before = statistics.median(await latencies(20))
    rss_before = rss_bytes(activator.process.pid)

    async def trickle() -> float:
        """A request head sent one byte every 100 ms; returns how long until the activator closed it."""
        reader, writer = await asyncio.open_connection(activator.ip, activator.port)
        started = time.monotonic()
        head = b"GET / HTTP/1.1\r\nHost: warm-00001.x.svc\r\nX-Slow: " + b"a" * 1000
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                if reader.at_eof():
                    break
                try:  # pace the trickle; an EOF from the activator ends it early
                    await asyncio.wait_for(reader.read(1), 0.1)
                    break
                except TimeoutError:
                    continue
            return time.monotonic() - started
        except ConnectionError:
            return time.monotonic() - started
        finally:
            writer.close()

    trickles = [asyncio.create_task(trickle()) for _ in range(30)]
    during = statistics.median(await latencies(20))
    held = await asyncio.gather(*trickles)
    assert max(held) < IDLE + 1.5, f"trickling connections were held {max(held):.1f}s (idle timeout {IDLE}s)"
    assert min(held) >= IDLE - 0.2
    print(f"\nmedian latency {before * 1000:.1f} ms alone, {during * 1000:.1f} ms beside 30 trickling clients")
    assert during < before * 3 + 0.02
    assert rss_bytes(activator.process.pid) < rss_before + 20 * 2**20
    assert await activator.metric(http, "activator_open_connections") <= 2


async def test_oversized_and_malformed_requests_get_their_status(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient, namespace: str
) -> None:
    activator, headers = warm
    routing = f"Knative-Serving-Namespace: {namespace}\r\nKnative-Serving-Revision: warm-00001\r\n".encode()
    cases = {
        "request line over 8190 bytes": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        "header line over 16 KiB": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        "more than 128 headers": (
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
            431,
        ),
        "invalid percent-encoding": (b"GET /a%zzb HTTP/1.1\r\nHost: x\r\n" + routing + b"\r\n", 400),
        "control character in Host": (b"GET / HTTP/1.1\r\nHost: \x01bad\r\n\r\n", 400),
        "not HTTP at all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 400),
        "unknown revision by Host": (b"GET / HTTP/1.1\r\nHost: nope-00001.nowhere.svc\r\n\r\n", 404),
        "a Host that names nothing": (b"GET / HTTP/1.1\r\nHost: ..:\r\n\r\n", 404),
    }
    answers = {name: status_of(await raw(activator, data)) for name, (data, _) in cases.items()}
    assert answers == {name: status for name, (_, status) in cases.items()}
    assert await activator.metric(http, "activator_refusals_total", reason="request_line_too_long") == 1
    assert await activator.metric(http, "activator_refusals_total", reason="headers_too_large") == 2
    assert await activator.metric(http, "activator_refusals_total", reason="bad_request_target") == 1
    assert (await http.get(f"{activator.url}/", headers=headers)).status_code == 200  # still serving
    assert activator.process.returncode is None


async def test_bodies_over_the_limit_are_refused_with_413_by_length_or_while_streamed(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient
) -> None:
    activator, headers = warm
    small = os.urandom(512 * 1024)
    ok = await http.post(f"{activator.url}/upload", content=small, headers=headers)
    assert (ok.status_code, ok.json()["sha256"]) == (200, hashlib.sha256(small).hexdigest())

    by_length = await http.post(f"{activator.url}/upload", content=os.urandom(2 << 20), headers=headers)
    assert by_length.status_code == 413

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(32):
            yield os.urandom(64 * 1024)

    streamed = await http.post(f"{activator.url}/upload", content=chunked(), headers=headers)
    assert streamed.status_code == 413
    assert "not forwarded whole" in streamed.text
    assert await activator.metric(http, "activator_refusals_total", reason="body_too_large") == 2
    assert (await http.get(f"{activator.url}/", headers=headers)).status_code == 200


async def test_a_client_that_stops_reading_holds_the_pod_no_longer_than_the_revision_timeout(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient, namespace: str
) -> None:
    activator, headers = warm
    reader, writer = await asyncio.open_connection(activator.ip, activator.port)
    request = (f"GET /bytes?n={200 << 20} HTTP/1.1\r\nHost: x\r\nKnative-Serving-Namespace: {namespace}\r\n"
               "Knative-Serving-Revision: warm-00001\r\n\r\n").encode()  # fmt: skip
    writer.write(request)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")  # the response started; from now on, never read
    started = time.monotonic()
    rss_before = rss_bytes(activator.process.pid)

    async def released() -> bool:
        return await activator.metric(http, "activator_in_flight_requests", revision="warm-00001") == 0

    await poll_until(released, 15, "the stalled response to release its in-flight slot")
    held = time.monotonic() - started
    writer.close()
    print(f"\na client that stopped reading held its upstream {held:.1f}s (revision timeout 5s)")
    assert held < 5 + 2
    assert rss_bytes(activator.process.pid) < rss_before + 20 * 2**20, "the response was buffered"
    assert (await http.get(f"{activator.url}/", headers=headers)).status_code == 200


async def test_connections_past_the_limit_are_refused_at_once_and_counted(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient
) -> None:
    activator, headers = warm
    await poll_until(lambda: _open_at_most(activator, http, 1), 10, "the fixture's connections to close")
    room = 40 - int(await activator.metric(http, "activator_open_connections"))  # the client pool may hold one
    idle = [await asyncio.open_connection(activator.ip, activator.port) for _ in range(room)]
    try:
        started = time.monotonic()
        answer = await raw(activator, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=2)
        assert time.monotonic() - started < 0.5
        assert status_of(answer) == 503
        assert b"Retry-After: 1" in answer
        assert await activator.metric(http, "activator_connections_refused_total") == 1
    finally:
        for _, writer in idle:
            writer.close()
    await poll_until(lambda: _open_at_most(activator, http, 1), 10, "the idle connections to be counted closed")
    assert (await http.get(f"{activator.url}/", headers=headers)).status_code == 200


async def _open_at_most(activator: Activator, http: httpx.AsyncClient, most: int) -> bool:
    return await activator.metric(http, "activator_open_connections") <= most


async def test_http10_pipelining_expect_continue_chunked_and_upgrades(
    warm: tuple[Activator, dict[str, str]], http: httpx.AsyncClient, namespace: str
) -> None:
    activator, _ = warm
    routing = f"Knative-Serving-Namespace: {namespace}\r\nKnative-Serving-Revision: warm-00001\r\n".encode()
    http10 = await raw(activator, b"GET / HTTP/1.0\r\n" + routing + b"\r\n")
    assert status_of(http10) == 200  # and the activator closed the connection: raw() read to EOF

    pipelined = await raw(activator, (b"GET /?n=1 HTTP/1.1\r\nHost: x\r\n" + routing + b"\r\n") * 2
                          + b"GET /?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + routing + b"\r\n")  # fmt: skip
    assert pipelined.count(b"HTTP/1.1 200 OK") == 3

    body = b"x" * 1000
    reader, writer = await asyncio.open_connection(activator.ip, activator.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n"
                 b"Connection: close\r\n" + routing + b"\r\n")  # fmt: skip
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    final = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert status_of(final) == 200
    assert hashlib.sha256(body).hexdigest().encode() in final

    chunked = await raw(activator, b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                        b"Connection: close\r\n" + routing + b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")  # fmt: skip
    assert status_of(chunked) == 200
    assert hashlib.sha256(b"hello world").hexdigest().encode() in chunked

    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    upgrade = await raw(activator, b"GET / HTTP/1.1\r\nHost: x\r\n" + h2c + routing + b"\r\n")
    assert status_of(upgrade) == 501
    assert b"WebSocket upgrades only" in upgrade
    assert await activator.metric(http, "activator_refusals_total", reason="upgrade_unsupported") == 1


async def test_a_client_gone_while_queued_frees_its_slot_and_the_cold_start_goes_on(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("gone-00001", namespace, startup_delay=5.0))
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator:
        headers = activator.headers(namespace, "gone-00001")
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        _, writer = await asyncio.open_connection(activator.ip, activator.port)
        writer.write(f"GET / HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        await writer.drain()

        async def queued() -> bool:
            return await activator.metric(http, "activator_queue_depth", revision="gone-00001") == 1

        await poll_until(queued, 10, "the request to be queued")
        writer.close()  # gone while its cold start runs

        async def freed() -> bool:
            return await activator.metric(http, "activator_queue_depth", revision="gone-00001") == 0

        # Within 3 s, while the pod (5 s to listen) cannot be ready yet: freed by the disconnect, not served.
        await poll_until(freed, 3, "the gone client's queue slot to be freed")
        answer = await http.get(f"{activator.url}/", headers=headers, timeout=60)
        assert answer.status_code == 200

        async def one_cold_start() -> bool:  # the first one, not cancelled: it served the second request
            return await activator.metric(http, "activator_cold_starts_total", revision="gone-00001") == 1

        await poll_until(one_cold_start, 10, "the cold start to be counted")


async def test_a_websocket_is_relayed_through_a_cold_start_both_ways(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    echo = sample_revision("echo-00001", namespace, command=[sys.executable, "-m", "devcluster.echoapp"])
    await create_revision(kube, echo)
    async with (
        running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator,
        aiohttp.ClientSession() as session,
    ):
        headers = activator.headers(namespace, "echo-00001")
        async with session.ws_connect(f"{activator.url}/ws", headers=headers, protocols=["chat.v2", "chat.v1"],
                                      timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:  # fmt: skip
            assert ws.protocol == "chat.v2"  # negotiated with the pod, end to end
            await ws.send_str("hello through a cold start")
            assert (await ws.receive(timeout=30)).data == "hello through a cold start"
            payload = os.urandom(300_000)
            await ws.send_bytes(payload)
            assert (await ws.receive(timeout=10)).data == payload
            assert await activator.metric(http, "activator_in_flight_requests", revision="echo-00001") == 1
        assert ws.close_code == aiohttp.WSCloseCode.OK

        async def released() -> bool:
            return await activator.metric(http, "activator_in_flight_requests", revision="echo-00001") == 0

        await poll_until(released, 10, "the closed WebSocket to leave the in-flight count")
        cold_starts = await activator.metric(
            http, "activator_cold_starts_total", revision="echo-00001", outcome="ready"
        )
        assert cold_starts == 1
