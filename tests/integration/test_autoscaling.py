"""Scale to zero and back, with an autoscaler that owns the replicas: the activators report demand in Knative's
wire format to the devcluster's stand-in for Knative's autoscaler (the KPA), which writes the Deployments' scale.

Windows are short here (6 s stable window, the devcluster's 6 s grace) so that a revision returns to zero within
seconds of its last request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from devcluster import controlplane
from devcluster.bootstrap import AUTOSCALER_CONFIG
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.watching import WatchCache
from tests.integration.activators import NodeActivator, daemonset_activators
from tests.integration.kit import create_revision, is_ready, wait_for, watching

WINDOW = 6.0
GRACE = float(AUTOSCALER_CONFIG["scale-to-zero-grace-period"].rstrip("s"))
TICK = 2.0  # the autoscaler's decision period
STANDARD = {"localsched.dev/local-scheduling": "false"}


def short_window(**more: str) -> dict[str, str]:
    return {"autoscaling.knative.dev/window": f"{WINDOW:.0f}s", **more}


@contextlib.asynccontextmanager
async def deployment_of(kube: KubeClient, namespace: str, revision: str) -> AsyncIterator[WatchCache]:
    async with watching(kube, r.DEPLOYMENTS, namespace, label_selector=f"serving.knative.dev/revision={revision}") as d:
        yield d


@contextlib.asynccontextmanager
async def pods_of(kube: KubeClient, namespace: str, revision: str) -> AsyncIterator[WatchCache]:
    async with watching(kube, r.PODS, namespace, label_selector=f"serving.knative.dev/revision={revision}") as pods:
        yield pods


def replicas(cache: WatchCache, namespace: str, revision: str) -> int:
    deployment = cache.get(f"{revision}-deployment", namespace)
    return int((deployment or {}).get("spec", {}).get("replicas") or 0)


async def test_a_revision_returns_to_zero_after_its_window_and_grace_and_the_next_request_starts_it_again(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    node = activators["node-1"]
    cases = {"standard": ("back-std", STANDARD), "local": ("back-local", {})}
    for path, (name, extra) in cases.items():
        await create_revision(kube, sample_revision(name, namespace, annotations=short_window(**extra)))
        async with deployment_of(kube, namespace, name) as deployments:
            for attempt in ("first", "again"):
                before = await node.metric(http, "activator_cold_starts_total", revision=name, outcome="ready")
                answer = await http.get(f"{node.url}/", headers=node.headers(namespace, name))
                last_request = time.monotonic()
                assert answer.status_code == 200, (path, attempt, answer.text)
                assert await node.metric(http, "activator_cold_starts_total", revision=name, outcome="ready",
                                         path=path) >= 1  # fmt: skip
                after = await node.metric(http, "activator_cold_starts_total", revision=name, outcome="ready")
                assert after == before + 1, "each request after zero is a cold start"
                # The autoscaler's decision: zero once the window has seen no demand and the grace has passed.
                await wait_for(deployments, lambda c, n=name: replicas(c, namespace, n) == 0, WINDOW + GRACE + 30)
                took = time.monotonic() - last_request
                print(f"\n{path}, {attempt} cold start: back to zero {took:.1f}s after the last request "
                      f"(window {WINDOW:.0f}s + grace {GRACE:.0f}s)")  # fmt: skip
                assert WINDOW + GRACE - 1 <= took <= WINDOW + GRACE + 2 * TICK + 2
                async with watching(
                    kube, r.PODS, namespace, label_selector=f"serving.knative.dev/revision={name}"
                ) as p:
                    await wait_for(p, lambda c: len(c) == 0, 60)


async def _load(http: httpx.AsyncClient, node: NodeActivator, namespace: str, name: str, clients: int,
                until: asyncio.Event, statuses: Counter[int]) -> None:  # fmt: skip
    async def client() -> None:
        while not until.is_set():
            answer = await http.get(f"{node.url}/?sleep=0.2", headers=node.headers(namespace, name))
            statuses[answer.status_code] += 1

    await asyncio.gather(*(client() for _ in range(clients)))


async def test_five_clients_on_a_container_concurrency_one_revision_scale_it_to_three_in_panic_and_back_down(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    node = activators["node-2"]
    name = "panicky"
    # Stable window 12 s, panic window 25 % of it: 3 s. Target per pod: containerConcurrency 1 x 70 %.
    annotations = {"autoscaling.knative.dev/window": "12s", "autoscaling.knative.dev/panic-window-percentage": "25",
                   "autoscaling.knative.dev/max-scale": "5"}  # fmt: skip
    panic_window = 3.0
    await create_revision(kube, sample_revision(name, namespace, container_concurrency=1, annotations=annotations))
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    async with deployment_of(kube, namespace, name) as deployments:
        load = asyncio.create_task(_load(http, node, namespace, name, 5, stop, statuses))
        try:
            await wait_for(deployments, lambda c: replicas(c, namespace, name) >= 1, 60)
            scaled_from = time.monotonic()  # the first replica is there: the load is measured from now on
            await wait_for(deployments, lambda c: replicas(c, namespace, name) >= 3, panic_window + 2 * TICK + 2)
            took = time.monotonic() - scaled_from
            async with pods_of(kube, namespace, name) as pods:
                await wait_for(pods, lambda c: sum(1 for x in c if is_ready(x)) >= 3, 60)
        finally:
            stop.set()
            await load
        print(f"\n5 clients, containerConcurrency 1: 3 replicas asked {took:.1f}s after the first "
              f"(panic window {panic_window:.0f}s); answers {dict(statuses)}")  # fmt: skip
        assert set(statuses) == {200}
        most = max(replicas(deployments, namespace, name), 3)
        await wait_for(deployments, lambda c: replicas(c, namespace, name) < most, 12 + GRACE + 30)
        await wait_for(deployments, lambda c: replicas(c, namespace, name) == 0, 12 + GRACE + 60)


async def test_without_the_autoscaler_warm_and_local_cold_requests_are_served_and_standard_ones_once_it_returns(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, devcluster: Path
) -> None:
    activators = await daemonset_activators(kube)
    node = activators["node-3"]
    await create_revision(kube, sample_revision("warm", namespace))
    assert (await http.get(f"{node.url}/", headers=node.headers(namespace, "warm"))).status_code == 200
    for name, extra in (("cold-local", {}), ("cold-standard", STANDARD)):
        await create_revision(kube, sample_revision(name, namespace, annotations=extra))
    connected = {"destination": "autoscaler", "outcome": "connected"}
    connects = await node.metric(http, "activator_stat_connects_total", **connected)
    controlplane.kill_autoscaler(devcluster)
    try:
        warm = await asyncio.gather(*(http.get(f"{node.url}/", headers=node.headers(namespace, "warm"))
                                      for _ in range(20)))  # fmt: skip
        assert Counter(a.status_code for a in warm) == {200: 20}
        local = await http.get(f"{node.url}/", headers=node.headers(namespace, "cold-local"))
        assert local.status_code == 200, "a local cold start needs no autoscaler"
        standard = asyncio.create_task(http.get(f"{node.url}/", headers=node.headers(namespace, "cold-standard")))
        done, _ = await asyncio.wait({standard}, timeout=3)
        assert not done, "the standard path waits for the autoscaler's scale from zero"
    finally:
        controlplane.revive_autoscaler(devcluster)
    answer = await asyncio.wait_for(standard, 60)
    assert answer.status_code == 200, answer.text
    assert await node.metric(http, "activator_stat_destination_connected", destination="autoscaler") == 1
    assert await node.metric(http, "activator_stat_connects_total", **connected) == connects + 1
