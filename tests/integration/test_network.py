"""The devcluster's netns network (devcluster/network.py): pod addresses a modern API server accepts, Endpoints
and EndpointSlices published with them, dead nodes that time out, and nothing left behind by ``down``.

Skipped where the session's devcluster runs the loopback network (not root) or on an external cluster."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster import controlplane, network
from devcluster.network import Network
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.slices import SERVICE_NAME_LABEL, endpoints_of
from tests.integration.activators import daemonset_activators
from tests.integration.kit import condition, create_revision, scale_ready, wait_for, watching


def cluster_network(devcluster: Path) -> Network:
    net = controlplane.spec_of(controlplane.State(devcluster)).net
    if net.mode != "netns":
        why = network.netns_possible() or "LOCALSCHED_TEST_NETWORK=loopback"
        pytest.skip(f"the session's devcluster runs the loopback network ({why})")
    return net


def outside_loopback(ip: str) -> bool:
    return not ipaddress.ip_address(ip).is_loopback


async def ready_pod_on(kube: KubeClient, namespace: str, revision: str, node: str) -> dict[str, Any]:
    """A revision with one Ready pod, on ``node``."""
    extra = {"nodeSelector": {"kubernetes.io/hostname": node}}
    await create_revision(kube, sample_revision(revision, namespace, pod_spec_extra=extra))
    return (await scale_ready(kube, namespace, revision, 1))[0]


async def test_nodes_pods_and_the_api_server_have_addresses_outside_loopback(
    kube: KubeClient, devcluster: Path
) -> None:
    net = cluster_network(devcluster)
    nodes = (await kube.list(r.NODES))["items"]
    internal = [a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert len(internal) == len(nodes), nodes
    assert all(map(outside_loopback, internal)), internal
    activators = await daemonset_activators(kube)
    assert activators
    assert all(outside_loopback(a.ip) for a in activators.values()), activators
    assert all(ipaddress.ip_address(a.ip) in ipaddress.ip_network(net.cidr) for a in activators.values())
    # The API server advertises its bridge address: the `kubernetes` Service has a real endpoint now.
    endpoints = await kube.get(r.ENDPOINTS, "kubernetes", "default")
    addresses = [a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]
    assert addresses == [net.host_ip]


async def test_private_endpoints_and_activation_endpoints_are_published_with_pod_addresses(
    kube: KubeClient, namespace: str, devcluster: Path
) -> None:
    cluster_network(devcluster)
    await create_revision(kube, sample_revision("net-00001", namespace))
    pods = await scale_ready(kube, namespace, "net-00001", 1)
    pod_ip = pods[0]["status"]["podIP"]
    assert outside_loopback(pod_ip)

    def ready_ips(endpoints: dict[str, object] | None) -> set[str]:
        subsets = (endpoints or {}).get("subsets") or []
        return {a["ip"] for s in subsets for a in s.get("addresses") or []}  # type: ignore[union-attr]

    # The endpoints controller (on with this network) publishes the private Service's Endpoints, and its
    # endpointslice controller the slice: the addresses the 1.21+ validation would reject on loopback.
    async with watching(kube, r.ENDPOINTS, namespace) as endpoints:
        await wait_for(endpoints, lambda c: ready_ips(c.get("net-00001-private", namespace)) == {pod_ip} or None)
    slices_api = await kube.endpointslice_resource()
    selector = f"{SERVICE_NAME_LABEL}=net-00001-private"
    async with watching(kube, slices_api, namespace, label_selector=selector) as slices:
        await wait_for(slices, lambda c: any(pod_ip in {e.address for e in endpoints_of(s)} for s in c) or None)

    # endpointsctl publishes the revision's activators as a slice and as Endpoints.
    activators = {a.ip for a in (await daemonset_activators(kube)).values()}
    name = "net-00001-activationendpoints"
    async with watching(kube, r.ENDPOINTS, namespace) as endpoints:
        chosen = await wait_for(endpoints, lambda c: ready_ips(c.get(name, namespace)) or None)
    assert chosen <= activators, (chosen, activators)
    assert all(map(outside_loopback, chosen)), chosen
    async with watching(kube, slices_api, namespace, label_selector=f"{SERVICE_NAME_LABEL}={name}") as slices:
        await wait_for(slices, lambda c: any({e.address for e in endpoints_of(s)} == chosen for s in c) or None)


async def test_a_killed_nodes_pods_time_out_instead_of_refusing(
    kube: KubeClient, namespace: str, devcluster: Path, http: httpx.AsyncClient
) -> None:
    cluster_network(devcluster)
    pod = await ready_pod_on(kube, namespace, "dead-00001", "node-3")
    url = f"http://{pod['status']['podIP']}:8080/"
    assert (await http.get(url)).status_code == 200
    controlplane.kill_node("node-3", devcluster)
    try:
        # A new connection (the session client's keep-alive one would see a read time out, as it should too).
        async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(5, connect=1.5)) as fresh:
            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await fresh.get(url)
        assert time.monotonic() - started >= 1.4, "a dead machine's peers wait; they are not refused at once"
    finally:
        controlplane.revive_node("node-3", devcluster)
    async with watching(kube, r.NODES) as nodes:
        await wait_for(nodes, lambda c: condition(c.get("node-3") or {}, "Ready") == "True", timeout=60)


async def test_a_node_cut_off_from_the_api_server_goes_not_ready_while_its_pods_keep_serving(
    kube: KubeClient, namespace: str, devcluster: Path
) -> None:
    cluster_network(devcluster)
    pod = await ready_pod_on(kube, namespace, "cut-00001", "node-2")
    grace = controlplane.spec_of(controlplane.State(devcluster)).node_monitor_grace_seconds
    controlplane.partition_node("node-2", devcluster)
    try:
        async with watching(kube, r.NODES) as nodes:
            await wait_for(nodes, lambda c: condition(c.get("node-2") or {}, "Ready") != "True", timeout=grace + 30)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as fresh:
            answer = await fresh.get(f"http://{pod['status']['podIP']}:8080/")
        assert answer.status_code == 200, "only the way to the API server is cut: the node's pods still serve"
    finally:
        controlplane.heal_node("node-2", devcluster)
    async with watching(kube, r.NODES) as nodes:
        await wait_for(nodes, lambda c: condition(c.get("node-2") or {}, "Ready") == "True", timeout=60)


def test_down_removes_every_namespace_link_and_route_even_after_a_crash() -> None:
    """A network built and then torn down from its record alone (as `down` does after a crash) leaves nothing."""
    if network.netns_possible() is not None:
        pytest.skip(f"netns network unavailable here: {network.netns_possible()}")
    net = Network("netns", "10.249", tag="lsdctest")
    network.teardown(net)  # anything an interrupted earlier run left
    try:
        network.build(net, [1, 2])
        assert len(network.leftovers(net)) == 7  # 2 namespaces, the bridge and 2 veths, its route, the unreachable
        network.drop_all(net, 1, drop=True)
        network.partition(net, 2, 443, cut=True)
        network.cut_link(net, 2, down=True)
    finally:
        network.teardown(Network.recorded(net.record()) or net)
    assert network.leftovers(net) == []
