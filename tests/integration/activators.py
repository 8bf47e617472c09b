"""Activators for integration tests: the DaemonSet's per-node ones, and processes with chosen settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from devcluster.activators import Activator, NodeActivator
from devcluster.activators import daemonset_activators as _daemonset_activators
from devcluster.activators import running_activator as _running_activator
from localsched.kube.client import KubeClient
from tests.integration.kit import Cluster

__all__ = ["Activator", "NodeActivator", "daemonset_activators", "running_activator"]


@contextlib.asynccontextmanager
async def running_activator(
    cluster: Cluster, kube: KubeClient, http: httpx.AsyncClient, tmp: Path, *, node: str, ip: str, **settings: str
) -> AsyncIterator[Activator]:
    async with _running_activator(cluster.kubeconfig, kube, http, tmp, node=node, ip=ip, **settings) as activator:
        yield activator


async def daemonset_activators(kube: KubeClient) -> dict[str, NodeActivator]:
    """The Ready activator of each node, by node name (waits until every scheduled one is Ready)."""
    try:
        return await _daemonset_activators(kube, timeout=60)
    except TimeoutError:
        raise AssertionError("the DaemonSet's activators were not all Ready within 60s") from None
