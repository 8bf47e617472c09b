"""The proxy's listening socket: what a connection may cost before a request reaches the handler.

aiohttp serves the requests; this module bounds what clients can hold and answers what aiohttp's parser refuses
with the status a client can act on:

- **Connections**: at most ``max_connections`` open at once. One more is answered at once, without reading it,
  ``503`` with ``Retry-After: 1`` and closed, and counted (``activator_connections_refused_total``): the activator
  keeps its file descriptors for the requests it holds, and a client learns to back off.
- **Time to send a request head**: a connection that has not sent a complete request line and headers within
  ``idle_timeout`` after it opened, or after its last response, is closed (aiohttp's keep-alive timer, which a
  trickling client does not reset). Idle keep-alive connections close after the same time.
- **Sizes**: a request line over :data:`MAX_REQUEST_LINE` bytes is ``414``; a header line over
  :data:`MAX_HEADER_LINE` bytes or more than :data:`MAX_HEADERS` headers is ``431``; anything else the parser
  refuses is ``400``. Each is counted in ``activator_refusals_total`` with empty namespace and revision.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8190  # as aiohttp's, nginx's large_client_header_buffers (8k) and Go's default
MAX_HEADER_LINE = 16384  # one header line (cookies and JWTs run long)
MAX_HEADERS = 128  # header lines per request
FD_RESERVE = 1024  # descriptors beyond the client connections: upstream connections, API watches, files

OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 56\r\n\r\n"
              b"activator: too many open connections; retry in a second\n")  # fmt: skip


def _refusal(exc: BaseException | None) -> tuple[int, str, str]:
    """(status, reason label, message) for what aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_REQUEST_LINE:
            return 414, "request_line_too_long", f"request line over {MAX_REQUEST_LINE} bytes"
        return 431, "headers_too_large", f"a header line over {MAX_HEADER_LINE} bytes"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
        return 431, "headers_too_large", f"more than {MAX_HEADERS} headers"
    return 400, "bad_request", "malformed HTTP request"


class ProxyRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering parse errors with 414, 431 or 400 (counted), and telling the
    listener when its connection ends."""

    refusals: Counter | None = None
    on_lost: Callable[[], None] | None = None

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 400:  # not a parse error: aiohttp's own 500 handling
            return super().handle_error(request, status, exc, message)
        code, reason, text = _refusal(exc)
        if self.refusals is not None:
            self.refusals.labels("", "", reason).inc()
        log.debug("refused a malformed request (%d %s): %s", code, reason, exc)
        response = web.Response(status=code, text=f"activator: {text}\n")
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.on_lost is not None:
                self.on_lost()
                self.on_lost = None


class _Overloaded(asyncio.Protocol):
    """A connection past the limit: answered 503 at once, its request discarded unread, closed within a second.

    Closing with the client's request still unread would reset the connection (RST) and could destroy the answer
    before the client reads it; so the answer is followed by a FIN, what the client sends is dropped, and the
    connection is closed when the client closes it, or after :data:`LINGER` seconds."""

    LINGER = 1.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        transport.write(OVERLOADED)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded: the answer does not depend on it

    def eof_received(self) -> bool:
        return False  # the client is done too: close


class Listener:
    """The proxy port: a server socket whose connections are served by ``runner``'s aiohttp server, bounded."""

    def __init__(
        self,
        runner: web.AppRunner,
        *,
        max_connections: int,
        idle_timeout: float,
        open_connections: Gauge,
        refused: Counter,
        refusals: Counter,
    ) -> None:
        self.runner = runner
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.open = 0
        self._gauge = open_connections
        self._refused = refused
        self._refusals = refusals
        self._server: asyncio.Server | None = None

    def _closed(self) -> None:
        self.open -= 1
        self._gauge.set(self.open)

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            self._refused.inc()
            return _Overloaded()
        manager = self.runner.server
        assert manager is not None, "the runner is set up before the listener starts"
        # access_log None: no access log (aiohttp's own runner passes the same; its annotation says Logger).
        handler = ProxyRequestHandler(manager, loop=asyncio.get_running_loop(), access_log=None,  # type: ignore[arg-type]
                           keepalive_timeout=self.idle_timeout, max_line_size=MAX_REQUEST_LINE,
                           max_field_size=MAX_HEADER_LINE, max_headers=MAX_HEADERS)  # fmt: skip
        handler.refusals = self._refusals
        handler.on_lost = self._closed
        self.open += 1
        self._gauge.set(self.open)
        return handler

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        raise_fd_limit(self.max_connections + FD_RESERVE)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port, backlog=backlog, reuse_address=True)

    def close(self) -> None:
        """Stop accepting; connections already open are the runner's to finish (``runner.cleanup()``)."""
        if self._server is not None:
            self._server.close()
            self._server = None


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (RLIMIT_NOFILE) toward ``wanted``, as far as the hard limit allows;
    returns the soft limit in force. Container runtimes often start processes at a soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open-file limit %d is below --max-connections + %d (%d): raise the container's nofile limit",
                    soft, FD_RESERVE, wanted)  # fmt: skip
    return int(soft)
