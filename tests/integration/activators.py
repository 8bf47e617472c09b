"""Activators for integration tests: the DaemonSet's per-node ones, and processes with chosen settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from devcluster.activators import SYSTEM_NAMESPACE, Activator, metric_value
from devcluster.activators import running_activator as _running_activator
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from tests.integration.kit import Cluster, is_ready, wait_for, watching

__all__ = ["Activator", "NodeActivator", "daemonset_activators", "running_activator"]


@contextlib.asynccontextmanager
async def running_activator(
    cluster: Cluster, kube: KubeClient, http: httpx.AsyncClient, tmp: Path, *, node: str, ip: str, **settings: str
) -> AsyncIterator[Activator]:
    async with _running_activator(cluster.kubeconfig, kube, http, tmp, node=node, ip=ip, **settings) as activator:
        yield activator


@dataclass(frozen=True)
class NodeActivator:
    """An activator of the DaemonSet (one per simulated node), as a client sees it."""

    node: str
    ip: str
    pod: str

    @property
    def url(self) -> str:
        return f"http://{self.ip}:8012"

    def headers(self, namespace: str, revision: str) -> dict[str, str]:
        return {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": revision}

    async def metric(self, http: httpx.AsyncClient, name: str, **labels: str) -> float:
        return metric_value((await http.get(f"http://{self.ip}:9090/metrics")).text, name, **labels)


async def daemonset_activators(kube: KubeClient) -> dict[str, NodeActivator]:
    """The Ready activator of each node, by node name (waits until every scheduled one is Ready)."""
    async with watching(kube, r.PODS, SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/name=activator") as pods:
        ready = await wait_for(pods, lambda c: (p := [x for x in c if is_ready(x)]) and len(p) == len(c) and p)
    return {p["spec"]["nodeName"]: NodeActivator(p["spec"]["nodeName"], p["status"]["podIP"], p["metadata"]["name"])
            for p in ready}  # fmt: skip
