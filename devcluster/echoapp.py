"""The echo app: a revision that speaks WebSocket, for the activator's upgrade path.

Binds ``POD_IP``:``PORT``; ``GET /healthz`` answers 200, ``GET /ws`` is a WebSocket that echoes each message back
(text as text, binary as binary) with the subprotocol the client offered first, and ``GET /`` answers which pod
and node served it. Run as ``python -m devcluster.echoapp``.
"""

from __future__ import annotations

import os

from aiohttp import WSMsgType, web


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def index(_: web.Request) -> web.Response:
    return web.json_response({"pod": os.environ.get("POD_NAME", ""), "node": os.environ.get("NODE_NAME", "")})


async def echo(request: web.Request) -> web.WebSocketResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    ws = web.WebSocketResponse(protocols=offered[:1])
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", echo)
    app.router.add_get("/", index)
    web.run_app(app, host=os.environ.get("POD_IP", "0.0.0.0"), port=int(os.environ.get("PORT", "8080")),
                print=None, access_log=None)  # fmt: skip


if __name__ == "__main__":
    main()
