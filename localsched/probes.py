"""Readiness probes: which port a probe means, and the probe on the wire (a TCP connect, or one HTTP GET read up to
its status line).

A probe's port is read the way Knative reads it, in one place for the activator and the devcluster's Knative
stand-in: Knative's defaulting writes a probe without a port (``tcpSocket: {}`` marshals to ``port: 0``), and its
revision reconciler reads port 0 as the user port, the serving container's. Reading 0 literally would probe a port
nothing listens on (and the API server refuses port 0 in a Deployment).

What the kubelet's prober does (and Knative's activator, for its own checks): a fresh connection per probe, no
redirects followed, 200-399 is success (``pkg/probe/http``). Written on asyncio streams rather than an HTTP client
library: a probe is tried every few tens of milliseconds against each starting pod, and a full client (resolver,
connection pool, proxy lookup from the environment) costs several times the CPU for nothing a probe needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

USER_AGENT = "localsched-probe"
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # as the kubelet: an HTTPS probe does not verify the certificate


def serving_container_index(containers: Sequence[Any]) -> int | None:
    """Which container serves: the first whose first port declares a ``containerPort`` (Knative allows one such
    container), else the first; None without containers.

    The same rule as the user port in :class:`localsched.knative.Revision`, so the probe read and the port it
    defaults to belong to one container even when a sidecar is listed first.
    """
    for i, container in enumerate(containers):
        ports = (container.get("ports") or []) if isinstance(container, Mapping) else []
        if isinstance(ports, list) and ports and isinstance(ports[0], Mapping) and "containerPort" in ports[0]:
            return i
    return 0 if containers else None


def means_user_port(value: object) -> bool:
    """Whether a probe's ``port`` stands for the user port: absent, empty, ``0`` or ``"0"``.

    Knative's reconciler tests ``IntOrString.IntValue() == 0``, which also covers ``"00"``; a named port is not
    covered here (it names a port of the container, which Kubernetes resolves).
    """
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == 0
    return isinstance(value, str) and value.isascii() and value.isdigit() and int(value) == 0


def probe_port(value: object, container: Mapping[str, Any], user_port: int) -> int:
    """The port a probe of ``container`` connects to: the user port for :func:`means_user_port`, a number as
    given, a name looked up in the container's ports. ValueError for an unknown name or a port outside 1..65535
    (the kubelet would never run such a probe)."""
    if means_user_port(value):
        return user_port
    port: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        port = int(value)
    elif isinstance(value, str):
        for declared in container.get("ports") or []:
            if isinstance(declared, Mapping) and declared.get("name") == value:
                number = declared.get("containerPort")
                port = number if isinstance(number, int) and not isinstance(number, bool) else None
                break
        else:
            raise ValueError(f"probe port {value!r} names no port of the container")
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"probe port {value!r} is not a port number (1..65535)")
    return port


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
