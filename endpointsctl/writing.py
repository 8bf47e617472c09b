"""Writes to the API server, each one only when the desired content differs from what the server has.

"What the server has" is the freshest of two copies: the watch cache's, and the response to our own last write
(the watch may lag behind it by a few milliseconds; without this a quick second reconcile would write again).
Every successful write is counted in ``endpointsctl_writes_total{kind,operation}``, every refusal in
``endpointsctl_write_failures_total{kind,reason}``: "an unaffected revision is not written at all" is countable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from endpointsctl.metrics import Metrics
from endpointsctl.publishing import covers, is_ours, overlay
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import AlreadyExists, KubeError, NotFound
from localsched.kube.resources import Resource
from localsched.kube.watching import WatchCache

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # kind, namespace, name


class OutputConflict(Exception):
    """An object we would write exists and is not ours (no ``app.kubernetes.io/managed-by: endpointsctl``)."""


def _rv(obj: Mapping[str, Any] | None) -> int:
    raw = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else -1


def fresher(cached: Obj | None, written: Obj | None) -> Obj | None:
    """The newer of the cache's copy and our last write's response. resourceVersions are opaque by contract but
    etcd's are increasing integers; when either is not, the cache wins."""
    if written is None:
        return cached
    if cached is None:
        return written
    return written if _rv(written) > _rv(cached) >= 0 else cached


class Writer:
    def __init__(self, client: KubeClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics
        self._written: dict[Key, Obj] = {}

    # -- the freshest copy ----------------------------------------------------------------------------------------

    def current(self, cache: WatchCache, name: str, namespace: str) -> Obj | None:
        return fresher(cache.get(name, namespace), self._written.get((cache.resource.kind, namespace, name)))

    def is_echo(self, obj: Mapping[str, Any]) -> bool:
        """A watch event that only reports our own last write."""
        meta = obj.get("metadata") or {}
        written = self._written.get((str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))))
        return written is not None and _rv(written) == _rv(obj) >= 0

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._written.pop((kind, namespace, name), None)

    def clear(self) -> None:
        self._written.clear()

    def _remember(self, resource: Resource, obj: Obj) -> Obj:
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        meta = obj["metadata"]
        self._written[(resource.kind, str(meta.get("namespace") or ""), str(meta["name"]))] = obj
        return obj

    def _count(self, kind: str, operation: str) -> None:
        self.metrics.writes.labels(kind, operation).inc()

    def _failed(self, kind: str, exc: KubeError) -> None:
        self.metrics.write_failures.labels(kind, exc.reason or type(exc).__name__).inc()

    # -- writes ---------------------------------------------------------------------------------------------------

    async def create(self, resource: Resource, body: Obj) -> Obj:
        namespace = body["metadata"].get("namespace")
        try:
            created = await self.client.create(resource, body, namespace)
        except KubeError as exc:
            self._failed(resource.kind, exc)
            raise
        self._count(resource.kind, "create")
        return self._remember(resource, created)

    async def apply(self, cache: WatchCache, desired: Obj) -> Obj:
        """Make the object say what ``desired`` says: create it, update it, or -- when it already does -- leave it.

        Raises :class:`OutputConflict` when the object exists and is not ours; other failures as KubeError.
        """
        resource = cache.resource
        meta = desired["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        actual = self.current(cache, name, namespace)
        if actual is None:
            try:
                return await self.create(resource, desired)
            except AlreadyExists:
                actual = await self.client.get(resource, name, namespace)
        if not is_ours(actual):
            raise OutputConflict(f"{resource.kind} {namespace}/{name} exists and is not managed by endpointsctl")
        if covers(desired, actual):
            return actual
        return await self.update(resource, overlay(actual, desired))

    async def update(self, resource: Resource, body: Obj) -> Obj:
        """PUT ``body``, which carries the resourceVersion it was read at (409 Conflict when it is stale)."""
        try:
            updated = await self.client.replace(resource, body)
        except KubeError as exc:
            self._failed(resource.kind, exc)
            raise
        self._count(resource.kind, "update")
        return self._remember(resource, updated)

    async def replace_status(self, resource: Resource, obj: Obj, status: Obj) -> Obj:
        """Write ``status`` unless the object already has exactly that status."""
        if (obj.get("status") or {}) == status:
            return obj
        body = {**obj, "status": status}
        try:
            updated = await self.client.replace_status(resource, body)
        except KubeError as exc:
            self._failed(resource.kind, exc)
            raise
        self._count(resource.kind, "status")
        return self._remember(resource, updated)

    async def delete(self, cache: WatchCache, name: str, namespace: str) -> bool:
        """Delete our object if it exists (precondition: the uid we saw). True when something was deleted."""
        actual = self.current(cache, name, namespace)
        if actual is None or not is_ours(actual):
            return False
        uid = str(actual["metadata"].get("uid") or "")
        try:
            await self.client.delete(cache.resource, name, namespace, preconditions={"uid": uid} if uid else None)
        except NotFound:
            pass
        except KubeError as exc:
            self._failed(cache.resource.kind, exc)
            raise
        else:
            self._count(cache.resource.kind, "delete")
        self.forget(cache.resource.kind, namespace, name)
        return True
