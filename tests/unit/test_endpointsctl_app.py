"""The admin endpoints, with the aiohttp test client and no Kubernetes: the app's cleanup contexts (client,
controller) are left out, so the handlers see a process that has not connected yet or whose task failed."""

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from endpointsctl.app import SUPERVISOR, create_app
from endpointsctl.settings import Settings, Subsetting
from endpointsctl.subsetting.registry import SubsettingConfig, UnknownAlgorithmError


def bare_app() -> web.Application:
    app = create_app(Settings(), registry=CollectorRegistry())
    app.cleanup_ctx.clear()  # no API server here
    return app


async def client_for(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_before_the_caches_sync_the_process_is_live_but_not_ready() -> None:
    client = await client_for(bare_app())
    try:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "not synced" in await ready.text()
    finally:
        await client.close()


async def test_a_failed_background_task_fails_liveness_and_readiness_naming_it() -> None:
    app = bare_app()
    client = await client_for(app)
    try:

        async def broken() -> None:
            raise RuntimeError("watch loop crashed")

        task = app[SUPERVISOR].start("watch:nodes", broken())
        await asyncio.wait([task])
        for path in ("/healthz", "/readyz"):
            answer = await client.get(path)
            assert answer.status == 500
            assert "watch:nodes: RuntimeError: watch loop crashed" in await answer.text()
    finally:
        await client.close()


async def test_metrics_are_served_from_the_injected_registry() -> None:
    client = await client_for(bare_app())
    try:
        answer = await client.get("/metrics")
        assert answer.status == 200
        text = await answer.text()
        assert "endpointsctl_writes_total" in text
        assert "endpointsctl_leader 0.0" in text
    finally:
        await client.close()


def test_an_unknown_algorithm_fails_before_anything_starts() -> None:
    settings = Settings(subsetting=Subsetting(config=SubsettingConfig(algorithm="no-such-algorithm")))
    with pytest.raises(UnknownAlgorithmError, match="no-such-algorithm"):
        create_app(settings)
