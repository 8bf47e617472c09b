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
class Claim:
    before: int
    after: int


class ClaimContention(Conflict):
    """Too many conflicting writes in a row (the scale is changing faster than we can read it)."""


async def update_scale(
    kube: KubeClient,
    resource: r.Resource,
    name: str,
    namespace: str,
    decide: Callable[[int], int | None],
    *,
    attempts: int = 20,
) -> tuple[int, int] | None:
    """Read the scale subresource, let ``decide`` pick new replicas (None: leave it), write them with the
    resourceVersion that was read; on 409 read and decide again. Returns (before, after), or None if left alone."""
    for _ in range(attempts):
        scale = await kube.get_scale(resource, name, namespace)
        replicas = int(scale.get("spec", {}).get("replicas") or 0)
        wanted = decide(replicas)
        if wanted is None:
            return None
        scale["spec"] = {"replicas": wanted}  # metadata.resourceVersion is the one read: optimistic
        try:
            await kube.replace_scale(resource, scale)
        except Conflict:
            continue  # someone else wrote in between
        return replicas, wanted
    raise ClaimContention(f"{resource.kind} {namespace}/{name}: {attempts} conflicting scale writes in a row")


async def claim_replica(kube: KubeClient, revision: Revision) -> Claim | None:
    """Raise the revision's replicas by one unless that would pass maxScale; None when at maxScale."""

    def one_more(replicas: int) -> int | None:
        return None if 0 < revision.max_scale <= replicas else replicas + 1

    result = await update_scale(kube, r.DEPLOYMENTS, revision.deployment_name, revision.namespace, one_more)
    return None if result is None else Claim(*result)


async def read_scale(kube: KubeClient, revision: Revision) -> Obj:
    return await kube.get_scale(r.DEPLOYMENTS, revision.deployment_name, revision.namespace)


async def raise_replicaset(kube: KubeClient, replicaset: Obj, at_least: int) -> None:
    """Make a ReplicaSet's replicas at least ``at_least`` (what the deployment controller will do anyway)."""
    meta = replicaset["metadata"]
    await update_scale(kube, r.REPLICASETS, meta["name"], meta["namespace"],
                       lambda replicas: None if replicas >= at_least else at_least)  # fmt: skip
