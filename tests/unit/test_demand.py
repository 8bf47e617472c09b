"""The demand table (an injected clock, no waiting) and the ``/stats`` websocket the activators report to."""

from __future__ import annotations

import asyncio
import math

import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry

from endpointsctl.app import DEMAND, REGISTRY, STATS, create_app
from endpointsctl.demand import Demand
from endpointsctl.settings import Settings
from localsched.stats import encode
from tests.unit.support import ClientFactory, Clock, report

KEY = "demo/hello-00001"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def demand(clock: Clock) -> Demand:
    return Demand(clock=clock)


def test_demand_is_the_sum_of_each_activators_latest_report(demand: Demand) -> None:
    assert demand.demand(KEY) == 0.0
    demand.record(report("activator-a", 2.0))
    demand.record(report("activator-b", 1.5))
    assert demand.demand(KEY) == pytest.approx(3.5)
    demand.record(report("activator-a", 0.25))  # replaces a's earlier report, does not add to it
    assert demand.demand(KEY) == pytest.approx(1.75)
    assert demand.reporters(KEY) == {"activator-a": 0.25, "activator-b": 1.5}
    demand.record(report("activator-a", 7.0, name="other"))
    assert demand.demand(KEY) == pytest.approx(1.75)
    assert demand.demand("demo/other") == pytest.approx(7.0)


def test_a_report_older_than_the_staleness_bound_no_longer_counts(demand: Demand, clock: Clock) -> None:
    demand.record(report("activator-a", 2.0))
    clock.advance(2.0)
    demand.record(report("activator-b", 1.0))
    clock.advance(1.0)  # a's report is exactly 3 s old: still counted
    assert demand.demand(KEY) == pytest.approx(3.0)
    clock.advance(0.5)  # a stopped reporting (or died): only b counts
    assert demand.demand(KEY) == pytest.approx(1.0)
    assert demand.active(KEY)
    clock.advance(2.0)
    assert demand.demand(KEY) == 0.0
    assert not demand.active(KEY)
    demand.sweep()
    assert demand.reporters(KEY) == {}


@pytest.mark.parametrize("concurrency", [math.nan, -1.0, math.inf])
def test_a_nonsense_concurrency_counts_as_none(demand: Demand, concurrency: float) -> None:
    demand.record(report("activator-a", concurrency))
    demand.record(report("activator-b", 1.0))
    assert demand.demand(KEY) == pytest.approx(1.0)


def test_a_stat_without_a_pod_name_is_the_senders(demand: Demand) -> None:
    demand.record(report("", 1.0), sender="10.0.0.1")
    demand.record(report("", 2.0), sender="10.0.0.2")
    assert demand.reporters(KEY) == {"10.0.0.1": 1.0, "10.0.0.2": 2.0}


def test_watchers_are_woken_when_the_revision_turns_active_or_inactive_not_on_every_report(demand: Demand) -> None:
    with demand.watch(KEY) as changed, demand.watch("demo/other") as unrelated:
        demand.record(report("activator-a", 0.0))
        assert not changed.is_set()  # 0 from nothing: no change
        demand.record(report("activator-a", 1.0))  # the first request
        assert changed.is_set()
        changed.clear()
        demand.record(report("activator-b", 3.0))
        demand.record(report("activator-a", 0.0))
        assert not changed.is_set()  # still active: b has requests
        demand.record(report("activator-b", 0.0))  # the last report of an idle revision
        assert changed.is_set()
        assert not demand.active(KEY)
        assert not unrelated.is_set()
    assert demand.active_count == 0


def test_a_revision_whose_reports_stop_turns_inactive_on_the_next_sweep(demand: Demand, clock: Clock) -> None:
    demand.record(report("activator-a", 1.0))
    assert demand.active_count == 1
    with demand.watch(KEY) as changed:
        clock.advance(2.0)
        demand.sweep()
        assert not changed.is_set()
        clock.advance(1.5)
        demand.sweep()
        assert changed.is_set()
    assert demand.active_count == 0
    assert not demand.active(KEY)


