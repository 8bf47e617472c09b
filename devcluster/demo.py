"""``devcluster demo``: the sample revision at zero on a running devcluster, and how to reach it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devcluster.applying import apply
from devcluster.controlplane import State
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import NotFound

NAMESPACE = "demo"
REVISION = "hello-00001"


async def run(state_dir: Path) -> int:
    state = State(state_dir)
    kubeconfig = state.data.get("kubeconfig")
    if not kubeconfig or not state.processes:
        print("devcluster is not up: run `devcluster up` (or `make demo`) first")
        return 1
    async with await KubeClient.from_environment(kubeconfig) as client:
        await apply(client, {"kind": "Namespace", "metadata": {"name": NAMESPACE}})
        await apply(client, sample_revision(REVISION, NAMESPACE, startup_delay=0.5))
        deployment = None
        for _ in range(100):
            try:
                deployment = await client.get(r.DEPLOYMENTS, f"{REVISION}-deployment", NAMESPACE)
                break
            except NotFound:  # the stand-in has not reconciled yet
                await asyncio.sleep(0.1)
    replicas = (deployment or {}).get("spec", {}).get("replicas", "?")
    print(
        f"""
The devcluster is up, with the sample revision {NAMESPACE}/{REVISION} at {replicas} replicas.

  export KUBECONFIG={kubeconfig}
  kubectl get nodes -L topology.kubernetes.io/zone
  kubectl -n {NAMESPACE} get revisions,deployments,pods -o wide

Scale it from zero through the standard path and call a pod directly:

  kubectl -n {NAMESPACE} scale deployment {REVISION}-deployment --replicas=1
  kubectl -n {NAMESPACE} wait pod -l serving.knative.dev/revision={REVISION} --for=condition=Ready
  curl "http://$(kubectl -n {NAMESPACE} get pod -l serving.knative.dev/revision={REVISION} \\
      -o jsonpath='{{.items[0].status.podIP}}'):8080/"

Simulate failures with `devcluster kill-node node-2` or `devcluster hang-node node-3`;
stop everything with `make down` (or `devcluster down`)."""
    )
    return 0
