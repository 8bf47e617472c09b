"""``devcluster demo``: the sample revision at zero on a running devcluster, and how to reach it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devcluster.applying import apply
from devcluster.controlplane import State, spec_of
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import NotFound
from localsched.kube.watching import WatchCache

NAMESPACE = "demo"
REVISION = "hello-00001"


async def wait_activators_ready(client: KubeClient, timeout: float = 60) -> None:
    """Until the activator DaemonSet has a Ready pod on every node it schedules to."""
    cache = WatchCache(client, r.DAEMONSETS, namespace="localsched-system")
    cache.start()
    try:
        await cache.wait_for(lambda c: (ds := c.get("activator", "localsched-system")) is not None
                             and ds.get("status", {}).get("desiredNumberScheduled", 0) > 0
                             and ds["status"].get("numberReady") == ds["status"]["desiredNumberScheduled"],
                             timeout)  # fmt: skip
    finally:
        await cache.stop()


async def run(state_dir: Path) -> int:
    state = State(state_dir)
    kubeconfig = state.data.get("kubeconfig")
    if not kubeconfig or not state.processes:
        print("devcluster is not up: run `devcluster up` (or `make demo`) first")
        return 1
    async with await KubeClient.from_environment(kubeconfig) as client:
        await apply(client, {"kind": "Namespace", "metadata": {"name": NAMESPACE}})
        # A short stable window, so that it is seen going back to zero (window + the devcluster's 6 s grace).
        window = {"autoscaling.knative.dev/window": "6s"}
        await apply(client, sample_revision(REVISION, NAMESPACE, startup_delay=0.5, annotations=window))
        deployment = None
        for _ in range(100):
            try:
                deployment = await client.get(r.DEPLOYMENTS, f"{REVISION}-deployment", NAMESPACE)
                break
            except NotFound:  # the stand-in has not reconciled yet
                await asyncio.sleep(0.1)
        await wait_activators_ready(client)
    replicas = (deployment or {}).get("spec", {}).get("replicas", "?")
    spec = spec_of(state)
    autoscaler = f"http://{spec.net.host_ip}:{spec.autoscaler_port}/decisions"
    print(
        f"""
The devcluster is up, with the sample revision {NAMESPACE}/{REVISION} at {replicas} replicas.

  export KUBECONFIG={kubeconfig}
  kubectl get nodes -L topology.kubernetes.io/zone
  kubectl -n {NAMESPACE} get revisions,deployments,pods -o wide

Send it a request through an activator (one runs on every node); the first one cold-starts it from zero:

  kubectl -n localsched-system get pods -o wide
  ACTIVATOR=$(kubectl -n localsched-system get pod -l app.kubernetes.io/name=activator \\
      -o jsonpath='{{.items[0].status.podIP}}')
  curl -H 'Knative-Serving-Namespace: {NAMESPACE}' -H 'Knative-Serving-Revision: {REVISION}' http://$ACTIVATOR:8012/
  curl -s http://$ACTIVATOR:9090/metrics | grep ^activator_cold_starts

The autoscaler (the devcluster's stand-in for Knative's KPA) takes it back to zero some 13 s after the last
request (its 6 s window, then the 6 s grace); the next request cold-starts it again. Its decisions:

  curl -s {autoscaler}
  kubectl -n {NAMESPACE} get deployment {REVISION}-deployment -w

Simulate failures with `devcluster kill-node node-2` or `devcluster hang-node node-3`;
stop everything with `make down` (or `devcluster down`)."""
    )
    return 0
