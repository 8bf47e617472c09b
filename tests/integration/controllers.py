"""endpointsctl for integration tests: the in-cluster Deployment, and controller processes of the test's own.

A test's own controller runs as an OS process (``python -m endpointsctl``) under the ``endpointsctl``
ServiceAccount's token, so the manifests' RBAC is what it gets, and takes the same Lease as the Deployment
(``localsched-system/endpointsctl``); tests that run their own scale the Deployment to zero first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devcluster.daemons import daemon_env, free_port, running_daemon, service_account_token
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from tests.integration.kit import (
    Cluster,
    is_ready,
    metric_value,
    service_account_kubeconfig,
    wait_for,
    watching,
)

SYSTEM_NAMESPACE = "localsched-system"
DEPLOYMENT = "endpointsctl"
LEASE = "endpointsctl"
SELECTOR = "app.kubernetes.io/name=endpointsctl"


@dataclass
class ControllerProcess:
    identity: str
    port: int
    process: asyncio.subprocess.Process
    log: Path

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metrics(self, http: httpx.AsyncClient) -> str:
        return (await http.get(f"{self.admin}/metrics")).text

    async def metric(self, http: httpx.AsyncClient, name: str, **labels: str) -> float:
        return metric_value(await self.metrics(http), name, **labels)

    def kill(self) -> None:
        """SIGKILL: no release of the Lease, no goodbye."""
        self.process.kill()


def lease_holder(lease: Obj | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


async def endpointsctl_token(kube: KubeClient) -> str:
    return await service_account_token(kube, SYSTEM_NAMESPACE, "endpointsctl")


@contextlib.asynccontextmanager
async def running_controller(
    cluster: Cluster,
    kube: KubeClient,
    http: httpx.AsyncClient,
    tmp: Path,
    *,
    identity: str,
    settings: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[ControllerProcess]:
    """Start ``python -m endpointsctl`` with ``settings`` as ``LOCALSCHED_*`` env (``{"lease_name": "x"}`` is
    ``LOCALSCHED_LEASE_NAME=x``) and extra ``env``; stop it afterwards."""
    kubeconfig = service_account_kubeconfig(
        cluster.kubeconfig, await endpointsctl_token(kube), tmp / f"endpointsctl-{identity}.kubeconfig"
    )
    port = free_port()
    base = {"KUBECONFIG": str(kubeconfig), "LOCALSCHED_BIND_ADDRESS": "127.0.0.1", "LOCALSCHED_ADMIN_PORT": str(port),
            "LOCALSCHED_IDENTITY": identity, "LOCALSCHED_SHUTDOWN_TIMEOUT_SECONDS": "2",
            # Each its own KEDA port, as each has its own admin port: several run at once on 127.0.0.1.
            "LOCALSCHED_KEDA_PORT": str(free_port()), **(env or {})}  # fmt: skip
    log = tmp / f"endpointsctl-{identity}.log"
    async with running_daemon(
        "endpointsctl",
        env=daemon_env(base, settings),
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        http=http,
        stop_timeout=20,
    ) as process:
        yield ControllerProcess(identity, port, process, log)


@dataclass(frozen=True)
class InClusterLeader:
    pod: str
    ip: str

    async def metric(self, http: httpx.AsyncClient, name: str, **labels: str) -> float:
        return metric_value((await http.get(f"http://{self.ip}:9090/metrics")).text, name, **labels)

    async def queue_idle(self, http: httpx.AsyncClient) -> bool:
        text = (await http.get(f"http://{self.ip}:9090/metrics")).text
        return metric_value(text, "endpointsctl_work_queue_depth") == 0


async def in_cluster_leader(kube: KubeClient, timeout: float = 90) -> InClusterLeader:
    """Wait until the Deployment's replicas are Ready and one of them holds the Lease; return that one."""
    async with (
        watching(kube, r.PODS, SYSTEM_NAMESPACE, label_selector=SELECTOR) as pods,
        watching(kube, r.LEASES, SYSTEM_NAMESPACE) as leases,
    ):
        deployment = await kube.get(r.DEPLOYMENTS, DEPLOYMENT, SYSTEM_NAMESPACE)
        replicas = int(deployment["spec"]["replicas"])

        def leader(_: object) -> InClusterLeader | None:
            ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
            holder = lease_holder(leases.get(LEASE, SYSTEM_NAMESPACE))
            if len(ready) != replicas:
                return None
            for pod in ready:
                if holder.startswith(pod["metadata"]["name"] + "_"):
                    return InClusterLeader(pod["metadata"]["name"], pod["status"]["podIP"])
            return None

        # Two caches: re-check on changes of either (the lease renews every retry period). The holder's name can
        # be a dead incarnation of the pod (its container restarted with its node; the lease has not expired
        # yet): the candidate counts once its process says it leads.
        async with asyncio.timeout(timeout), httpx.AsyncClient(trust_env=False, timeout=5) as http:
            while True:
                candidate = await wait_for(leases, leader, timeout)
                with contextlib.suppress(httpx.HTTPError):
                    if await candidate.metric(http, "endpointsctl_leader") == 1:
                        return candidate
                renewed = (leases.get(LEASE, SYSTEM_NAMESPACE) or {}).get("metadata", {}).get("resourceVersion")
                await wait_for(leases, lambda c, rv=renewed: (c.get(LEASE, SYSTEM_NAMESPACE) or {}).get(
                    "metadata", {}).get("resourceVersion") != rv, timeout)  # fmt: skip


@contextlib.asynccontextmanager
async def without_in_cluster_controller(kube: KubeClient) -> AsyncIterator[None]:
    """Scale the Deployment to zero (its pods release the Lease on the way out); scale it back afterwards."""
    scale = await kube.get_scale(r.DEPLOYMENTS, DEPLOYMENT, SYSTEM_NAMESPACE)
    replicas = int(scale["spec"]["replicas"])
    scale["spec"]["replicas"] = 0
    await kube.replace_scale(r.DEPLOYMENTS, scale)
    try:
        async with watching(kube, r.PODS, SYSTEM_NAMESPACE, label_selector=SELECTOR) as pods:
            await wait_for(pods, lambda c: len(c) == 0, 60)
        yield
    finally:
        scale = await kube.get_scale(r.DEPLOYMENTS, DEPLOYMENT, SYSTEM_NAMESPACE)
        scale["spec"]["replicas"] = replicas
        await kube.replace_scale(r.DEPLOYMENTS, scale)
