"""A fixed-rate (open-loop) HTTP/1.1 load generator on raw asyncio streams, for latency at a given request rate.

A closed loop (wrk, ``harness.closed_loop``) measures throughput at saturation; latency there is mostly queueing.
Added latency is measured at a moderate fixed rate instead: request ``i`` is due at ``start + i / rate`` and its
latency runs from when it was due, not from when it was sent, so a slow server cannot slow the generator down and
hide its own delay (no coordinated omission). Each request takes an idle keep-alive connection or opens one.
Bounded: ``rate * seconds`` requests, each with its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def fixed_rate(
    url: str, headers: dict[str, str], *, rate: float, seconds: float, timeout: float = 10.0
) -> LatencySummary:
    """``rate`` GET requests a second to ``url`` for ``seconds``; latency from each request's due time."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
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
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse) as exc:
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
