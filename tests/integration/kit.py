"""Helpers for integration tests: event-driven waits through the project's own watch caches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from localsched.kube.client import KubeClient
from localsched.kube.resources import Resource
from localsched.kube.watching import WatchCache

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


def is_ready(pod: Obj) -> bool:
    return condition(pod, "Ready") == "True"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(") ", 1)[1][0] != "Z"


def container_pid(pod: Obj) -> int:
    status = pod["status"]["containerStatuses"][0]
    return int(status["containerID"].removeprefix("process://"))
