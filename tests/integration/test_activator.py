"""The activator's request path, through real activator processes on the devcluster."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devcluster import controlplane
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from tests.integration.activators import Activator, running_activator
from tests.integration.conftest import TEST_IP_BASE
from tests.integration.kit import Cluster, condition, create_revision, poll_until, scale_ready, wait_for, watching

ACTIVATOR_IP = f"{TEST_IP_BASE}.1.250"  # on node-1's range, apart from the addresses its pods get


def spread_over(nodes: list[str], revision: str) -> dict[str, object]:
    """Pod spec additions: only on ``nodes``, never two pods of the revision on one node."""
    label = {"matchLabels": {"serving.knative.dev/revision": revision}}
    return {"affinity": {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": label, "topologyKey": "kubernetes.io/hostname"}]},
    }}  # fmt: skip


@pytest.mark.parametrize("path", ["standard", "local"])
async def test_revision_at_zero_answers_fifty_queued_requests_once_its_pod_is_ready(
    path: str, cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("cold-00001", namespace, startup_delay=0.5))
    local = "true" if path == "local" else "false"
    async with running_activator(
        cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, local_scheduling=local
    ) as activator:
        headers = activator.headers(namespace, "cold-00001")
        answers = await asyncio.gather(*(http.get(f"{activator.url}/", headers=headers) for _ in range(50)))
        assert Counter(a.status_code for a in answers) == {200: 50}
        assert {a.json()["namespace"] for a in answers} == {namespace}
        assert all(a.json()["headers"].get("K-Proxy-Request") == "activator" for a in answers)
        assert not any("Knative-Serving-Revision" in a.json()["headers"] for a in answers)
        scale = await kube.get_scale(r.DEPLOYMENTS, "cold-00001-deployment", namespace)
        assert scale["spec"]["replicas"] == 1
        assert await activator.metric(http, "activator_cold_starts_total", outcome="ready", path=path) == 1


async def test_container_concurrency_one_never_has_two_requests_in_flight_at_the_pod(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("serial-00001", namespace, container_concurrency=1))
    [pod] = await scale_ready(kube, namespace, "serial-00001", 1)
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator:
        headers = activator.headers(namespace, "serial-00001")
        answers = await asyncio.gather(*(http.get(f"{activator.url}/?sleep=0.05", headers=headers) for _ in range(20)))
    assert Counter(a.status_code for a in answers) == {200: 20}
    stats = (await http.get(f"http://{pod['status']['podIP']}:8080/stats")).json()
    assert stats["requests"] == 20
    assert stats["max_in_flight"] == 1


async def test_queue_overflow_answers_503_with_retry_after_and_serves_the_queued(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("busy-00001", namespace, startup_delay=1.0))
    async with running_activator(
        cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, queue_limit="5"
    ) as activator:
        headers = activator.headers(namespace, "busy-00001")
        answers = await asyncio.gather(*(http.get(f"{activator.url}/", headers=headers) for _ in range(20)))
        refused = [a for a in answers if a.status_code == 503]
        assert Counter(a.status_code for a in answers) == {200: 5, 503: 15}
        assert all(a.headers.get("Retry-After") == "1" for a in refused)
        assert all("queued" in a.text for a in refused)
        assert await activator.metric(http, "activator_refusals_total", reason="queue_full") == 15


async def test_unknown_revision_and_bad_headers_are_refused_with_a_reason(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator:
        unknown = await http.get(f"{activator.url}/", headers=activator.headers(namespace, "nope-00001"))
        assert (unknown.status_code, "not found" in unknown.text) == (404, True)
        by_host = await http.get(f"{activator.url}/", headers={"Host": f"nope-00001.{namespace}.svc.cluster.local"})
        assert by_host.status_code == 404
        partial = await http.get(f"{activator.url}/", headers={"Knative-Serving-Revision": "x"})
        assert partial.status_code == 400
        probe = await http.get(f"{activator.url}/", headers={"K-Network-Probe": "activator"})
        assert (probe.status_code, probe.text) == (200, "activator")
        # Counted, but under no label a client chose: clients cannot mint metric series.
        assert await activator.metric(http, "activator_refusals_total", reason="unknown_revision", revision="") == 2
        assert "nope-00001" not in await activator.metrics(http)


async def test_twenty_megabyte_upload_streams_through_a_cold_start_byte_exact(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("upload-00001", namespace, startup_delay=1.0))
    chunk_size, chunks = 1024 * 1024, 20
    digest = hashlib.sha256()
    blocks = [os.urandom(chunk_size) for _ in range(chunks)]
    for block in blocks:
        digest.update(block)

    async def body():  # type: ignore[no-untyped-def]
        for block in blocks:
            yield block

    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator:
        probe = await http.get(f"{activator.url}/", headers={"K-Network-Probe": "activator"})
        assert probe.status_code == 200
        before = activator.peak_rss_bytes()
        answer = await http.post(f"{activator.url}/upload", content=body(),
                                 headers=activator.headers(namespace, "upload-00001"))  # fmt: skip
        growth = activator.peak_rss_bytes() - before
    assert answer.status_code == 200
    assert answer.json()["bytes"] == chunk_size * chunks
    assert answer.json()["sha256"] == digest.hexdigest()
    print(f"\nactivator peak RSS growth for a 20 MiB upload through a cold start: {growth / 2**20:.1f} MiB")
    assert growth < chunk_size * chunks / 4, f"peak RSS grew {growth} bytes: the body is being buffered"


@dataclass
class Traffic:
    """Requests sent back to back by a few workers, each recorded with when it started."""

    results: list[tuple[float, int]] = field(default_factory=list)

    def count(self, since: float = 0.0) -> int:
        return sum(1 for started, _ in self.results if started >= since)

    async def worker(self, activator: Activator, http: httpx.AsyncClient, headers: dict[str, str],
                     stop: asyncio.Event) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                answer = await http.get(f"{activator.url}/", headers=headers, timeout=60)
            except httpx.TransportError:
                self.results.append((started, TORN))
            else:
                self.results.append((started, answer.status_code))


# A response whose head was already forwarded when its pod died or hung can't change its status any more: the
# activator closes the connection, as any streaming proxy must.
TORN = 0


@pytest.mark.parametrize("failure", ["kill", "hang"])
async def test_requests_sent_during_and_after_a_node_failure_all_succeed(
    failure: str, cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path,
    devcluster: Path,
) -> None:  # fmt: skip
    revision = f"{failure}-00001"
    extra = spread_over(["node-2", "node-3"], revision)
    await create_revision(kube, sample_revision(revision, namespace, pod_spec_extra=extra, timeout_seconds=10))
    pods = await scale_ready(kube, namespace, revision, 2)
    assert {p["spec"]["nodeName"] for p in pods} == {"node-2", "node-3"}
    settings = {"connect_timeout_seconds": "0.5", "suspect_seconds": "30"}
    loop = asyncio.get_running_loop()
    async with running_activator(
        cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, **settings
    ) as activator:
        headers = activator.headers(namespace, revision)
        traffic = Traffic()
        stop = asyncio.Event()
        workers = [asyncio.create_task(traffic.worker(activator, http, headers, stop)) for _ in range(8)]
        try:
            await poll_until(_returns(lambda: traffic.count() >= 100), 30, "traffic before the failure")
            failed_at = loop.time()
            (controlplane.kill_node if failure == "kill" else controlplane.hang_node)("node-3", devcluster)
            async with watching(kube, r.NODES) as nodes:
                await wait_for(nodes, lambda c: condition(c.get("node-3") or {}, "Ready") != "True", timeout=60)
            not_ready_at = loop.time()
            await poll_until(_returns(lambda: traffic.count(not_ready_at) >= 100), 30, "traffic after NotReady")
        finally:
            stop.set()
            try:
                await asyncio.gather(*workers)
            finally:
                (controlplane.revive_node if failure == "kill" else controlplane.resume_node)("node-3", devcluster)
        retried = await activator.metric(http, "activator_forward_retries_total")
    during_and_after = [status for started, status in traffic.results if started >= failed_at]
    in_flight = [status for started, status in traffic.results if started < failed_at]
    print(f"\n{failure} node-3: {len(during_and_after)} requests sent during and after the failure, "
          f"{Counter(during_and_after)}; {retried:.0f} retried on another endpoint; requests already in flight "
          f"before it: {Counter(in_flight)}")  # fmt: skip
    assert set(during_and_after) == {200}
    assert retried >= 1, "some requests must have hit the failed node and been retried"
    # Requests already delivered to the pod when it died (reset: 502) or hung (the revision's timeout: 504, or a
    # torn response if its head had been forwarded) may have been processed, so they are never replayed.
    assert set(in_flight) <= {200, 502, 504, TORN}
    async with watching(kube, r.NODES) as nodes:
        await wait_for(nodes, lambda c: condition(c.get("node-3") or {}, "Ready") == "True", timeout=60)


def _returns(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def test_sigterm_with_twenty_requests_queued_answers_all_and_exits_zero(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_revision(kube, sample_revision("drain-00001", namespace, startup_delay=2.0))
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP) as activator:
        headers = activator.headers(namespace, "drain-00001")
        requests = [asyncio.create_task(http.get(f"{activator.url}/", headers=headers)) for _ in range(20)]

        async def queued() -> bool:
            return await activator.metric(http, "activator_queue_depth", revision="drain-00001") == 20

        await poll_until(queued, 30, "20 requests queued")
        activator.process.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*requests)
        code = await activator.process.wait()
    assert Counter(a.status_code for a in answers) == {200: 20}
    assert code == 0
