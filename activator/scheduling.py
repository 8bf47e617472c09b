"""Local scheduling: on a cold start, the activator writes the revision's pod onto its own node.

Only the kubelet stays on the critical path, which is exactly (docs/local-scheduling.md has the why and the
evidence):

1. **Filter** from watch caches (no API call), as kube-scheduler's filter stage would for this one node:
   scheduler name, unsupported constraints, readiness, cordon, taints, nodeSelector and required affinity,
   resources against the pods already on the node, and maxScale against the cached ReplicaSet. A failure has a
   named reason, is counted, and the standard path runs instead.
2. **Create the pod** (one write): the current ReplicaSet's template with ``spec.nodeName`` set to this node, as a
   *stand-in*. Without the ReplicaSet's selector labels (and its ``pod-template-hash``) neither the ReplicaSet nor
   the private Service sees it, so nobody can use it before its replica is claimed, and a readiness gate
   (``localsched.dev/claimed``) keeps the API from calling it Ready before then.
3. **Claim its replica** under maxScale (``claiming.claim_replica``: the Deployment's replicas + 1, optimistic
   concurrency). When: at the create, both writes at once, where pod-deletion-cost lets the ReplicaSet keep the
   stand-in (1.22+); on older servers once the kubelet reports the pod Running, concurrently with step 5, so that
   any pod the ReplicaSet makes for the replica is younger and still Pending when it trims one (``claim_at``). A
   lost claim deletes the stand-in, which never served.
4. **The kubelet's first status with the pod IP**, from this node's pod watch.
5. **The activator's own readiness check of that IP** (the revision's readiness probe, ``probing``); once the
   claim is won too, the pod is admitted to the revision's endpoints and the queued requests go to it.

Off the critical path, after the claim: the moment the ReplicaSet's replicas include it, adopt the pod (its
selector labels and the ReplicaSet as controller), so the ReplicaSet counts it; open the readiness gate; record an
Event on the Revision. Anything that fails after the claim falls back by itself: the replica is claimed, so the
ReplicaSet's pod arrives through kube-scheduler and the queue drains to whichever pod serves first. What a dead
activator left behind is cleaned up by ``recovering``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from activator.claiming import Scaled, claim_replica, raise_replicaset
from activator.journal import ColdStart
from activator.metrics import Metrics
from activator.probing import ProbeSpecError, ReadinessCheck, probe_until_ready, readiness_check
from activator.recovering import ACTIVATOR_ANNOTATION
from activator.scaling import StandardPath
from activator.throttling import Endpoint
from activator.tracking import FOR_REVISION_LABEL, SCHEDULED_BY_LABEL, Tracker
from localsched.knative import Revision
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj
from localsched.kube.errors import KubeError, NotFound
from localsched.kube.watching import WatchCache
from localsched.predicates import filter_local
from localsched.tasks import TaskSet

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
CLAIM_GATE = "localsched.dev/claimed"  # readiness gate: a stand-in is Ready in the API only once its replica is won
# When the replica is claimed (docs/local-scheduling.md, "The race with the ReplicaSet"): at the pod's creation
# (fastest; needs pod-deletion-cost, Kubernetes 1.22+, to keep the ReplicaSet from trimming the local pod), or
# once the kubelet reports it Running (then the ReplicaSet's own pod for the replica always ranks below it).
CLAIM_AT_CREATE = "create"
CLAIM_AT_RUNNING = "running"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LOCAL_POD_DELETION_COST = "100"  # above the default 0: among equals, the ReplicaSet removes others first
HANDOVER_ATTEMPTS = 8  # with backoff up to 10 s between them
RAISE_GRACE_SECONDS = 5.0


class NothingClaimed(Exception):
    """The stand-in failed (refused by the API server, rejected by the kubelet, deleted) before its replica was
    claimed: the standard path takes over."""


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


def selector_labels(replicaset: Obj) -> set[str]:
    """The label keys the ReplicaSet selects by (with Knative's Deployment: revisionUID, plus the hash)."""
    return {*(replicaset["spec"].get("selector", {}).get("matchLabels") or {}), HASH_LABEL}


def stand_in(replicaset: Obj, revision: Revision, *, node: str, activator: str) -> Obj:
    """The ReplicaSet's pod, bound to ``node``, without the labels its ReplicaSet and private Service select by."""
    template = replicaset["spec"]["template"]
    meta = replicaset["metadata"]
    hidden = selector_labels(replicaset)
    labels = {k: v for k, v in (template.get("metadata", {}).get("labels") or {}).items() if k not in hidden}
    annotations = {**(template.get("metadata", {}).get("annotations") or {}), ACTIVATOR_ANNOTATION: activator}
    return {
        "metadata": {
            "name": f"{meta['name']}-{secrets.token_hex(3)}",
            "namespace": meta["namespace"],
            "labels": {**labels, SCHEDULED_BY_LABEL: node, FOR_REVISION_LABEL: revision.name},
            "annotations": annotations,
        },
        "spec": {
            **template["spec"],
            "nodeName": node,
            "readinessGates": [*(template["spec"].get("readinessGates") or []), {"conditionType": CLAIM_GATE}],
        },
    }


def gate_patch(node: str) -> Obj:
    """The condition that opens a stand-in's readiness gate (a strategic merge into ``status.conditions``)."""
    now = timestamps.now()
    condition = {"type": CLAIM_GATE, "status": "True", "reason": "ReplicaClaimed", "lastTransitionTime": now,
                 "message": f"replica claimed under maxScale by the activator on {node}"}  # fmt: skip
    return {"status": {"conditions": [condition]}}


def adoption_patch(replicaset: Obj) -> Obj:
    """What makes a stand-in the ReplicaSet's own pod: its template's labels, and the ReplicaSet as controller."""
    meta = replicaset["metadata"]
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    labels = dict(replicaset["spec"]["template"]["metadata"].get("labels") or {})
    return {"metadata": {"labels": labels, "ownerReferences": [owner]}}


def claim_order(setting: str, server_version: Obj) -> str:
    """``auto``: claim at creation where pod-deletion-cost protects the local pod (1.22+), else once Running."""
    if setting != "auto":
        return setting
    minor = "".join(ch for ch in str(server_version.get("minor", "")) if ch.isdigit())
    major = str(server_version.get("major", ""))
    modern = major.isdigit() and minor.isdigit() and (int(major), int(minor)) >= (1, 22)
    return CLAIM_AT_CREATE if modern else CLAIM_AT_RUNNING


class LocalPath:
    name = "local"

    def __init__(
        self,
        kube: KubeClient,
        tracker: Tracker,
        *,
        node_name: str,
        activator: str,
        replicasets: WatchCache,
        standard: StandardPath,
        probe_interval: float,
        timeout: float,
        metrics: Metrics,
        claim_at: str,
    ) -> None:
        if claim_at not in (CLAIM_AT_CREATE, CLAIM_AT_RUNNING):
            raise ValueError(f"claim_at must be {CLAIM_AT_CREATE!r} or {CLAIM_AT_RUNNING!r}, got {claim_at!r}")
        self.claim_at = claim_at
        self.kube = kube
        self.tracker = tracker
        self.node_name = node_name
        self.activator = activator
        self.replicasets = replicasets
        self.standard = standard
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.metrics = metrics
        self.handovers = TaskSet("local scheduling hand-over")

    # -- filter ----------------------------------------------------------------------------------------------

    async def _replicaset(self, revision: Revision, wait: float = 2.0) -> Obj | None:
        """The current ReplicaSet; a revision created a moment ago may need the deployment controller's next step."""
        try:
            return await self.replicasets.wait_for(lambda c: current_replicaset(c, revision), wait)
        except TimeoutError:
            return None

    def _refusal(self, revision: Revision, replicaset: Obj | None) -> str | None:
        """Why this node must not take the pod, or None (everything from caches: no API call)."""
        if not revision.local_scheduling:
            return "DisabledForRevision"
        if replicaset is None:
            return "NoReplicaSet"
        node = self.tracker.nodes.get(self.node_name)
        if node is None:
            return "NodeUnknown"
        if 0 < revision.max_scale <= int(replicaset["spec"].get("replicas") or 0):
            return "MaxScale"
        return filter_local(node, replicaset["spec"]["template"]["spec"], self.tracker.local_pods.items())

    # -- the cold start --------------------------------------------------------------------------------------

    async def start(self, revision: Revision, record: ColdStart) -> str:
        # The autoscaler hears of this demand once the claim is decided (``_claimed``), or at once from the
        # standard path when this one gives up, or when it ends (activator/reporting.py, "hold").
        self.standard.reporter.hold(revision.key)
        try:
            return await self._decide(revision, record)
        finally:
            self.standard.reporter.release(revision.key)

    async def _decide(self, revision: Revision, record: ColdStart) -> str:
        replicaset = await self._replicaset(revision)
        reason = self._refusal(revision, replicaset)
        if reason is not None or replicaset is None:
            self.metrics.local_skips.labels(str(reason)).inc()
            log.info("revision %s: not scheduling locally on %s: %s", revision.key, self.node_name, reason)
            record.notes["local_skip"] = reason
            return await self.standard.start(revision, record)
        try:
            check = readiness_check(revision.pod_spec, revision.container_port)
        except ProbeSpecError as exc:
            self.metrics.local_skips.labels("UnsupportedProbe").inc()
            record.notes["local_skip"] = str(exc)
            return await self.standard.start(revision, record)
        return await self._start(revision, replicaset, check, record)

    async def _start(self, revision: Revision, replicaset: Obj, check: ReadinessCheck, record: ColdStart) -> str:
        body = stand_in(replicaset, revision, node=self.node_name, activator=self.activator)
        if self.claim_at == CLAIM_AT_CREATE:
            body["metadata"]["annotations"][DELETION_COST_ANNOTATION] = LOCAL_POD_DELETION_COST
        record.pod = body["metadata"]["name"]
        record.notes["claim_at"] = self.claim_at
        record.step("decided")
        try:
            async with asyncio.timeout(self.timeout):
                endpoint = await self._cold_start(revision, body, check, record)
        except NothingClaimed:
            return await self.standard.start(revision, record)
        except TimeoutError:
            record.notes["local_failed"] = "no IP or no readiness within the activation timeout"
            return self.name
        if endpoint is None:
            return str(record.notes.setdefault("local_outcome", self.name))
        self.tracker.admit(revision.key, record.pod, endpoint)
        record.step("admitted")
        return self.name

    async def _cold_start(
        self, revision: Revision, body: Obj, check: ReadinessCheck, record: ColdStart
    ) -> Endpoint | None:
        """Create the stand-in and claim its replica (in the order ``claim_at`` says); its endpoint once it may
        serve, or None when it may not (the reason is in ``record.notes``)."""
        namespace, name = revision.namespace, body["metadata"]["name"]
        loop = asyncio.get_running_loop()
        created = loop.create_task(self.kube.create(r.PODS, body), name=f"create:{name}")
        claiming: asyncio.Task[Scaled | None] | None = None
        if self.claim_at == CLAIM_AT_CREATE:
            claiming = loop.create_task(self._claim(revision, record), name=f"claim:{revision.key}")
            record.waited_on("pod create + maxScale claim, at once")
        else:
            record.waited_on("pod create")
        try:
            await created
        except KubeError as exc:
            log.warning("revision %s: could not create a pod on %s (%s)", revision.key, self.node_name, exc)
            record.notes["create_failed"] = str(exc)[:200]
            if claiming is None:
                raise NothingClaimed from exc
            # A won claim is a replica the ReplicaSet brings the standard way.
            record.notes["local_outcome"] = "standard" if await claiming is not None else "max_scale"
            return None
        record.api(writes=1)
        record.step("created")
        self.metrics.local_pods.labels("created").inc()
        if claiming is not None and not await self._claimed(revision, name, claiming, record):
            return None
        ip = await self._address(namespace, name, created.result()["metadata"]["uid"], running=claiming is None)
        if ip is None:
            record.notes["local_failed"] = "the pod stopped before it served (rejected, trimmed or deleted)"
            if claiming is None:
                await self._delete(namespace, name, "not_started")
                raise NothingClaimed
            return None
        record.step("ip_known")
        record.waited_on("kubelet status with the pod IP" + ("" if claiming else " (and Running)"))
        probing = loop.create_task(self._probe(namespace, name, ip, check, record), name=f"probe:{name}")
        if claiming is not None:
            record.waited_on("own readiness check of the IP")
        else:  # the kubelet runs it: claim now, while the activator checks it
            record.waited_on("own readiness check of the IP + maxScale claim, at once")
            claiming = loop.create_task(self._claim(revision, record), name=f"claim:{revision.key}")
            if not await self._claimed(revision, name, claiming, record):
                probing.cancel()
                return None
        try:
            return await probing
        finally:
            probing.cancel()

    async def _claim(self, revision: Revision, record: ColdStart) -> Scaled | None:
        claim = await claim_replica(self.kube, revision)
        if claim is None:
            record.api(reads=1)
        else:
            record.api(reads=claim.reads, writes=claim.writes)
        return claim

    async def _claimed(
        self, revision: Revision, name: str, claiming: asyncio.Task[Scaled | None], record: ColdStart
    ) -> bool:
        """After the claim: a lost (or failed) one deletes the stand-in, which never served; a won one hands it
        over to the ReplicaSet, off the critical path."""
        try:
            claim = await claiming
        except BaseException:
            await self._delete(revision.namespace, name, "claim_failed")
            raise
        # Decided: the autoscaler hears of the demand now, not once the pod serves. Told seconds later (a burst's
        # readiness checks), it saw a replica with no demand and scaled the claimed pod away after its grace.
        self.standard.reporter.release(revision.key)
        if claim is None:
            log.info("revision %s: maxScale %d reached by other activators; deleting %s", revision.key,
                     revision.max_scale, name)  # fmt: skip
            await self._delete(revision.namespace, name, "lost_claim")
            record.notes["local_outcome"] = "max_scale"
            return False
        record.step("claimed")
        self.handovers.spawn(self._hand_over(revision, name, claim, record), name=f"handover:{name}")
        return True

    async def _address(self, namespace: str, name: str, uid: str, *, running: bool) -> str | None:
        """The pod IP from the kubelet's first status carrying it (and phase Running, if ``running``); None if
        the pod failed or went away first."""
        seen = False

        def reported(cache: WatchCache) -> tuple[str | None] | None:
            nonlocal seen
            pod = cache.get(name, namespace)
            if pod is None or pod["metadata"]["uid"] != uid:
                return (None,) if seen else None  # not in the cache yet, or gone since
            seen = True
            status = pod.get("status", {})
            if pod["metadata"].get("deletionTimestamp") or status.get("phase") == "Failed":
                return (None,)
            ip = status.get("podIP")
            return (ip,) if ip and (not running or status.get("phase") == "Running") else None

        (ip,) = await self.tracker.local_pods.wait_for(reported, self.timeout)
        return ip

    async def _probe(
        self, namespace: str, name: str, ip: str, check: ReadinessCheck, record: ColdStart
    ) -> Endpoint | None:
        """The pod's endpoint once the activator's own check of its IP passed; None if the pod goes away first."""

        def gone(cache: WatchCache) -> bool:
            pod = cache.get(name, namespace)
            return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

        loop = asyncio.get_running_loop()
        probing = loop.create_task(probe_until_ready(check, ip, interval=self.probe_interval,
                                                     timeout=self.tracker.prober.timeout))  # fmt: skip
        leaving = loop.create_task(self.tracker.local_pods.wait_for(gone, self.timeout))
        try:
            await asyncio.wait((probing, leaving), return_when=asyncio.FIRST_COMPLETED)
        finally:
            probing.cancel()
            leaving.cancel()
        if not probing.done() or probing.cancelled() or gone(self.tracker.local_pods):
            record.notes["local_failed"] = "the pod stopped before it served (trimmed or deleted)"
            return None
        record.step("probe_ok")
        record.notes["probes"] = probing.result()
        pod = self.tracker.local_pods.get(name, namespace)
        ports = [p["containerPort"] for c in (pod or {}).get("spec", {}).get("containers", [])
                 for p in c.get("ports") or []]  # fmt: skip
        return Endpoint(ip, int(ports[0]) if ports else check.port, self.node_name)

    # -- off the critical path -------------------------------------------------------------------------------

    async def _hand_over(self, revision: Revision, pod: str, claim: Scaled, record: ColdStart) -> None:
        """Adopt the stand-in the moment the ReplicaSet's replicas include its claim, retrying with backoff; a pod
        that cannot be handed over is deleted (the ReplicaSet's own pod serves the claimed replica instead).

        The deployment controller raises the ReplicaSet a hop after the claim; only if it has not within
        ``RAISE_GRACE_SECONDS`` (a controller-manager that is down or far behind) does the activator raise it. Two
        writers would race for nothing: whoever raises it, the ReplicaSet controller and this activator both react
        to the same watch event, the one by making a pod of its own, the other by adopting this one."""

        def raised(cache: WatchCache) -> Obj | None:
            rs = current_replicaset(cache, revision)
            return rs if rs is not None and int(rs["spec"].get("replicas") or 0) >= claim.after else None

        delay = 0.2
        for attempt in range(HANDOVER_ATTEMPTS):
            try:
                try:
                    replicaset = await self.replicasets.wait_for(raised, RAISE_GRACE_SECONDS)
                except TimeoutError:
                    current = current_replicaset(self.replicasets, revision)
                    if current is None:
                        break  # the revision is gone, and the pod with it
                    await raise_replicaset(self.kube, current, claim.after)
                    replicaset = await self.replicasets.wait_for(raised, RAISE_GRACE_SECONDS)
                record.step("rs_raised")
                await self.kube.patch(r.PODS, pod, adoption_patch(replicaset), revision.namespace)
                record.step("adopted")
                self.metrics.local_pods.labels("adopted").inc()
                await self.kube.patch(r.PODS, pod, gate_patch(self.node_name), revision.namespace,
                                      subresource="status", content_type=STRATEGIC_PATCH)  # fmt: skip
                record.step("gate_open")
                await self._event(revision, pod)
                return
            except NotFound:
                return  # the pod is gone (deleted, trimmed): nothing to hand over
            except (KubeError, TimeoutError) as exc:
                log.warning("could not hand %s/%s to its ReplicaSet (attempt %d, retrying in %.1fs): %s",
                            revision.namespace, pod, attempt + 1, delay, exc or "timeout")  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        await self._delete(revision.namespace, pod, "handover_failed")

    async def _event(self, revision: Revision, pod: str) -> None:
        """An Event on the Revision, so `kubectl describe revision` shows the local cold start (best effort)."""
        now = timestamps.now()
        event: dict[str, Any] = {
            "metadata": {"generateName": f"{revision.name}.", "namespace": revision.namespace},
            "involvedObject": {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": revision.name,
                               "namespace": revision.namespace, "uid": revision.uid},
            "reason": "LocalScheduled",
            "message": f"activator on {self.node_name} created pod {pod} on its own node",
            "type": "Normal",
            "source": {"component": "localsched-activator", "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }  # fmt: skip
        try:
            await self.kube.create(r.EVENTS, event, revision.namespace)
        except KubeError as exc:
            log.debug("could not record event for %s: %s", revision.key, exc)

    async def _delete(self, namespace: str, name: str, outcome: str) -> None:
        try:
            await self.kube.delete(r.PODS, name, namespace)
            self.metrics.local_pods.labels(outcome).inc()
            log.info("deleted locally scheduled pod %s/%s (%s)", namespace, name, outcome)
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("could not delete pod %s/%s: %s", namespace, name, exc)

    async def close(self) -> None:
        await self.handovers.close()
