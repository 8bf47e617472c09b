"""KEDA's external scaler contract, through the real ``grpc.aio`` server and a client stub, fed by a demand table on an
injected clock (and, for StreamIsActive, by reports over the real ``/stats`` websocket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from devcluster.daemons import free_port
from endpointsctl.app import REGISTRY, SCALER, create_app, scaling
from endpointsctl.demand import Demand
from endpointsctl.keda import ExternalScaler, InvalidReference, ScalerServer, Target
from endpointsctl.metrics import Metrics
from endpointsctl.settings import Keda, Server, Settings, from_args
from localsched.generated import externalscaler_pb2 as pb
from localsched.generated import externalscaler_pb2_grpc as pb_grpc
from localsched.settings import SettingsError
from localsched.stats import encode
from tests.unit.support import ClientFactory, Clock, report

KEY = "demo/hello-00001"


class Scaler:
    """A started server, its demand table and clock, and a client stub on a channel to it."""

    def __init__(self, demand: Demand, clock: Clock, server: ScalerServer, registry: CollectorRegistry) -> None:
        self.demand, self.clock, self.server, self.registry = demand, clock, server, registry
        self.channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub: Any = pb_grpc.ExternalScalerStub(self.channel)  # type: ignore[no-untyped-call]


def ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="hello", namespace="demo", scalerMetadata=metadata)


@pytest.fixture
async def scaler() -> AsyncIterator[Scaler]:
    clock, registry = Clock(), CollectorRegistry()
    demand = Demand(clock=clock)
    # A long keepalive: every message a test reads is the answer to a change.
    server = ScalerServer(ExternalScaler(demand, Metrics.create(registry), keepalive_seconds=60), "127.0.0.1", 0)
    await server.start()
    scaler = Scaler(demand, clock, server, registry)
    try:
        yield scaler
    finally:
        await scaler.channel.close()
        await server.stop(1.0)


async def test_is_active_once_an_activator_reports_demand(scaler: Scaler) -> None:
    assert not (await scaler.stub.IsActive(ref(revision="hello-00001"))).result
    scaler.demand.record(report("activator-a", 1.0))  # the first-request report
    assert (await scaler.stub.IsActive(ref(revision="hello-00001"))).result
    assert not (await scaler.stub.IsActive(ref(revision="hello-00001", namespace="elsewhere"))).result
    ok = scaler.registry.get_sample_value("endpointsctl_keda_requests_total", {"method": "IsActive", "code": "OK"})
    assert ok == 3.0


async def test_stream_is_active_follows_the_reports_sent_over_the_websocket(
    scaler: Scaler, aiohttp_client: ClientFactory
) -> None:
    app = create_app(Settings(), registry=CollectorRegistry(), demand=scaler.demand)
    app.cleanup_ctx.clear()
    client = await aiohttp_client(app)
    call = scaler.stub.StreamIsActive(ref(revision="hello-00001"))
    try:
        assert not (await asyncio.wait_for(call.read(), 1.0)).result  # the current state, at once
        async with client.ws_connect("/stats") as ws:
            await ws.send_bytes(encode([report("activator-a", 1.0)]))
            assert (await asyncio.wait_for(call.read(), 1.0)).result
            await ws.send_bytes(encode([report("activator-a", 0.0)]))  # the idle revision's last report
            assert not (await asyncio.wait_for(call.read(), 1.0)).result
            await ws.send_bytes(encode([report("activator-b", 2.0)]))
            assert (await asyncio.wait_for(call.read(), 1.0)).result
        scaler.clock.now += 3.5  # b stopped reporting: the next sweep finds its report stale
        scaler.demand.sweep()
        assert not (await asyncio.wait_for(call.read(), 1.0)).result
    finally:
        call.cancel()


async def test_stream_is_active_resends_the_state_as_a_keepalive(scaler: Scaler) -> None:
    scaler.server.scaler.keepalive_seconds = 0.01
    scaler.demand.record(report("activator-a", 1.0))
    call = scaler.stub.StreamIsActive(ref(revision="hello-00001"))
    try:
        for _ in range(3):
            assert (await asyncio.wait_for(call.read(), 1.0)).result
    finally:
        call.cancel()


async def test_stopping_the_server_ends_the_streams_cleanly(scaler: Scaler) -> None:
    call = scaler.stub.StreamIsActive(ref(revision="hello-00001"))
    assert not (await asyncio.wait_for(call.read(), 1.0)).result
    await asyncio.wait_for(scaler.server.stop(10.0), 5.0)  # returns without waiting out the grace
    assert await asyncio.wait_for(call.read(), 1.0) is aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_metric_spec_names_the_revision_and_takes_the_target_demand(scaler: Scaler) -> None:
    answer = await scaler.stub.GetMetricSpec(ref(revision="hello-00001"))
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in answer.metricSpecs] == [
        ("localsched-demand-demo-hello-00001", 100, 100.0)
    ]
    answer = await scaler.stub.GetMetricSpec(ref(revision="hello-00001", namespace="Team.A", targetDemand="2.5"))
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in answer.metricSpecs] == [
        ("localsched-demand-team-a-hello-00001", 3, 2.5)
    ]


async def test_metrics_are_the_demand_rounded_up_and_exact(scaler: Scaler) -> None:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(revision="hello-00001"), metricName="s0-whatever")
    assert [(v.metricValue, v.metricValueFloat) for v in (await scaler.stub.GetMetrics(request)).metricValues] == [
        (0, 0.0)
    ]
    scaler.demand.record(report("activator-a", 0.5))
    scaler.demand.record(report("activator-b", 1.2))
    values = (await scaler.stub.GetMetrics(request)).metricValues
    assert [(v.metricName, v.metricValue) for v in values] == [("localsched-demand-demo-hello-00001", 2)]
    assert values[0].metricValueFloat == pytest.approx(1.7)


@pytest.mark.parametrize("method", ["IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics"])
async def test_a_reference_without_a_revision_is_an_invalid_argument(scaler: Scaler, method: str) -> None:
    bad = ref(namespace="demo")
    request = pb.GetMetricsRequest(scaledObjectRef=bad) if method == "GetMetrics" else bad
    call = getattr(scaler.stub, method)(request)
    with pytest.raises(aio.AioRpcError) as refused:
        await (call.read() if method == "StreamIsActive" else call)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'revision' is required" in (refused.value.details() or "")
    counted = {"method": method, "code": "INVALID_ARGUMENT"}
    assert scaler.registry.get_sample_value("endpointsctl_keda_requests_total", counted) == 1.0


async def test_a_bad_target_demand_is_an_invalid_argument(scaler: Scaler) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await scaler.stub.GetMetricSpec(ref(revision="hello-00001", targetDemand="lots"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "targetDemand='lots'" in (refused.value.details() or "")


async def test_stream_metric_spec_is_left_to_get_metric_spec(scaler: Scaler) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await scaler.stub.StreamMetricSpec(ref(revision="hello-00001")).read()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("metadata", "namespace", "expected"),
    [
        pytest.param({"revision": "r"}, "demo", Target("demo", "r"), id="the-scaledobjects-namespace"),
        pytest.param({"revision": " r ", "namespace": "other"}, "demo", Target("other", "r"), id="namespace-given"),
        pytest.param({"revision": "r", "targetDemand": "10"}, "demo", Target("demo", "r", 10.0), id="target"),
    ],
)
def test_the_reference_names_a_revision(metadata: dict[str, str], namespace: str, expected: Target) -> None:
    assert Target.from_ref(pb.ScaledObjectRef(name="so", namespace=namespace, scalerMetadata=metadata)) == expected


@pytest.mark.parametrize(
    ("metadata", "namespace", "message"),
    [
        pytest.param({}, "demo", "'revision' is required", id="no-revision"),
        pytest.param({"revision": "r"}, "", "no namespace", id="no-namespace"),
        pytest.param({"revision": "r", "targetDemand": "0"}, "demo", "targetDemand", id="zero-target"),
        pytest.param({"revision": "r", "targetDemand": "nan"}, "demo", "targetDemand", id="nan-target"),
    ],
)
def test_a_reference_that_names_no_revision_is_refused(metadata: dict[str, str], namespace: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        Target.from_ref(pb.ScaledObjectRef(name="so", namespace=namespace, scalerMetadata=metadata))


# -- wiring ----------------------------------------------------------------------------------------------------------


async def test_the_app_serves_keda_while_it_runs(aiohttp_client: ClientFactory) -> None:
    port = free_port()
    settings = Settings(server=Server(shutdown_timeout_seconds=1.0), keda=Keda(host="127.0.0.1", port=port))
    app = create_app(settings, registry=CollectorRegistry())
    app.cleanup_ctx.clear()
    app.cleanup_ctx.append(scaling)
    client = await aiohttp_client(app)
    assert app[SCALER].port == port
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        assert not (await stub.IsActive(ref(revision="hello-00001"))).result
        stream = stub.StreamIsActive(ref(revision="hello-00001"))
        assert not (await asyncio.wait_for(stream.read(), 1.0)).result
        ws = await client.ws_connect("/stats")
        await asyncio.wait_for(client.close(), 5.0)  # the open stream and websocket do not hold the shutdown up
        assert await asyncio.wait_for(stream.read(), 1.0) is aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
        assert ws.closed
        with pytest.raises(aio.AioRpcError) as gone:
            await stub.IsActive(ref(revision="hello-00001"), timeout=5)
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
    assert app[REGISTRY].get_sample_value("endpointsctl_keda_requests_total", {"method": "IsActive", "code": "OK"})


def test_keda_settings_default_to_the_admin_address_and_port_9091() -> None:
    settings = from_args([], env={"LOCALSCHED_BIND_ADDRESS": "10.1.2.3"})
    assert (settings.keda.host, settings.keda.port, settings.keda.staleness_seconds) == ("10.1.2.3", 9091, 3.0)
    env = {"LOCALSCHED_DEMAND_STALENESS_SECONDS": "5"}
    settings = from_args(["--keda-port", "0", "--keda-host", "0.0.0.0"], env=env)
    assert (settings.keda.host, settings.keda.port, settings.keda.staleness_seconds) == ("0.0.0.0", 0, 5.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({"LOCALSCHED_KEDA_PORT": "9090"}, "LOCALSCHED_KEDA_PORT", id="the-admin-port"),
        pytest.param({"LOCALSCHED_KEDA_PORT": "70000"}, "LOCALSCHED_KEDA_PORT", id="out-of-range"),
        pytest.param({"LOCALSCHED_DEMAND_STALENESS_SECONDS": "0"}, "LOCALSCHED_DEMAND_STALENESS_SECONDS", id="zero"),
    ],
)
def test_a_bad_keda_setting_fails_fast_naming_its_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        from_args([], env=env)
