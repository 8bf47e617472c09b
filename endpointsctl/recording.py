"""Kubernetes Events, best effort: recorded in the background, never failing or delaying a reconcile."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from endpointsctl.metrics import Metrics
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import KubeError

log = logging.getLogger(__name__)

COMPONENT = "endpointsctl"


def event(involved: Mapping[str, Any], kind: str, reason: str, message: str, *, host: str = "") -> Obj:
    """A core/v1 Event about ``involved`` (``kind`` is ``Normal`` or ``Warning``)."""
    meta = involved["metadata"]
    now = timestamps.now()
    return {
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace", "")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", ""),
            "kind": involved.get("kind", ""),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT,
        "reportingInstance": host,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class Recorder:
    def __init__(self, client: KubeClient, metrics: Metrics, host: str = "") -> None:
        self.client = client
        self.metrics = metrics
        self.host = host
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, involved: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        body = event(involved, kind, reason, message, host=self.host)
        task = asyncio.create_task(self._create(body), name=f"event:{reason}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def record_transitions(
        self, involved: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any], kinds: Iterable[str]
    ) -> None:
        """A Warning event for each condition of ``kinds`` that turned True between two statuses."""
        before = {c.get("type"): c.get("status") for c in previous.get("conditions") or ()}
        watched = frozenset(kinds)
        for condition in new.get("conditions") or ():
            kind, holds = condition["type"], condition["status"] == "True"
            if kind in watched and holds and before.get(kind) != "True":
                self.record(involved, "Warning", condition["reason"], condition.get("message", ""))

    async def _create(self, body: Obj) -> None:
        try:
            await self.client.create(r.EVENTS, body, body["metadata"]["namespace"])
        except KubeError as exc:
            log.info("could not record event %s: %s", body["reason"], exc)
            return
        self.metrics.writes.labels("Event", "create").inc()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
