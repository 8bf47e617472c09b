"""Readiness probes on the wire: a TCP connect, or one HTTP GET read up to its status line.

What the kubelet's prober does (and Knative's activator, for its own checks): a fresh connection per probe, no
redirects followed, 200-399 is success (``pkg/probe/http``). Written on asyncio streams rather than an HTTP client
library: a probe is tried every few tens of milliseconds against each starting pod, and a full client (resolver,
connection pool, proxy lookup from the environment) costs several times the CPU for nothing a probe needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable

USER_AGENT = "localsched-probe"
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # as the kubelet: an HTTPS probe does not verify the certificate


async def tcp_open(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def http_status(
    host: str,
    port: int,
    path: str = "/",
    *,
    timeout: float,
    headers: Iterable[tuple[str, str]] = (),
    https: bool = False,
) -> int | None:
    """The status code of ``GET path`` on a fresh connection, or None (refused, reset, timeout, not HTTP)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n{extra}Connection: close\r\n\r\n"
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=_INSECURE if https else None)
            writer.write(request.encode("latin-1"))
            line = await reader.readline()
    except (OSError, TimeoutError, UnicodeEncodeError, ValueError):  # ValueError: no line end within 64 KiB
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = line.rstrip(b"\r\n").split(b" ", 2)  # "HTTP/1.1 200 OK", or without the reason (Go accepts it)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status < 400
