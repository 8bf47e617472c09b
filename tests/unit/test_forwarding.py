"""The forwarder between a client and a pod, both real aiohttp servers on loopback: what the client gets back.

A complete small answer goes out in one write; anything still arriving is streamed. Either way the client sees
the pod's status, headers (repeated ones too) and body, and a HEAD answer keeps the pod's Content-Length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from activator.forwarding import Forwarder, new_session
from activator.throttling import Endpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Through = Callable[[Handler], Awaitable[str]]  # the pod answering with a handler; the forwarder's URL


async def start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def through() -> AsyncIterator[Through]:
    """Serve ``handler`` as the pod and return the URL of a forwarder in front of it."""
    runners: list[web.AppRunner] = []
    session = new_session(connect_timeout=2)
    forwarder = Forwarder(session, connect_timeout=2)

    async def serve(handler: Handler) -> str:
        pod = web.Application()
        pod.router.add_route("*", "/{tail:.*}", handler)
        pod_runner, pod_port = await start(pod)
        endpoint = Endpoint("127.0.0.1", pod_port, "node-1")

        async def forward(request: web.Request) -> web.StreamResponse:
            return await forwarder.forward(request, endpoint, timeout=10)

        proxy = web.Application()
        proxy.router.add_route("*", "/{tail:.*}", forward)
        proxy_runner, proxy_port = await start(proxy)
        runners.extend([pod_runner, proxy_runner])
        return f"http://127.0.0.1:{proxy_port}"

    yield serve
    for runner in runners:
        await runner.cleanup()
    await session.close()


async def small(_: web.Request) -> web.Response:
    response = web.Response(status=201, text="hello", headers={"X-Pod": "1"})
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


async def test_a_complete_answer_keeps_status_headers_and_body(through: Through) -> None:
    url = await through(small)
    async with aiohttp.ClientSession() as client, client.get(f"{url}/x") as answer:
        assert answer.status == 201
        assert await answer.text() == "hello"
        assert answer.headers["X-Pod"] == "1"
        assert answer.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert answer.headers["Content-Length"] == "5"
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_head_keeps_the_pods_content_length(through: Through) -> None:
    async def head(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    url = await through(head)
    async with aiohttp.ClientSession() as client, client.head(f"{url}/") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Length"] == "1234"
        assert await answer.read() == b""


async def test_an_answer_still_arriving_is_streamed(through: Through) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10
        await response.prepare(request)
        await response.write(b"first")
        await release.wait()
        await response.write(b"later")
        return response

    url = await through(slow)
    async with aiohttp.ClientSession() as client, client.get(f"{url}/") as answer:
        assert answer.headers["Content-Length"] == "10"
        # The first part reaches the client while the pod is still holding back the rest.
        assert await asyncio.wait_for(answer.content.readexactly(5), 5) == b"first"
        release.set()
        assert await answer.content.read() == b"later"


async def test_a_chunked_answer_is_streamed_whole(through: Through) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"a" * 70_000, b"b" * 10):
            await response.write(part)
        return response

    url = await through(chunked)
    async with aiohttp.ClientSession() as client, client.get(f"{url}/") as answer:
        assert await answer.read() == b"a" * 70_000 + b"b" * 10


async def test_no_content_stays_empty(through: Through) -> None:
    async def empty(_: web.Request) -> web.Response:
        return web.Response(status=204)

    url = await through(empty)
    async with aiohttp.ClientSession() as client, client.delete(f"{url}/") as answer:
        assert answer.status == 204
        assert await answer.read() == b""
