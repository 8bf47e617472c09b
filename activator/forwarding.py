"""Forwarding one request to one endpoint: bodies streamed both ways, never buffered whole.

One shared ClientSession (owned by the app) carries every request. Redirects are passed back, not followed;
bodies are passed through untouched (no decompression). Connect failures surface as aiohttp's own exceptions so
the retry decision (``retrying.retry_reason``) can tell "never reached the pod" from "may have been delivered".
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from activator.retrying import NotDelivered
from activator.routing import forward_headers, response_headers
from activator.throttling import Endpoint

CHUNK = 64 * 1024


def unacked_timeout_socket(timeout: float) -> Callable[[Any], socket.socket]:
    """A socket factory setting TCP_USER_TIMEOUT: a peer that stops acknowledging is cut off after ``timeout``."""

    def create(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family, type_, proto)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(timeout * 1000)))
        return sock

    return create


def new_session(*, connect_timeout: float, limit_per_host: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=limit_per_host,
        enable_cleanup_closed=True,
        socket_factory=unacked_timeout_socket(connect_timeout),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        trust_env=False,
        skip_auto_headers=("User-Agent", "Content-Type"),
    )
    # aiohttp silently resends an idempotent request once when a reused connection fails, even if the pod may
    # have received it (RFC 9112 allows that); our contract is stricter: never replay what may have been
    # delivered. There is no public switch, hence the private attribute (pinned by a unit test).
    session._retry_connection = False
    return session


class UpstreamFailed(Exception):
    """The pod failed after the response had started: nothing more can be said to the client."""


class BodyTooLarge(Exception):
    """The request body passed the activator's limit (``--max-body-bytes``) while it was being streamed."""


class LimitedBody:
    """A request body streamed through, stopped once it passes ``limit`` bytes (a chunked body has no length to
    refuse it by upfront). ``exceeded`` tells the forwarder why the upstream request failed."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.sent = 0
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.content.iter_chunked(CHUNK):
            self.sent += len(chunk)
            if self.sent > self.limit:
                self.exceeded = True
                raise BodyTooLarge(f"request body over {self.limit} bytes")
            yield chunk


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, *, connect_timeout: float, max_body_bytes: int = 0) -> None:
        self.session = session
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes

    async def forward(
        self,
        request: web.Request,
        endpoint: Endpoint,
        *,
        timeout: float,
        on_headers: Callable[[], None] | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` to ``endpoint`` and stream the answer back; ``timeout`` bounds the whole exchange.
        ``on_headers`` is called when the pod's response headers arrive (its first byte)."""
        url = f"{endpoint.url}{request.rel_url}"
        headers = forward_headers(request.headers, client_ip=request.remote)
        if is_websocket(request):
            return await self.forward_websocket(request, endpoint, on_headers=on_headers)
        limited = LimitedBody(request.content, self.max_body_bytes) if self.max_body_bytes else None
        body: Any = (limited or request.content) if request.body_exists else None
        deadline = asyncio.get_running_loop().time() + timeout
        client_timeout = aiohttp.ClientTimeout(
            total=timeout, connect=self.connect_timeout, sock_connect=self.connect_timeout
        )
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False, timeout=client_timeout
            )
        except Exception as exc:
            if limited is not None and limited.exceeded:
                raise BodyTooLarge(f"request body over {self.max_body_bytes} bytes") from exc
            if not isinstance(exc, aiohttp.ClientOSError):
                raise
            unacknowledged = exc.errno == errno.ETIMEDOUT and not isinstance(exc, aiohttp.ClientConnectorError)
            if unacknowledged and body is None:
                raise NotDelivered(f"{endpoint.url} never acknowledged the request ({exc})") from exc
            raise
        if on_headers is not None:
            on_headers()
        async with upstream:  # releases the connection
            headers = response_headers(upstream.headers)
            if _complete(request, upstream):
                # The pod's whole answer arrived with its headers: pass it on in one write, as nothing is left to
                # stream (a streamed response costs a write for the headers, each chunk and the end).
                return web.Response(status=upstream.status, reason=upstream.reason, headers=headers,
                                    body=upstream.content.read_nowait())  # fmt: skip
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            try:
                # The revision's timeout bounds the whole exchange, writes to the client included: a client that
                # stops reading holds the pod's connection until then, never longer (what is buffered meanwhile
                # is bounded by the transports' flow control).
                async with asyncio.timeout_at(deadline):
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailed(f"{endpoint.url} failed mid-response: {exc!r}") from exc
            await response.write_eof()
            return response

    async def forward_websocket(
        self, request: web.Request, endpoint: Endpoint, *, on_headers: Callable[[], None] | None = None
    ) -> web.StreamResponse:
        """Open the WebSocket to the pod first (a refused connect is retried elsewhere, as any request), then
        accept the client's and relay messages both ways until either side closes. The revision's timeout does not
        apply to an open WebSocket (as in Knative); the request stays in flight as long as it is open."""
        headers = forward_headers(request.headers, client_ip=request.remote)
        for name in WEBSOCKET_HANDSHAKE:
            headers.popall(name, None)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        try:
            upstream = await self.session.ws_connect(
                f"{endpoint.url}{request.rel_url}", headers=headers, protocols=offered, autoclose=False,
                max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
            )  # fmt: skip
        except aiohttp.WSServerHandshakeError as exc:  # the pod answered, without switching protocols
            return web.Response(status=exc.status or 502, text=f"the revision refused the WebSocket: {exc.message}\n")
        if on_headers is not None:
            on_headers()
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0)
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        await relay_websockets(client, upstream)
        return client


# The client's handshake headers: the activator makes its own handshake with the pod (aiohttp's key and version).
WEBSOCKET_HANDSHAKE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                       "Sec-WebSocket-Protocol", "Sec-WebSocket-Accept")  # fmt: skip


def is_websocket(request: web.Request) -> bool:
    """A WebSocket opening handshake (RFC 6455 section 4.1): ``Upgrade: websocket`` with ``Connection: upgrade``."""
    connection = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
    return request.headers.get("Upgrade", "").strip().lower() == "websocket" and "upgrade" in connection


async def _relay(source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                 sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:  # fmt: skip
    """Every message from ``source`` to ``sink`` until ``source`` closes; then close ``sink`` with its code."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
    await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)


async def relay_websockets(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Both directions until either side closes; the other is closed with the same code."""
    tasks = [asyncio.ensure_future(_relay(client, upstream)), asyncio.ensure_future(_relay(upstream, client))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()


def _complete(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """Whether the upstream's body (framed by Content-Length) is already all in, with nothing waiting for it."""
    return (
        request.method != "HEAD"
        and upstream.content_length is not None
        and upstream.content.is_eof()
        and upstream.content.exception() is None
    )
