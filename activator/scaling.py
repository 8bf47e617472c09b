"""Cold starts on the standard path: ask for a replica by scaling the revision's Deployment from 0 to 1.

This is what Knative's autoscaler does when the activator reports demand for a revision at zero; the
deployment and replicaset controllers, kube-scheduler and the kubelet do the rest. Local scheduling (next to
this module) replaces it with a pod the activator writes itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from activator.claiming import update_scale
from localsched.knative import Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient

log = logging.getLogger(__name__)


class ColdStartPath(Protocol):
    name: str

    async def ensure_capacity(self, revision: Revision) -> str:
        """Make a replica of ``revision`` come (Ready when the tracker sees an endpoint); returns the path taken."""


async def scale_from_zero(kube: KubeClient, revision: Revision) -> bool:
    """Replicas 0 → 1 on the Deployment's scale subresource (optimistic); False when they were already above 0."""
    raised = await update_scale(kube, r.DEPLOYMENTS, revision.deployment_name, revision.namespace,
                                lambda replicas: 1 if replicas == 0 else None)  # fmt: skip
    if raised is not None:
        log.info("revision %s: scaled %s from 0 to 1", revision.key, revision.deployment_name)
    return raised is not None


class StandardPath:
    name = "standard"

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def ensure_capacity(self, revision: Revision) -> str:
        await scale_from_zero(self.kube, revision)
        return self.name
