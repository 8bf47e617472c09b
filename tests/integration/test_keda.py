"""KEDA's external scaler contract, served by the devcluster's endpointsctl replicas from the DaemonSet activators'
demand reports: what a KEDA operator would see through ``externalscaler.proto``."""

from __future__ import annotations

import asyncio
import time

import httpx
from grpc import aio

from devcluster.samples import sample_revision
from localsched.generated import externalscaler_pb2 as pb
from localsched.generated import externalscaler_pb2_grpc as pb_grpc
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from tests.integration.activators import daemonset_activators
from tests.integration.kit import create_revision, is_ready, poll_until, wait_for, watching

SYSTEM_NAMESPACE = "localsched-system"
KEDA_PORT = 9091


async def test_keda_sees_a_revision_at_zero_turn_active_on_its_first_queued_request_and_idle_again(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    node = activators["node-1"]
    async with watching(kube, r.PODS, SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/name=endpointsctl") as pods:
        replicas = await wait_for(pods, lambda c: (up := [p for p in c if is_ready(p)]) and len(up) == 2 and up)

    # The activator reports to every replica: wait until its websockets to both are open (replicas that just came
    # up, after an earlier test's restarts, are connected to within the senders' reconnection backoff).
    async def connected() -> bool:
        return await node.metric(http, "activator_stat_destination_connected", destination="endpointsctl") == 2

    await poll_until(connected, 30, "the activator's reports to both endpointsctl replicas")
    # A revision that starts slowly (2 s): its first request stays queued in the activator meanwhile.
    name = "keda-00001"
    await create_revision(kube, sample_revision(name, namespace, startup_delay=2.0))
    ref = pb.ScaledObjectRef(name="keda-demo", namespace=namespace, scalerMetadata={"revision": name})
    # Every replica has every activator's reports: ask them all (KEDA reaches any one through the Service).
    channels = [aio.insecure_channel(f"{p['status']['podIP']}:{KEDA_PORT}") for p in replicas]
    try:
        stubs = [pb_grpc.ExternalScalerStub(c) for c in channels]
        for stub in stubs:
            assert not (await stub.IsActive(ref)).result
        streams = [stub.StreamIsActive(ref) for stub in stubs]
        for stream in streams:
            assert not (await asyncio.wait_for(stream.read(), 5)).result  # the current state, at once
        sent = time.monotonic()
        request = asyncio.create_task(http.get(f"{node.url}/", headers=node.headers(namespace, name)))
        for stream in streams:
            answer = await asyncio.wait_for(stream.read(), 5)
            pushed = time.monotonic() - sent
            assert answer.result, "the first update after the request says active"
            assert pushed < 1.0, f"StreamIsActive pushed {pushed:.2f}s after the first request"
            assert not request.done(), "still queued while KEDA learns of it"
        metrics = await stubs[0].GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName="demand"))
        assert [v.metricValue for v in metrics.metricValues] == [1]
        spec = await stubs[0].GetMetricSpec(ref)
        assert [s.metricName for s in spec.metricSpecs] == [f"localsched-demand-{namespace}-{name}"]
        assert (await request).status_code == 200
        for stream in streams:  # idle: the activator's last report of zero (or staleness) turns it inactive
            while (await asyncio.wait_for(stream.read(), 10)).result:
                pass
        for stub in stubs:
            assert not (await stub.IsActive(ref)).result
        print(f"\nKEDA: active {pushed:.2f}s after the first request for a revision at zero; inactive once idle")
    finally:
        for channel in channels:
            await channel.close()
