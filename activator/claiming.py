"""Claiming a replica under maxScale, safely against any number of activators racing.

Read the Deployment's scale subresource; if maxScale is set and replicas have reached it, there is nothing to
claim. Otherwise write replicas + 1 with the resourceVersion that was read: the API server rejects the write
(409) if anyone wrote in between, and then we read and check again. Every successful claim therefore raised the
replicas from a value that was below maxScale at that instant, so the claims can never add up past it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from localsched.knative import Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Conflict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    before: int
    after: int


class ClaimContention(Conflict):
    """Too many conflicting writes in a row (the scale is changing faster than we can read it)."""


async def claim_replica(kube: KubeClient, revision: Revision, *, attempts: int = 20) -> Claim | None:
    """Raise the revision's replicas by one unless that would pass maxScale; None when at maxScale."""
    for _ in range(attempts):
        scale = await read_scale(kube, revision)
        replicas = int(scale.get("spec", {}).get("replicas") or 0)
        if revision.max_scale > 0 and replicas >= revision.max_scale:
            return None
        scale["spec"] = {"replicas": replicas + 1}  # metadata.resourceVersion is the one read: optimistic
        try:
            await kube.replace_scale(r.DEPLOYMENTS, scale)
        except Conflict:
            continue
        return Claim(replicas, replicas + 1)
    raise ClaimContention(f"{revision.deployment_name}: {attempts} conflicting scale writes in a row")


async def read_scale(kube: KubeClient, revision: Revision) -> Obj:
    return await kube.get_scale(r.DEPLOYMENTS, revision.deployment_name, revision.namespace)


async def raise_replicaset(kube: KubeClient, replicaset: Obj, at_least: int, *, attempts: int = 20) -> None:
    """Make a ReplicaSet's replicas at least ``at_least`` (what the deployment controller will do anyway)."""
    meta = replicaset["metadata"]
    for _ in range(attempts):
        scale = await kube.get_scale(r.REPLICASETS, meta["name"], meta["namespace"])
        if int(scale.get("spec", {}).get("replicas") or 0) >= at_least:
            return
        scale["spec"] = {"replicas": at_least}
        try:
            await kube.replace_scale(r.REPLICASETS, scale)
            return
        except Conflict:
            continue
    raise ClaimContention(f"replicaset {meta['name']}: {attempts} conflicting scale writes in a row")
