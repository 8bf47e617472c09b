"""The devcluster is a real control plane: kube-scheduler binds, simulated kubelets run and probe, nodes die."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest

from devcluster import controlplane
from devcluster.daemons import container_pid
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.slices import SERVICE_NAME_LABEL, endpoints_of
from tests.integration.kit import condition, is_ready, pinned, process_alive, wait_for, watching

SAMPLE = sample_revision("x", "x")["spec"]["containers"][0]


def bare_pod(name: str, **spec: object) -> dict[str, object]:
    container = {**SAMPLE, "name": "app"}
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": {"containers": [container], **spec}}


async def scheduled_by(kube: KubeClient, namespace: str, pod: str) -> set[str]:
    events = await kube.list(r.EVENTS, namespace, field_selector=f"involvedObject.name={pod},reason=Scheduled")
    return {_reporter(e) for e in events["items"]}


async def wait_scheduled_event(kube: KubeClient, namespace: str, pod: str) -> str:
    selector = f"involvedObject.name={pod},reason=Scheduled"
    async with watching(kube, r.EVENTS, namespace, field_selector=selector) as events:
        event = await wait_for(events, lambda c: next(iter(c), None))
    return _reporter(event)


def _reporter(event: dict[str, object]) -> str:
    # kube-scheduler 1.20 writes through events.k8s.io/v1: the reporter is reportingComponent, not source.
    source = event.get("source") or {}
    return str(event.get("reportingComponent") or source.get("component", ""))  # type: ignore[attr-defined]


async def test_deployment_scaled_to_two_gets_pods_bound_by_the_scheduler_and_ready_through_real_probes(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    # At two replicas from the start (min-scale), which the autoscaler also keeps (max-scale).
    await kube.create(r.REVISIONS, sample_revision("hello-00001", namespace, annotations=pinned(2)), namespace)
    async with watching(kube, r.DEPLOYMENTS, namespace) as deployments:
        await wait_for(deployments, lambda c: c.get("hello-00001-deployment", namespace))

    async with watching(kube, r.PODS, namespace) as pods:
        ready = await wait_for(pods, lambda c: (p := [x for x in c if is_ready(x)]) and len(p) == 2 and p)
        assert {p["spec"]["nodeName"] for p in ready} <= {"node-1", "node-2", "node-3"}
        for pod in ready:
            assert await wait_scheduled_event(kube, namespace, pod["metadata"]["name"]) == "default-scheduler"
            answer = (await http.get(f"http://{pod['status']['podIP']}:8080/")).json()
            assert (answer["pod"], answer["node"]) == (pod["metadata"]["name"], pod["spec"]["nodeName"])

        # The probe is really executed: the app reports unhealthy, and the pod leaves Ready.
        first = ready[0]
        await http.post(f"http://{first['status']['podIP']}:8080/admin/unready")
        await wait_for(pods, lambda c: condition(c.get(first["metadata"]["name"], namespace) or {}, "Ready") == "False")
        await http.post(f"http://{first['status']['podIP']}:8080/admin/ready")
        await wait_for(pods, lambda c: is_ready(c.get(first["metadata"]["name"], namespace) or {}))


async def test_pod_with_node_name_runs_without_the_scheduler(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    # No scheduler named like this exists: the pod can only run if nothing needs to schedule it.
    pod = bare_pod("pinned", nodeName="node-2", schedulerName="no-such-scheduler")
    await kube.create(r.PODS, pod, namespace)
    async with watching(kube, r.PODS, namespace) as pods:
        running = await wait_for(pods, lambda c: (p := c.get("pinned", namespace)) and is_ready(p) and p)
    assert running["spec"]["nodeName"] == "node-2"
    node = await kube.get(r.NODES, "node-2")
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert running["status"]["podIP"].rsplit(".", 1)[0] == node_ip.rsplit(".", 1)[0]  # the node's own range
    assert await scheduled_by(kube, namespace, "pinned") == set()
    answer = (await http.get(f"http://{running['status']['podIP']}:8080/")).json()
    assert answer["node"] == "node-2"


async def test_pod_that_does_not_fit_the_node_is_failed_with_out_of_cpu(kube: KubeClient, namespace: str) -> None:
    pod = bare_pod("too-big", nodeName="node-1")
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "64", "memory": "64Mi"}}  # type: ignore[index]
    await kube.create(r.PODS, pod, namespace)
    async with watching(kube, r.PODS, namespace) as pods:
        failed = await wait_for(
            pods, lambda c: (p := c.get("too-big", namespace)) and p["status"].get("phase") == "Failed" and p
        )
    assert failed["status"]["reason"] == "OutOfcpu"
    assert "cpu" in failed["status"]["message"]


async def test_private_endpointslice_lists_exactly_the_ready_pods(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    # At two replicas from the start (min-scale), which the autoscaler also keeps (max-scale).
    await kube.create(r.REVISIONS, sample_revision("slices-00001", namespace, annotations=pinned(2)), namespace)
    async with watching(kube, r.DEPLOYMENTS, namespace) as deployments:
        await wait_for(deployments, lambda c: c.get("slices-00001-deployment", namespace))
    slice_resource = await kube.endpointslice_resource()

    def ready_addresses(cache) -> set[str]:  # type: ignore[no-untyped-def]
        return {e.address for s in cache for e in endpoints_of(s) if e.ready}

    async with (
        watching(kube, r.PODS, namespace) as pods,
        watching(
            kube, slice_resource, namespace, label_selector=f"{SERVICE_NAME_LABEL}=slices-00001-private"
        ) as slices,
    ):
        ready = await wait_for(pods, lambda c: (p := [x for x in c if is_ready(x)]) and len(p) == 2 and p)
        ips = {p["status"]["podIP"] for p in ready}
        await wait_for(slices, lambda c: ready_addresses(c) == ips)

        # One pod turns unready: the slice drops exactly that address.
        await http.post(f"http://{ready[0]['status']['podIP']}:8080/admin/unready")
        await wait_for(slices, lambda c: ready_addresses(c) == {ready[1]["status"]["podIP"]})


async def test_killed_node_goes_not_ready_within_the_grace_period_and_its_processes_are_gone(
    kube: KubeClient, namespace: str, devcluster: Path, http: httpx.AsyncClient
) -> None:
    await kube.create(r.PODS, bare_pod("victim", nodeName="node-3"), namespace)
    async with watching(kube, r.PODS, namespace) as pods:
        pod = await wait_for(pods, lambda c: (p := c.get("victim", namespace)) and is_ready(p) and p)
    pid = container_pid(pod)
    assert process_alive(pid)

    controlplane.kill_node("node-3", devcluster)
    try:
        assert not process_alive(pid)
        with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
            await http.get(f"http://{pod['status']['podIP']}:8080/", timeout=2)
        grace = controlplane.spec_of(controlplane.State(devcluster)).node_monitor_grace_seconds
        async with watching(kube, r.NODES) as nodes:
            node = await wait_for(
                nodes, lambda c: (n := c.get("node-3")) and condition(n, "Ready") != "True" and n, timeout=grace + 30
            )
        # Judged on the API server's own records: the last heartbeat (lease renewal) to the NotReady transition
        # is the grace period plus the node controller's 1 s monitor period (timestamps have 1 s resolution).
        lease = await kube.get(r.LEASES, "node-3", "kube-node-lease")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        silence = _ts(ready["lastTransitionTime"]) - _ts(lease["spec"]["renewTime"])
        assert silence <= grace + 2, f"NotReady {silence:.1f}s after the last heartbeat; grace is {grace}s"
    finally:
        controlplane.revive_node("node-3", devcluster)
        async with watching(kube, r.NODES) as nodes:
            await wait_for(nodes, lambda c: condition(c.get("node-3") or {}, "Ready") == "True", timeout=60)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
