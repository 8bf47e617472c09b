"""The raw load generators: the count they promise, latency from the due time, loud failure on bad answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from loadtest.rawload import back_to_back, fixed_rate

Answer = Callable[[bytes], bytes]
Start = Callable[..., Awaitable[str]]  # a server answering with ``answer``; its URL


def ok(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def serve(answer: Answer, seen: list[bytes], delay: float = 0.0) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                if delay:  # a slow server: the answer leaves ``delay`` after the request came
                    answered = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_later(delay, answered.set_result, None)
                    await answered
                writer.write(answer(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def server_url() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer = ok, seen: list[bytes] | None = None, delay: float = 0.0) -> str:
        server = await serve(answer, seen if seen is not None else [], delay)
        servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/path"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_sends_rate_times_seconds_requests_with_the_given_headers(server_url: Start) -> None:
    seen: list[bytes] = []
    url = await server_url(seen=seen)
    summary = await fixed_rate(url, {"Knative-Serving-Revision": "r-1"}, rate=200, seconds=0.5)
    assert summary.requests == 100
    assert summary.errors == 0
    assert len(seen) == 100
    assert seen[0].startswith(b"GET /path HTTP/1.1\r\n")
    assert b"\r\nKnative-Serving-Revision: r-1\r\n" in seen[0]
    assert 0.45 <= summary.seconds < 1.5


async def test_latency_runs_from_the_due_time(server_url: Start) -> None:
    url = await server_url(delay=0.05)
    summary = await fixed_rate(url, {}, rate=100, seconds=0.3)
    assert summary.p50_ms >= 50


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda _: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "status 503"),
        (lambda _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding"),
        (lambda _: b"HTTP/1.1 200 OK\r\n\r\n", "without Content-Length"),
    ],
    ids=["error-status", "chunked", "no-length"],
)
async def test_any_failed_request_fails_the_run(server_url: Start, answer: Answer, reason: str) -> None:
    url = await server_url(answer)
    with pytest.raises(RuntimeError, match=reason):
        await fixed_rate(url, {}, rate=100, seconds=0.1)


async def test_a_refused_connection_fails_the_run() -> None:
    with pytest.raises(RuntimeError, match="ConnectionRefused"):
        await fixed_rate("http://127.0.0.1:9/", {}, rate=50, seconds=0.1, timeout=2)


async def test_back_to_back_keeps_its_connections_busy_and_counts_every_answer(server_url: Start) -> None:
    seen: list[bytes] = []
    url = await server_url(seen=seen)
    summary = await back_to_back(url, {"X-A": "1"}, concurrency=4, seconds=0.3, max_requests=200)
    assert summary.requests == len(seen) == 200  # the cap, long before 0.3 s on loopback
    assert summary.errors == 0
    assert b"\r\nX-A: 1\r\n" in seen[0]


async def test_back_to_back_fails_the_run_on_an_error_status(server_url: Start) -> None:
    url = await server_url(lambda _: b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(RuntimeError, match="status 502"):
        await back_to_back(url, {}, concurrency=2, seconds=0.1, max_requests=10)
