"""Local scheduling: on a cold start, the activator writes the revision's pod onto its own node.

Only the kubelet stays on the critical path. The steps (docs/local-scheduling.md has the why and the evidence):

1. Filter, as kube-scheduler's filter stage would for this one node: scheduler name, unsupported constraints,
   readiness, cordon, taints, nodeSelector and required affinity, resources against the pods already on the node
   (from a watch of this node's pods only). A failure has a named reason, is logged and counted, and the standard
   path runs instead.
2. Create the pod from the revision's current ReplicaSet template with ``spec.nodeName`` set to this node, as a
   stand-in the ReplicaSet cannot see yet (no ``pod-template-hash``, no owner), unless maxScale is already
   reached. It carries the revision label: the tracker forwards to it the moment it is Ready in this node's pod
   cache, and the private Service selects it.
3. Once the kubelet runs it, claim a replica under maxScale (``claiming.claim_replica``: optimistic concurrency
   on the scale subresource). The pod carries a readiness gate (``localsched.dev/claimed``) that only a won claim
   opens, so a pod whose claim was lost to a racing activator is never Ready; it is deleted.
4. Right after the claim, raise the current ReplicaSet to the claimed count (the deployment controller would, a
   hop later) and adopt the pod: add the hash label and the ReplicaSet as its controller. If the ReplicaSet made
   a pod of its own for the replica in those milliseconds, it now trims one. kube 1.20 has no
   pod-deletion-cost; it deletes unscheduled before scheduled, then Pending before Running, then unready before
   ready (creation times tie: one-second resolution). Its pod is milliseconds old and not yet scheduled; ours has
   been running since before the claim: it loses. Such wasted creations are counted. After adoption there is
   nothing to hand off and nothing to leak: the pod is the ReplicaSet's. Then the readiness gate opens.

An activator that restarts finds stand-ins its node's activators left unadopted (label ``scheduled-by``) and
adopts them, and deletes those the kubelet rejected. Anything that fails after the claim falls back by itself:
the replica is claimed, so the ReplicaSet's pod arrives through kube-scheduler and the queue drains to whichever
pod is Ready first.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import secrets
import time
from typing import Any

from activator.claiming import claim_replica, raise_replicaset, read_scale
from activator.metrics import Metrics
from activator.scaling import StandardPath
from localsched.knative import REVISION_LABEL, Revision
from localsched.kube import resources as r
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj
from localsched.kube.errors import KubeError, NotFound
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import filter_local

log = logging.getLogger(__name__)

SCHEDULED_BY_LABEL = "localsched.dev/scheduled-by"  # on pods the activators create; value: the node
ACTIVATOR_ANNOTATION = "localsched.dev/activator"  # which activator pod created it
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
CLAIM_GATE = "localsched.dev/claimed"  # readiness gate: the pod may be Ready only once its replica is claimed
ADOPTION_WAIT_SECONDS = 30.0
ABANDONED_AFTER_SECONDS = 10.0  # a live activator adopts its stand-in within milliseconds of creating it
ADOPTION_ATTEMPTS = 12  # with backoff up to 30 s between them: about five minutes


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
    """The ReplicaSet's pod, bound to ``node``, as a stand-in: without the hash label the ReplicaSet ignores it."""
    template = replicaset["spec"]["template"]
    meta = replicaset["metadata"]
    labels = {k: v for k, v in (template.get("metadata", {}).get("labels") or {}).items() if k != HASH_LABEL}
    annotations = {**(template.get("metadata", {}).get("annotations") or {}), ACTIVATOR_ANNOTATION: activator}
    return {
        "metadata": {
            "name": f"{meta['name']}-{secrets.token_hex(3)}",
            "namespace": meta["namespace"],
            "labels": {**labels, SCHEDULED_BY_LABEL: node},
            "annotations": annotations,
        },
        "spec": {
            **template["spec"],
            "nodeName": node,
            "readinessGates": [*(template["spec"].get("readinessGates") or []), {"conditionType": CLAIM_GATE}],
        },
    }


def claimed(pod: Obj) -> bool:
    return any(c.get("type") == CLAIM_GATE and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])  # fmt: skip


def adoption_patch(replicaset: Obj) -> Obj:
    """What makes a stand-in the ReplicaSet's own pod: its hash label, and the ReplicaSet as controller."""
    meta = replicaset["metadata"]
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    template_hash = replicaset["spec"]["template"]["metadata"]["labels"][HASH_LABEL]
    return {"metadata": {"labels": {HASH_LABEL: template_hash}, "ownerReferences": [owner]}}


