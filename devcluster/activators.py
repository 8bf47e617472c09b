"""Real activator processes outside the DaemonSet, with settings of the caller's choosing (tests, benchmarks).

Each runs as its own OS process (``python -m activator``) under the ``activator`` ServiceAccount's token, so the
manifests' RBAC is what it gets. It listens on an address in a simulated node's range, as a DaemonSet pod there
would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devcluster.daemons import daemon_env, peak_rss_bytes, running_daemon, service_account_token
from devcluster.network import enter_for
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import NotFound
from localsched.kube.watching import WatchCache
from localsched.predicates import is_ready

SYSTEM_NAMESPACE = "localsched-system"


@dataclass
class Activator:
    node: str
    ip: str
    process: asyncio.subprocess.Process
    log: Path
    port: int = 8012
    admin_port: int = 9090

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def headers(self, namespace: str, revision: str) -> dict[str, str]:
        return {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": revision}

    async def metrics(self, http: httpx.AsyncClient) -> str:
        return (await http.get(f"http://{self.ip}:{self.admin_port}/metrics")).text

    async def metric(self, http: httpx.AsyncClient, name: str, **labels: str) -> float:
        return metric_value(await self.metrics(http), name, **labels)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.process.pid)


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


async def daemonset_activators(kube: KubeClient, timeout: float = 60) -> dict[str, NodeActivator]:
    """The Ready activator of each node, by node name, once every scheduled one is Ready (TimeoutError after
    ``timeout``)."""

    def all_ready(cache: WatchCache) -> list[Obj] | None:
        ready = [p for p in cache if is_ready(p)]
        return ready if ready and len(ready) == len(cache) else None

    pods = WatchCache(kube, r.PODS, namespace=SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/name=activator")
    pods.start()
    try:
        ready = await pods.wait_for(all_ready, timeout)
    finally:
        await pods.stop()
    return {p["spec"]["nodeName"]: NodeActivator(p["spec"]["nodeName"], p["status"]["podIP"], p["metadata"]["name"])
            for p in ready}  # fmt: skip


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, from a Prometheus text exposition."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def service_account_kubeconfig(cluster_kubeconfig: str, token: str, path: Path) -> Path:
    base = yaml.safe_load(Path(cluster_kubeconfig).read_text())
    config = {**base, "users": [{"name": "sa", "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": base["clusters"][0]["name"], "user": "sa"}}],
              "current-context": "sa"}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


async def activator_config(kube: KubeClient) -> dict[str, str]:
    """The DaemonSet's optional ``activator-config`` ConfigMap (its ``envFrom``): where to report demand, say."""
    try:
        config = await kube.get(r.CONFIGMAPS, "activator-config", SYSTEM_NAMESPACE)
    except NotFound:
        return {}
    return dict(config.get("data") or {})


async def activator_token(kube: KubeClient) -> str:
    return await service_account_token(kube, SYSTEM_NAMESPACE, "activator")


@contextlib.asynccontextmanager
async def running_activator(
    kubeconfig_path: str,
    kube: KubeClient,
    http: httpx.AsyncClient,
    tmp: Path,
    *,
    node: str,
    ip: str,
    **settings: str,
) -> AsyncIterator[Activator]:
    """Start an activator for ``node`` on ``ip`` with ``LOCALSCHED_*`` ``settings``; stop it afterwards."""
    kubeconfig = service_account_kubeconfig(kubeconfig_path, await activator_token(kube), tmp / f"{ip}.kubeconfig")
    base = {**await activator_config(kube), "NODE_NAME": node, "POD_IP": ip, "KUBECONFIG": str(kubeconfig),
            "LOCALSCHED_BIND_ADDRESS": ip, "LOCALSCHED_DRAIN_SECONDS": "0.5"}  # fmt: skip
    log = tmp / f"activator-{ip}.log"
    async with running_daemon("activator", env=daemon_env(base, settings), log=log, prefix=enter_for(ip),
                              ready_url=f"http://{ip}:9090/readyz", http=http) as process:  # fmt: skip
        yield Activator(node, ip, process, log)