async def test_a_watcher_waiting_is_woken_by_a_report(demand: Demand) -> None:
    with demand.watch(KEY) as changed:
        waiter = asyncio.create_task(changed.wait())
        demand.record(report("activator-a", 1.0))
        await asyncio.wait_for(waiter, 1.0)


# -- the websocket ---------------------------------------------------------------------------------------------------


def stats_app(demand: Demand) -> tuple[web.Application, asyncio.Event]:
    """endpointsctl's admin app without Kubernetes, plus ``/tracked``: ``/stats``, and an event when it returns."""
    app = create_app(Settings(), registry=CollectorRegistry(), demand=demand)
    app.cleanup_ctx.clear()
    ended = asyncio.Event()

    async def tracked(request: web.Request) -> web.StreamResponse:
        try:
            return await app[STATS].handle(request)
        finally:
            ended.set()

    app.router.add_get("/tracked", tracked)
    return app, ended


def sample(app: web.Application, name: str, **labels: str) -> float | None:
    return app[REGISTRY].get_sample_value(name, labels)


async def test_reports_over_the_websocket_are_recorded_and_garbage_is_counted_but_kept(
    aiohttp_client: ClientFactory, demand: Demand
) -> None:
    app, _ = stats_app(demand)
    client = await aiohttp_client(app)
    async with client.ws_connect("/stats") as ws:
        with demand.watch(KEY) as changed:
            await ws.send_bytes(b"\xff\xff\xff not a WireStatMessages")
            await ws.send_bytes(encode([report("activator-a", 1.0), report("activator-a", 2.0, name="other")]))
            await asyncio.wait_for(changed.wait(), 1.0)  # in order: the garbage came first and was survived
        assert not ws.closed
        assert app[DEMAND].demand(KEY) == pytest.approx(1.0)
        assert app[DEMAND].demand("demo/other") == pytest.approx(2.0)
        assert sample(app, "endpointsctl_demand_refused_messages_total", reason="undecodable") == 1.0
        assert sample(app, "endpointsctl_demand_reports_total") == 2.0
        assert sample(app, "endpointsctl_demand_connections") == 1.0
        metrics = await (await client.get("/metrics")).text()
        assert "endpointsctl_demand_active_revisions 2.0" in metrics


async def test_text_is_refused_by_closing_the_connection(aiohttp_client: ClientFactory, demand: Demand) -> None:
    app, ended = stats_app(demand)
    client = await aiohttp_client(app)
    async with client.ws_connect("/tracked") as ws:
        await ws.send_str('{"namespace": "demo"}')
        answer = await asyncio.wait_for(ws.receive(), 1.0)
        assert answer.type == WSMsgType.CLOSE
        assert answer.data == WSCloseCode.UNSUPPORTED_DATA
    await asyncio.wait_for(ended.wait(), 1.0)
    assert sample(app, "endpointsctl_demand_refused_messages_total", reason="text") == 1.0
    assert sample(app, "endpointsctl_demand_connections") == 0.0


async def test_shutdown_closes_the_activators_connections(aiohttp_client: ClientFactory, demand: Demand) -> None:
    app, ended = stats_app(demand)
    client = await aiohttp_client(app)
    async with client.ws_connect("/tracked") as ws:
        with demand.watch(KEY) as changed:
            await ws.send_bytes(encode([report("activator-a", 1.0)]))
            await asyncio.wait_for(changed.wait(), 1.0)
        closing = asyncio.create_task(app[STATS].close())
        answer = await asyncio.wait_for(ws.receive(), 1.0)
        assert answer.type == WSMsgType.CLOSE
        assert answer.data == WSCloseCode.GOING_AWAY
    await asyncio.wait_for(asyncio.gather(closing, ended.wait()), 1.0)
    assert sample(app, "endpointsctl_demand_connections") == 0.0
    assert demand.demand(KEY) == pytest.approx(1.0)  # what it reported still counts until it goes stale