def is_stand_in(pod: Obj, node: str) -> bool:
    meta = pod["metadata"]
    return (meta.get("labels") or {}).get(SCHEDULED_BY_LABEL) == node and not meta.get("ownerReferences")


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
        self._adopting: set[tuple[str, str]] = set()
        local_pods.add_handler(self._finish_lifecycle)

    async def _replicaset(self, revision: Revision, wait: float = 2.0) -> Obj | None:
        """The current ReplicaSet; a revision created a moment ago may need the deployment controller's next step."""
        try:
            return await self.replicasets.wait_for(lambda c: current_replicaset(c, revision), wait)
        except TimeoutError:
            return None

    def _skip(self, revision: Revision, reason: str) -> None:
        self.metrics.local_skips.labels(reason).inc()
        log.info("revision %s: not scheduling locally on %s: %s", revision.key, self.node_name, reason)

    async def ensure_capacity(self, revision: Revision) -> str:
        replicaset = await self._replicaset(revision)
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
        scale = await read_scale(self.kube, revision)
        if revision.max_scale > 0 and int(scale["spec"].get("replicas") or 0) >= revision.max_scale:
            self._skip(revision, "MaxScale")
            return "max_scale"
        body = local_pod(replicaset, node=self.node_name, activator=self.activator_name)
        name = body["metadata"]["name"]
        key = (revision.namespace, name)
        self._adopting.add(key)  # this call adopts it; the watch's ADDED must not too
        steps: dict[str, float] = {}

        def step(label: str) -> None:
            steps[label] = round(time.monotonic() - started, 3)

        try:
            await self.kube.create(r.PODS, body)
            self.metrics.local_pods.labels("created").inc()
            step("created")
            # Claim only once the kubelet runs our pod: whatever pod the ReplicaSet makes for the claim is then
            # younger and at best Pending when it trims (see the module docstring).
            phase = await self._phase_once_started(revision.namespace, name)
            step("running")
            if phase != "Running":
                self._skip(revision, f"Pod{phase or 'Gone'}")
                return await self.standard.ensure_capacity(revision)
            claim = await claim_replica(self.kube, revision)
            if claim is None:
                self._skip(revision, "MaxScale")
                await self._delete(revision.namespace, name, "lost_claim")
                return "max_scale"
            step("claimed")
            # Back to back: raise the ReplicaSet (the deployment controller would, a hop later) and adopt. A pod the
            # ReplicaSet makes in between is milliseconds old and unscheduled when it trims: it goes first. (Opening
            # the gate before this widened that window enough for the ReplicaSet's pod to get scheduled.)
            await raise_replicaset(self.kube, replicaset, claim.after)
            await self._adopt(revision.namespace, name, revision, claim.after, replicaset)
            step("adopted")
            await self._open_gate(revision.namespace, name)
            step("gate_open")
        finally:
            self._adopting.discard(key)
        log.info("revision %s: created %s on %s (replicas %d -> %d); steps %s", revision.key, name, self.node_name,
                 claim.before, claim.after, steps)  # fmt: skip
        await self._record(revision, name)
        return self.name

    async def _open_gate(self, namespace: str, name: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {"type": CLAIM_GATE, "status": "True", "reason": "ReplicaClaimed", "lastTransitionTime": now,
                     "message": f"replica claimed under maxScale by the activator on {self.node_name}"}  # fmt: skip
        await self.kube.patch(r.PODS, name, {"status": {"conditions": [condition]}}, namespace,
                              subresource="status", content_type=STRATEGIC_PATCH)  # fmt: skip

    async def _phase_once_started(self, namespace: str, name: str) -> str | None:
        """The pod's phase once the kubelet has started or rejected it (None: gone, or not within the wait)."""

        def started(cache: WatchCache) -> str | None:
            pod = cache.get(name, namespace)
            phase = (pod or {}).get("status", {}).get("phase")
            return phase if phase in ("Running", "Succeeded", "Failed") else None

        try:
            return await self.local_pods.wait_for(started, ADOPTION_WAIT_SECONDS)
        except TimeoutError:
            await self._delete(namespace, name, "not_started")
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _adopt(
        self, namespace: str, pod: str, revision: Revision, replicas: int, replicaset: Obj | None = None
    ) -> None:
        """Hand the stand-in to the ReplicaSet (given, else once its replicas include the claim, or a deadline)."""

        def ready_rs(cache: WatchCache) -> Obj | None:
            rs = current_replicaset(cache, revision)
            return rs if rs is not None and int(rs["spec"].get("replicas") or 0) >= replicas else None

        if replicaset is None:
            try:
                replicaset = await self.replicasets.wait_for(ready_rs, ADOPTION_WAIT_SECONDS)
            except TimeoutError:
                replicaset = current_replicaset(self.replicasets, revision)
        delay = 0.5
        for _ in range(ADOPTION_ATTEMPTS):
            replicaset = current_replicaset(self.replicasets, revision) if replicaset is None else replicaset
            if replicaset is None:
                return  # the revision is gone: the pod goes with it (garbage collection of the namespace/Revision)
            try:
                await self.kube.patch(r.PODS, pod, adoption_patch(replicaset), namespace)
                self.metrics.local_pods.labels("adopted").inc()
                log.info("handed %s/%s to ReplicaSet %s", namespace, pod, replicaset["metadata"]["name"])
                return
            except NotFound:
                return
            except KubeError as exc:
                log.warning("could not hand %s/%s to its ReplicaSet (retrying in %.1fs): %s", namespace, pod, delay,
                            exc)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            replicaset = None

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
        if meta.get("deletionTimestamp"):
            return
        key = (meta["namespace"], meta["name"])
        if pod.get("status", {}).get("phase") == "Failed":
            self._spawn(self._delete_failed(*key))
        elif event.type == "ADDED" and is_stand_in(pod, self.node_name) and key not in self._adopting:
            # Listed at start-up, or made by another activator on this node (two run during a rolling update):
            # only one still unadopted well after its creation was abandoned by an activator that died.
            self._adopting.add(key)
            self._spawn(self._adopt_found(pod))

    async def _adopt_found(self, pod: Obj) -> None:
        """Finish a stand-in an earlier activator left: claim it (or delete it at maxScale), open its gate, adopt."""
        meta = pod["metadata"]
        name = (meta.get("labels") or {}).get(REVISION_LABEL)
        try:
            created = calendar.timegm(time.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
            await asyncio.sleep(max(0.0, created + ABANDONED_AFTER_SECONDS - time.time()))
            try:
                pod = await self.kube.get(r.PODS, meta["name"], meta["namespace"])
            except NotFound:
                return
            meta = pod["metadata"]
            if name is None or not is_stand_in(pod, self.node_name) or meta.get("deletionTimestamp"):
                return  # its creator finished it after all
            revision_obj = await self.kube.get(r.REVISIONS, name, meta["namespace"])
            revision = Revision.from_object(revision_obj)
            if claimed(pod):
                scale = await read_scale(self.kube, revision)
                replicas = int(scale["spec"].get("replicas") or 0)
            else:
                claim = await claim_replica(self.kube, revision)
                if claim is None:
                    await self._delete(meta["namespace"], meta["name"], "lost_claim")
                    return
                replicaset = current_replicaset(self.replicasets, revision)
                if replicaset is not None:
                    await raise_replicaset(self.kube, replicaset, claim.after)
                    await self._adopt(meta["namespace"], meta["name"], revision, claim.after, replicaset)
                await self._open_gate(meta["namespace"], meta["name"])
                replicas = claim.after
            log.info("finishing the cold start of %s/%s left by an earlier activator", meta["namespace"], meta["name"])
            await self._adopt(meta["namespace"], meta["name"], revision, replicas)
        except (KubeError, ValueError) as exc:
            log.warning("could not finish stand-in %s/%s: %s", meta["namespace"], meta["name"], exc)
        finally:
            self._adopting.discard((meta["namespace"], meta["name"]))

    async def _delete_failed(self, namespace: str, name: str) -> None:
        await self._delete(namespace, name, "failed_deleted")

    async def _delete(self, namespace: str, name: str, outcome: str) -> None:
        try:
            await self.kube.delete(r.PODS, name, namespace)
            self.metrics.local_pods.labels(outcome).inc()
            log.info("deleted locally scheduled pod %s/%s (%s)", namespace, name, outcome)
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("could not delete pod %s/%s: %s", namespace, name, exc)
