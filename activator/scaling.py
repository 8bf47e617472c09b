"""Cold starts on the standard path: ask for a replica by scaling the revision's Deployment from 0 to 1.

This is what Knative's autoscaler does when the activator reports demand for a revision at zero; the
deployment and replicaset controllers, kube-scheduler and the kubelet do the rest, and the EndpointSlice
controller publishes the new pod's address (not ready yet), which the activator probes itself (``tracking``).
Local scheduling (``scheduling``) replaces the chain with a pod the activator writes itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from activator.claiming import update_scale
from activator.journal import ColdStart
from localsched.knative import Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient

log = logging.getLogger(__name__)

CHAIN = "deployment -> replicaset -> kube-scheduler -> kubelet status with the IP -> endpointslice controller"


class ColdStartPath(Protocol):
    name: str

    async def start(self, revision: Revision, record: ColdStart) -> str:
        """Make a replica of ``revision`` come; returns the path taken (recorded in ``record``, with its steps).

        Returns once the path has done its part: the local path once its pod serves (or it fell back), the
        standard path once the replica is asked for; the caller then waits for the revision's endpoints."""


class StandardPath:
    name = "standard"

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def start(self, revision: Revision, record: ColdStart) -> str:
        """Replicas 0 -> 1 on the Deployment's scale subresource (optimistic); nothing when already above 0."""
        scaled = await update_scale(self.kube, r.DEPLOYMENTS, revision.deployment_name, revision.namespace,
                                    lambda replicas: 1 if replicas == 0 else None)  # fmt: skip
        if scaled is None:
            record.api(reads=1)
        else:
            record.api(reads=scaled.reads, writes=scaled.writes)
        record.step("scaled" if scaled is not None else "already_scaled")
        record.waited_on("scale write" if scaled is not None else "scale read")
        record.waited_on(CHAIN)
        if scaled is not None:
            log.info("revision %s: scaled %s from 0 to 1", revision.key, revision.deployment_name)
        return self.name
