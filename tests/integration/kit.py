"""Helpers for integration tests: event-driven waits through the project's own watch caches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devcluster.activators import metric_value, service_account_kubeconfig
from devcluster.daemons import poll_until
from localsched.kube import resources as rs
from localsched.kube.client import KubeClient
from localsched.kube.resources import Resource
from localsched.kube.watching import WatchCache
from localsched.predicates import is_ready

__all__ = ["metric_value", "poll_until", "service_account_kubeconfig"]  # re-exported for the tests

T = TypeVar("T")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    state_dir: Path | None  # None: an external cluster (e.g. kind) given by LOCALSCHED_TEST_KUBECONFIG

    @property
    def is_devcluster(self) -> bool:
        return self.state_dir is not None


@contextlib.asynccontextmanager
async def watching(
    kube: KubeClient, resource: Resource, namespace: str | None = None, **selectors: str
) -> AsyncIterator[WatchCache]:
    cache = WatchCache(kube, resource, namespace=namespace, timeout_seconds=30, **selectors)
    cache.start()
    try:
        await cache.wait_synced(30)
        yield cache
    finally:
        await cache.stop()


async def wait_for(cache: WatchCache, predicate: Callable[[WatchCache], T | None], timeout: float = 60) -> T:
    try:
        return await cache.wait_for(predicate, timeout)
    except TimeoutError:
        state = [(o["metadata"]["name"], o.get("status", {}).get("phase")) for o in cache.items()]
        raise AssertionError(f"condition not met within {timeout}s; {cache.name} now: {state}") from None


def condition(obj: Obj, kind: str) -> str | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(") ", 1)[1][0] != "Z"


async def create_revision(kube: KubeClient, revision: Obj) -> None:
    """Create a Revision and wait for the Knative stand-in's Deployment."""
    meta = revision["metadata"]
    await kube.create(rs.REVISIONS, revision, meta["namespace"])
    async with watching(kube, rs.DEPLOYMENTS, meta["namespace"]) as deployments:
        await wait_for(deployments, lambda c: c.get(f"{meta['name']}-deployment", meta["namespace"]))


def pinned(replicas: int) -> dict[str, str]:
    """Annotations that make the autoscaler keep a revision at exactly ``replicas`` (Knative's min and max scale)."""
    return {"autoscaling.knative.dev/min-scale": str(replicas), "autoscaling.knative.dev/max-scale": str(replicas)}


async def scale_ready(kube: KubeClient, namespace: str, revision: str, replicas: int) -> list[Obj]:
    """Pin a revision at ``replicas`` and wait until exactly that many of its pods are Ready. The autoscaler owns
    the replicas (a direct write to the Deployment would be undone), so this goes through its min and max scale."""
    await kube.patch(rs.REVISIONS, revision, {"metadata": {"annotations": pinned(replicas)}}, namespace)
    selector = f"serving.knative.dev/revision={revision}"
    async with watching(kube, rs.PODS, namespace, label_selector=selector) as pods:
        return await wait_for(pods, lambda c: (p := [x for x in c if is_ready(x)]) and len(p) == replicas and p)


def most_serving_at_once(answers: list[tuple[float, str]], terminating_at: dict[str, float]) -> tuple[int, set[str]]:
    """The most pods known to serve at one moment, and which: ``answers`` are (when a client got it, pod).

    A pod serves from the moment any activator forwards to it, Ready in the API or not; the answers a client gets
    from it are moments it served (a little after each forward). So a pod is counted serving from its first answer
    until its last one, or until its deletion was seen if that is earlier (a terminating pod has left the
    endpoints; it only drains). Not beyond its last answer: a stand-in whose activator died before handing it over
    is still Running, but nothing can forward to it (it never turns Ready in the API), so it does not serve, and
    the restarted activator deletes it later (docs/local-scheduling.md)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for at, pod in sorted(answers):
        first.setdefault(pod, at)
        last[pod] = at
    most, at_most = 0, set()
    for at in sorted(first.values()):
        serving = {p for p, start in first.items() if start <= at <= min(last[p], terminating_at.get(p, float("inf")))}
        if len(serving) > most:
            most, at_most = len(serving), serving
    return most, at_most
