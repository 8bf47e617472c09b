"""HTTP/1.1 load on raw asyncio streams: a fixed-rate open loop for latency, a closed loop for throughput.

Both keep their own cost per request small (no HTTP client library), so the generator is not what is measured.

- ``fixed_rate``: request ``i`` is due at ``start + i / rate`` and its latency runs from when it was due, not from
  when it was sent, so a slow server cannot slow the generator down and hide its own delay (no coordinated
  omission). Each request takes an idle keep-alive connection or opens one. Bounded: ``rate * seconds`` requests.
- ``back_to_back``: ``concurrency`` connections each sending the next request as soon as the last is answered, for
  ``seconds`` or ``max_requests`` (throughput at saturation; wrk does the same in C when it is installed).

Any failed request fails the run: every response must be 200 with a Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

from loadtest.harness import LatencySummary

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class BadResponse(Exception):
    pass


async def _exchange(conn: Connection, request: bytes) -> tuple[int, bool]:
    """Send one request and read its response; the status, and whether the connection may be reused."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    reusable = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "connection":
            reusable = value.strip().lower() != "close"
        elif name.strip().lower() == "transfer-encoding":
            raise BadResponse(f"unsupported Transfer-Encoding {value.strip()!r}: the generator reads Content-Length")
    if length is None:
        raise BadResponse("response without Content-Length")
    await reader.readexactly(length)
    return status, reusable


def _target(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


FAILURES = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse)


async def back_to_back(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float, max_requests: int, timeout: float = 10.0
) -> LatencySummary:
    """``concurrency`` keep-alive connections sending GET requests back to back; throughput and latency."""
    host, port, request = _target(url, headers)
    latencies: list[float] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds

    sent = 0

    async def worker() -> None:
        nonlocal sent
        conn: Connection | None = None
        try:
            while loop.time() < deadline and sent < max_requests:
                sent += 1
                started = time.perf_counter()
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                    status, reusable = await asyncio.wait_for(_exchange(conn, request), timeout)
                except FAILURES as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                if status != 200:
                    errors.append(f"status {status}")
                else:
                    latencies.append(time.perf_counter() - started)
                if not reusable:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if errors:
        raise RuntimeError(f"{len(errors)} requests to {url} failed, e.g. {errors[:3]}")
    return LatencySummary.of(latencies, 0, loop.time() - start)


async def fixed_rate(
    url: str, headers: dict[str, str], *, rate: float, seconds: float, timeout: float = 10.0
) -> LatencySummary:
    """``rate`` GET requests a second to ``url`` for ``seconds``; latency from each request's due time."""
    host, port, request = _target(url, headers)
    idle: list[Connection] = []
    opened: list[Connection] = []
    latencies: list[float] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()

    async def one(due: float) -> None:
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                opened.append(conn)
            status, reusable = await asyncio.wait_for(_exchange(conn, request), timeout)
        except FAILURES as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn[1].close()
            return
        if status != 200:
            errors.append(f"status {status}")
        else:
            latencies.append(loop.time() - due)
        if reusable:
            idle.append(conn)
        else:
            conn[1].close()

    total = max(1, round(rate * seconds))
    start = loop.time() + 0.01
    tasks = []
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    finally:
        for _, writer in opened:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if errors:
        raise RuntimeError(f"{len(errors)} of {total} requests to {url} failed, e.g. {errors[:3]}")
    return LatencySummary.of(latencies, 0, loop.time() - start)
