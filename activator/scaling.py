"""Cold starts on the standard path: report the demand to the autoscaler, which scales the revision from zero.

This is Knative's chain: the activator reports demand for a revision at zero at once (``reporting``), the
autoscaler raises the Deployment's replicas, the deployment and replicaset controllers, kube-scheduler and the
kubelet do the rest, and the EndpointSlice controller publishes the new pod's address (not ready yet), which the
activator probes itself (``tracking``). The activator never writes the replicas on this path: the autoscaler owns
them (Knative's KPA, or KEDA through endpointsctl). Local scheduling (``scheduling``) replaces the chain with a pod
the activator writes itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from activator.journal import ColdStart
from activator.reporting import Reporter
from localsched.knative import Revision

log = logging.getLogger(__name__)

CHAIN = (
    "autoscaler -> deployment -> replicaset -> kube-scheduler -> kubelet status with the IP -> endpointslice controller"
)


class ColdStartPath(Protocol):
    name: str

    async def start(self, revision: Revision, record: ColdStart) -> str:
        """Make a replica of ``revision`` come; returns the path taken (recorded in ``record``, with its steps).

        Returns once the path has done its part: the local path once its pod serves (or it fell back), the
        standard path once the replica is asked for; the caller then waits for the revision's endpoints."""


class StandardPath:
    name = "standard"

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    async def start(self, revision: Revision, record: ColdStart) -> str:
        """Report the demand now; the autoscaler's decision and the chain follow without the activator."""
        self.reporter.report_now(revision.key)
        record.step("reported")
        record.waited_on(CHAIN)
        log.info("revision %s: demand reported for a scale from zero", revision.key)
        return self.name
