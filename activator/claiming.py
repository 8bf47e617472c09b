"""Claiming a replica under maxScale, safely against any number of activators racing.

Read the Deployment's scale subresource; if maxScale is set and replicas have reached it, there is nothing to
claim. Otherwise write replicas + 1 with the resourceVersion that was read: the API server rejects the write
(409) if anyone wrote in between, and then we read and check again. Every successful claim therefore raised the
replicas from a value that was below maxScale at that instant, so the claims can never add up past it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from localsched.knative import Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Conflict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scaled:
    before: int
    after: int
    reads: int  # API round trips it took, conflicts included
    writes: int


class ClaimContention(Conflict):
    """Too many conflicting writes in a row (the scale is changing faster than we can read it)."""


async def update_scale(
    kube: KubeClient,
    resource: r.Resource,
    name: str,
    namespace: str,
    decide: Callable[[int], int | None],
    *,
    cached: Obj | None = None,
    attempts: int = 20,
) -> Scaled | None:
    """Let ``decide`` pick new replicas from the current ones (None: leave them) and write them with the
    resourceVersion they were read at; on 409 read and decide again. ``cached`` (the object from a watch cache)
    saves the first read. Returns what changed, or None if left alone."""
    reads = writes = 0
    for attempt in range(attempts):
        if attempt == 0 and cached is not None:
            meta = cached["metadata"]
            scale: Obj = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                          "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                       "resourceVersion": meta["resourceVersion"]},
                          "spec": {"replicas": int(cached.get("spec", {}).get("replicas") or 0)}}  # fmt: skip
        else:
            scale = await kube.get_scale(resource, name, namespace)
            reads += 1
        replicas = int(scale.get("spec", {}).get("replicas") or 0)
        wanted = decide(replicas)
        if wanted is None:
            return None
        scale["spec"] = {"replicas": wanted}  # metadata.resourceVersion is the one read: optimistic
        writes += 1
        try:
            await kube.replace_scale(resource, scale)
        except Conflict:
            continue  # someone else wrote in between
        return Scaled(replicas, wanted, reads, writes)
    raise ClaimContention(f"{resource.kind} {namespace}/{name}: {attempts} conflicting scale writes in a row")


async def claim_replica(kube: KubeClient, revision: Revision, cached: Obj | None = None) -> Scaled | None:
    """Raise the revision's replicas by one unless that would pass maxScale; None when at maxScale. ``cached``
    (the Deployment from a watch cache) saves a read unless someone wrote it since."""

    def one_more(replicas: int) -> int | None:
        return None if 0 < revision.max_scale <= replicas else replicas + 1

    return await update_scale(kube, r.DEPLOYMENTS, revision.deployment_name, revision.namespace, one_more,
                              cached=cached)  # fmt: skip


async def raise_replicaset(kube: KubeClient, replicaset: Obj, at_least: int) -> Scaled | None:
    """Make a ReplicaSet's replicas at least ``at_least`` (what the deployment controller will do a hop later),
    starting from the cached object: one round trip unless someone wrote it since."""
    meta = replicaset["metadata"]
    return await update_scale(kube, r.REPLICASETS, meta["name"], meta["namespace"],
                              lambda replicas: None if replicas >= at_least else at_least,
                              cached=replicaset)  # fmt: skip
