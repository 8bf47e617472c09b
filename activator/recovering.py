"""Cleaning up after activators that died on this node: what local scheduling may leave behind.

Runs for every pod on the node as the cache lists and watches, so an activator that restarts finishes what an
earlier one (or another on the node, during a rolling update) left:

* a pod an activator wrote here that the kubelet rejected (phase Failed, e.g. OutOfcpu) is deleted: the
  ReplicaSet ignores failed pods and has already made another for the replica;
* a stand-in (never adopted by its ReplicaSet) whose creator is gone is deleted: its creator died between the
  create and the hand-over. It never served anyone but its dead creator (no selector labels), and if its claim
  was won, the ReplicaSet's own pod covers the replica. The creator is named on the pod as ``<pod>/<instance>``
  (the instance is random per process): gone means this very pod restarted (same pod, another instance), or no
  such activator pod exists any more. A stand-in of a live creator is its cold start's business; one still there
  ``ABANDONED_AFTER_SECONDS`` after its creation is deleted all the same (a backstop: a cold start gives up long
  before).
"""

from __future__ import annotations

import asyncio
import logging
import time

from activator.metrics import Metrics
from activator.tracking import SCHEDULED_BY_LABEL, is_stand_in
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient
from localsched.kube.errors import KubeError, NotFound
from localsched.kube.watching import Event, WatchCache
from localsched.tasks import TaskSet

log = logging.getLogger(__name__)

ABANDONED_AFTER_SECONDS = 600.0
STANDALONE = "standalone@"  # an activator not running in a pod (tests, benchmarks): "standalone@<node>/<instance>"
ACTIVATOR_ANNOTATION = "localsched.dev/activator"


class Recovery:
    def __init__(
        self,
        kube: KubeClient,
        local_pods: WatchCache,
        *,
        node_name: str,
        activator: str,
        activator_namespace: str,
        metrics: Metrics,
    ) -> None:
        self.kube = kube
        self.local_pods = local_pods
        self.node_name = node_name
        self.activator = activator  # this process: its own stand-ins are its cold starts' business
        self.activator_namespace = activator_namespace
        self.metrics = metrics
        self.tasks = TaskSet("recovery")
        self._handled: set[str] = set()  # pod uids with a cleanup scheduled
        local_pods.add_handler(self._on_pod)

    def _on_pod(self, event: Event) -> None:
        pod = event.obj
        meta = pod["metadata"]
        if event.type == "DELETED":
            self._handled.discard(meta["uid"])
            return
        if (meta.get("labels") or {}).get(SCHEDULED_BY_LABEL) != self.node_name or meta.get("deletionTimestamp"):
            return
        if meta["uid"] in self._handled:
            return
        creator = (meta.get("annotations") or {}).get(ACTIVATOR_ANNOTATION, "")
        if pod.get("status", {}).get("phase") == "Failed":
            self._handled.add(meta["uid"])
            self.tasks.spawn(self._delete(meta["namespace"], meta["name"], meta["uid"], "failed_deleted"),
                             name=f"recover:{meta['name']}")  # fmt: skip
        elif is_stand_in(pod) and creator != self.activator:
            self._handled.add(meta["uid"])
            self.tasks.spawn(self._recover_stand_in(meta["namespace"], meta["name"], meta["uid"], creator,
                                                    timestamps.epoch_seconds(meta["creationTimestamp"])),
                             name=f"recover:{meta['name']}")  # fmt: skip

    async def _creator_gone(self, creator: str) -> bool:
        pod_name, _, _ = creator.partition("/")
        if pod_name == self.activator.partition("/")[0]:
            return True  # this very activator, restarted: the process that made it is gone
        if not pod_name or pod_name.startswith(STANDALONE):
            return False  # not a pod: only the age tells
        try:
            await self.kube.get(r.PODS, pod_name, self.activator_namespace)
        except NotFound:
            return True
        return False

    async def _recover_stand_in(self, namespace: str, name: str, uid: str, creator: str, created: float) -> None:
        try:
            gone = await self._creator_gone(creator)
        except KubeError as exc:
            log.warning("could not tell whether %s, which made %s/%s, is alive: %s", creator, namespace, name, exc)
            gone = False
        if not gone:
            await asyncio.sleep(max(0.0, created + ABANDONED_AFTER_SECONDS - time.time()))
        pod = self.local_pods.get(name, namespace)
        if pod is None or pod["metadata"]["uid"] != uid or not is_stand_in(pod):
            self._handled.discard(uid)  # adopted after all (or gone)
            return
        log.info("stand-in %s/%s was never handed over by %s, which is gone; deleting it", namespace, name, creator)
        await self._delete(namespace, name, uid, "abandoned_deleted")

    async def _delete(self, namespace: str, name: str, uid: str, outcome: str) -> None:
        try:
            await self.kube.delete(r.PODS, name, namespace, preconditions={"uid": uid})
            self.metrics.local_pods.labels(outcome).inc()
            log.info("deleted pod %s/%s left by an activator on %s (%s)", namespace, name, self.node_name, outcome)
        except NotFound:
            pass
        except KubeError as exc:
            self._handled.discard(uid)
            log.warning("could not delete pod %s/%s: %s", namespace, name, exc)

    async def close(self) -> None:
        await self.tasks.close()
