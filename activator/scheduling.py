"""Local scheduling: on a cold start, the activator writes the revision's pod onto its own node.

Only the kubelet stays on the critical path. The steps (docs/local-scheduling.md has the why and the evidence):

1. Filter, as kube-scheduler's filter stage would for this one node: scheduler name, unsupported constraints,
   readiness, cordon, taints, nodeSelector and required affinity, resources against the pods already on the node
   (from a watch of this node's pods only). A failure has a named reason, is logged and counted, and the standard
   path runs instead.
2. Claim a replica under maxScale (``claiming.claim_replica``: optimistic concurrency on the scale subresource).
3. Raise the revision's current ReplicaSet to the claimed count, then create the pod from that ReplicaSet's own
   template (``pod-template-hash`` included), owned by it, with ``spec.nodeName`` set to this node. The ReplicaSet
   counts the pod as its own: there is nothing to hand off and nothing to leak. If the ReplicaSet already created
   a pod for the replica, it trims one, and kube 1.20 ranks an unscheduled pod (its own) for deletion before a
   scheduled one (ours, which carries ``nodeName`` from birth); such wasted creations are counted.
4. The tracker forwards to the pod as soon as the pod itself is Ready in this node's pod cache.

Anything that fails after the claim falls back by itself: the replica is claimed, so the ReplicaSet replaces a
pod that failed admission or was deleted, and the queue drains to whichever pod is Ready first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from activator.claiming import claim_replica, raise_replicaset
from activator.metrics import Metrics
from activator.scaling import StandardPath
from localsched.knative import REVISION_LABEL, Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import KubeError, NotFound
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import filter_local

log = logging.getLogger(__name__)

SCHEDULED_BY_LABEL = "localsched.dev/scheduled-by"  # on pods the activators create; value: the node
ACTIVATOR_ANNOTATION = "localsched.dev/activator"  # which activator pod created it
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def current_replicaset(replicasets: WatchCache, revision: Revision) -> Obj | None:
    """The revision Deployment's newest ReplicaSet (highest deployment revision), from the cache."""
    owned = [
        rs
        for rs in replicasets.by_index("revision", revision.key)
        if any(o.get("kind") == "Deployment" and o.get("name") == revision.deployment_name
               for o in rs["metadata"].get("ownerReferences") or [])
    ]  # fmt: skip
    if not owned:
        return None
    return max(owned, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, "0")))


def local_pod(replicaset: Obj, *, node: str, activator: str) -> Obj:
    """A pod exactly as the ReplicaSet would make it, but bound to ``node`` and marked as locally scheduled."""
    template = replicaset["spec"]["template"]
    meta = replicaset["metadata"]
    labels = {**(template.get("metadata", {}).get("labels") or {}), SCHEDULED_BY_LABEL: node}
    annotations = {**(template.get("metadata", {}).get("annotations") or {}), ACTIVATOR_ANNOTATION: activator}
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    return {
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": {**template["spec"], "nodeName": node},
    }


def revision_key_of(obj: Obj) -> list[str]:
    name = (obj["metadata"].get("labels") or {}).get(REVISION_LABEL)
    return [f"{obj['metadata']['namespace']}/{name}"] if name else []


class LocalPath:
    name = "local"

    def __init__(
        self,
        kube: KubeClient,
        *,
        node_name: str,
        activator_name: str,
        nodes: WatchCache,
        local_pods: WatchCache,
        replicasets: WatchCache,
        standard: StandardPath,
        metrics: Metrics,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.activator_name = activator_name or f"activator@{node_name}"
        self.nodes = nodes
        self.local_pods = local_pods
        self.replicasets = replicasets
        self.standard = standard
        self.metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()
        local_pods.add_handler(self._finish_lifecycle)

    def _skip(self, revision: Revision, reason: str) -> None:
        self.metrics.local_skips.labels(reason).inc()
        log.info("revision %s: not scheduling locally on %s: %s", revision.key, self.node_name, reason)

    async def ensure_capacity(self, revision: Revision) -> str:
        replicaset = current_replicaset(self.replicasets, revision)
        node = self.nodes.get(self.node_name)
        reason: str | None
        if replicaset is None:
            reason = "NoReplicaSet"
        elif node is None:
            reason = "NodeUnknown"
        else:
            reason = filter_local(node, replicaset["spec"]["template"]["spec"], self.local_pods.items())
        if reason is not None or replicaset is None:
            self._skip(revision, str(reason))
            return await self.standard.ensure_capacity(revision)

        started = time.monotonic()
        claim = await claim_replica(self.kube, revision)
        if claim is None:
            self._skip(revision, "MaxScale")
            return "max_scale"
        await raise_replicaset(self.kube, replicaset, claim.after)
        pod = await self.kube.create(r.PODS, local_pod(replicaset, node=self.node_name,
                                                       activator=self.activator_name))  # fmt: skip
        name = pod["metadata"]["name"]
        self.metrics.local_pods.labels("created").inc()
        log.info("revision %s: created %s on %s (replicas %d -> %d) in %.3fs", revision.key, name,
                 self.node_name, claim.before, claim.after, time.monotonic() - started)  # fmt: skip
        await self._record(revision, name)
        return self.name

    async def _record(self, revision: Revision, pod: str) -> None:
        """An Event on the Revision, so `kubectl describe revision` shows the local cold start (best effort)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event: dict[str, Any] = {
            "metadata": {"generateName": f"{revision.name}.", "namespace": revision.namespace},
            "involvedObject": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Revision",
                "name": revision.name,
                "namespace": revision.namespace,
                "uid": revision.uid,
            },
            "reason": "LocalScheduled",
            "message": f"activator on {self.node_name} created pod {pod} on its own node",
            "type": "Normal",
            "source": {"component": "localsched-activator", "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(r.EVENTS, event, revision.namespace)
        except KubeError as exc:
            log.debug("could not record event for %s: %s", revision.key, exc)

    def _finish_lifecycle(self, event: Event) -> None:
        """Pods this node's activators created and the kubelet rejected (e.g. OutOfcpu) are deleted, not leaked.

        Runs for every pod on the node as the cache lists and watches, so an activator that restarts finishes
        what an earlier one left behind. The ReplicaSet has already replaced a failed pod (it ignores failed pods).
        """
        pod = event.obj
        meta = pod["metadata"]
        if event.type == "DELETED" or (meta.get("labels") or {}).get(SCHEDULED_BY_LABEL) != self.node_name:
            return
        if pod.get("status", {}).get("phase") == "Failed" and not meta.get("deletionTimestamp"):
            task = asyncio.get_running_loop().create_task(self._delete_failed(meta["namespace"], meta["name"]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _delete_failed(self, namespace: str, name: str) -> None:
        try:
            await self.kube.delete(r.PODS, name, namespace)
            self.metrics.local_pods.labels("failed_deleted").inc()
            log.info("deleted failed locally scheduled pod %s/%s", namespace, name)
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("could not delete failed pod %s/%s: %s", namespace, name, exc)
