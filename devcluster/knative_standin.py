"""TEST SCAFFOLDING — a stand-in for Knative Serving's revision reconciler, which cannot run on the devcluster.

For every ``serving.knative.dev/v1`` Revision it creates what Knative would and what localsched reads:

* ``{rev}-deployment``: the revision's pod spec with Knative's labels (``serving.knative.dev/revision`` ...),
  ``PORT`` set to the container port and a readiness probe (the user's, else TCP on the port). It is created at
  ``min-scale`` replicas (0 by default) and its replicas are never touched again: scaling is for the activator and
  the autoscaler, not for this stand-in. There is no queue-proxy; the private Service targets the user container.
* ``{rev}-private``: a ClusterIP Service selecting the revision's pods (the EndpointSlice controller publishes them,
  not-ready ones included, marked so).

Both select by ``serving.knative.dev/revisionUID``, as Knative's Deployment and SKS private Service do.

Both are owned by the Revision, so deleting the Revision garbage-collects them. The Revision's ``Ready`` condition
tells whether the reconcile succeeded, or why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

from localsched import knative
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import AlreadyExists, KubeError, NotFound
from localsched.kube.watching import Event, WatchCache, key_of

log = logging.getLogger("knative-standin")

PROBE_PERIOD_ANNOTATION = "devcluster.localsched.dev/probe-period-ms"
DEFAULT_PROBE_PERIOD_MS = "50"  # queue-proxy's aggressive probing of a starting container


def owner_reference(revision: Obj) -> Obj:
    meta = revision["metadata"]
    return {"apiVersion": knative.REVISION_API_VERSION, "kind": "Revision", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def desired_deployment(revision: Obj, rev: knative.Revision) -> Obj:
    labels = {
        **{k: v for k, v in rev.labels.items() if k.startswith("serving.knative.dev/")},
        knative.REVISION_LABEL: rev.name,
        knative.REVISION_UID_LABEL: rev.uid,
    }
    pod_spec: Obj = copy.deepcopy(dict(rev.pod_spec))
    pod_spec.setdefault("enableServiceLinks", False)
    containers = pod_spec.get("containers") or []
    if containers:
        user = containers[0]
        ports = user.setdefault("ports", [{"containerPort": rev.container_port, "name": "user-port"}])
        port = int(ports[0]["containerPort"])
        env = user.setdefault("env", [])
        if not any(e.get("name") == "PORT" for e in env):
            env.append({"name": "PORT", "value": str(port)})
        user.setdefault("readinessProbe", {"tcpSocket": {"port": port}, "periodSeconds": 1, "successThreshold": 1})
    annotations = {PROBE_PERIOD_ANNOTATION: DEFAULT_PROBE_PERIOD_MS, **rev.annotations}
    return {
        "metadata": {
            "name": rev.deployment_name,
            "namespace": rev.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(revision)],
        },
        "spec": {
            "replicas": rev.min_scale,
            "selector": {"matchLabels": {knative.REVISION_UID_LABEL: rev.uid}},
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def desired_private_service(revision: Obj, rev: knative.Revision) -> Obj:
    return {
        "metadata": {
            "name": rev.private_service_name,
            "namespace": rev.namespace,
            "labels": {knative.REVISION_LABEL: rev.name, "networking.internal.knative.dev/serviceType": "Private"},
            "ownerReferences": [owner_reference(revision)],
        },
        "spec": {
            "selector": {knative.REVISION_UID_LABEL: rev.uid},
            "ports": [{"name": "http", "port": 80, "targetPort": rev.container_port, "protocol": "TCP"}],
        },
    }


class StandIn:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.revisions = WatchCache(client, r.REVISIONS, name="revisions")
        self.revisions.add_handler(self._on_event)
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.pending: set[tuple[str, str]] = set()

    def _on_event(self, event: Event) -> None:
        key = key_of(event.obj)
        if event.type != "DELETED" and key not in self.pending:
            self.pending.add(key)
            self.queue.put_nowait(key)

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.pending.discard(key)
            revision = self.revisions.get(key[1], key[0])
            if revision is None:
                continue
            try:
                await self.reconcile(revision)
            except KubeError as exc:
                log.warning("revision %s/%s: %s; retrying", *key, exc)
                await asyncio.sleep(1)
                if key not in self.pending:
                    self.pending.add(key)
                    self.queue.put_nowait(key)

    async def reconcile(self, revision: Obj) -> None:
        try:
            rev = knative.Revision.from_object(revision)
        except ValueError as exc:
            await self._condition(revision, "False", "InvalidSpec", str(exc))
            return
        for resource, body in ((r.DEPLOYMENTS, desired_deployment(revision, rev)),
                               (r.SERVICES, desired_private_service(revision, rev))):  # fmt: skip
            with contextlib.suppress(AlreadyExists):
                await self.client.create(resource, body, rev.namespace)
        await self._condition(revision, "True", "Reconciled", "deployment and private service exist")

    async def _condition(self, revision: Obj, status: str, reason: str, message: str) -> None:
        meta = revision["metadata"]
        status_now = revision.get("status", {})
        current: Obj = next((c for c in status_now.get("conditions", []) if c.get("type") == "Ready"), {})
        generation = meta.get("generation", 1)
        seen = (current.get("status"), current.get("reason"), status_now.get("observedGeneration"))
        if seen == (status, reason, generation):
            return
        body: dict[str, Any] = {
            "status": {
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}],
            }
        }
        with contextlib.suppress(NotFound):
            await self.client.patch(r.REVISIONS, meta["name"], body, meta["namespace"], subresource="status")

    async def run(self) -> None:
        workers = [asyncio.create_task(self.worker(), name=f"worker-{i}") for i in range(4)]
        try:
            await self.revisions.run()
        finally:
            for w in workers:
                w.cancel()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        async with await KubeClient.from_environment(user_agent="knative-standin") as client:
            await StandIn(client).run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
