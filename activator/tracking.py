"""Which endpoints serve each revision, from watch caches: never an API call per request.

Revisions, the revisions' private EndpointSlices, Nodes and the pods on this activator's own node are watched.
A revision's endpoints are the ready addresses of its ``{rev}-private`` slices whose node is Ready, plus its
Ready pods on this node straight from the pod cache: a pod scheduled here is used the moment it is Ready,
without waiting for the EndpointSlice to catch up. A node → revisions reverse index means a node
going NotReady (or away) takes every endpoint on it out of rotation at once, recomputing only the revisions that
had endpoints there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from activator.metrics import Metrics
from activator.throttling import Endpoint, Throttler, Throttlers
from localsched.knative import REVISION_LABEL, KnativeValueError, Revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.slices import SERVICE_NAME_LABEL, endpoints_of, port_of
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import node_is_ready

log = logging.getLogger(__name__)

PRIVATE_SUFFIX = "-private"
# Knative labels its private Services so, and the EndpointSlice controller copies Service labels onto slices.
SLICE_SELECTOR = "networking.internal.knative.dev/serviceType=Private"


def revision_of_pod(pod: Obj) -> list[str]:
    name = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL)
    return [f"{pod['metadata']['namespace']}/{name}"] if name else []


def pod_is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])  # fmt: skip


def first_container_port(pod: Obj) -> int | None:
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            return int(port["containerPort"])
    return None


def revision_of_slice(slice_obj: Obj) -> list[str]:
    """``["ns/rev"]`` for a slice of ``{rev}-private``, else ``[]`` (the slice index)."""
    service = (slice_obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL, "")
    if not service.endswith(PRIVATE_SUFFIX):
        return []
    return [f"{slice_obj['metadata']['namespace']}/{service.removesuffix(PRIVATE_SUFFIX)}"]


class Tracker:
    """Owns the watch caches and the per-revision throttlers, and keeps their endpoints current."""

    def __init__(
        self,
        kube: KubeClient,
        slice_resource: r.Resource,
        *,
        queue_limit: int,
        metrics: Metrics,
        on_no_capacity: Callable[[str], None],
        node_name: str,
    ) -> None:
        self.node_name = node_name
        self.revisions = WatchCache(kube, r.REVISIONS, name="revisions")
        self.slices = WatchCache(kube, slice_resource, label_selector=SLICE_SELECTOR, name="endpointslices")
        self.nodes = WatchCache(kube, r.NODES, name="nodes")
        self.local_pods = WatchCache(kube, r.PODS, field_selector=f"spec.nodeName={node_name}", name="local-pods")
        self.slices.add_index("revision", revision_of_slice)
        self.local_pods.add_index("revision", revision_of_pod)
        self.revisions.add_handler(self._on_revision)
        self.slices.add_handler(self._on_slice)
        self.nodes.add_handler(self._on_node)
        self.local_pods.add_handler(self._on_local_pod)
        self.metrics = metrics
        self.queue_limit = queue_limit
        self.on_no_capacity = on_no_capacity
        self.throttlers = Throttlers(self._new_throttler)
        self._nodes_of: dict[str, frozenset[str]] = {}  # revision -> nodes its slices mention
        self._by_node: dict[str, set[str]] = {}  # node -> revisions with endpoints there
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._parsed: dict[str, tuple[str, Revision | KnativeValueError]] = {}  # key -> (resourceVersion, parsed)

    @property
    def caches(self) -> tuple[WatchCache, ...]:
        return (self.revisions, self.slices, self.nodes, self.local_pods)

    def synced(self) -> bool:
        return all(c.synced.is_set() for c in self.caches)

    # -- lookups ---------------------------------------------------------------------------------------------

    def revision(self, key: str) -> Revision | None:
        """The parsed revision, None when unknown; raises KnativeValueError for an invalid one.

        Parsed once per resourceVersion: this is on every request's path."""
        namespace, _, name = key.partition("/")
        obj = self.revisions.get(name, namespace)
        if obj is None:
            return None
        version = str(obj["metadata"].get("resourceVersion", ""))
        cached = self._parsed.get(key)
        if cached is None or cached[0] != version:
            try:
                cached = (version, Revision.from_object(obj))
            except KnativeValueError as exc:
                cached = (version, exc)
            self._parsed[key] = cached
        if isinstance(cached[1], KnativeValueError):
            raise cached[1]
        return cached[1]

    def throttler(self, key: str) -> Throttler:
        return self.throttlers.get(key)

    def endpoints(self, key: str) -> frozenset[Endpoint]:
        found: set[Endpoint] = set()
        slice_port: int | None = None
        for slice_obj in self.slices.by_index("revision", key):
            port = port_of(slice_obj, "http") or port_of(slice_obj)
            if port is None:
                continue
            slice_port = port
            for ep in endpoints_of(slice_obj):
                if ep.ready and self._node_ready(ep.node):
                    found.add(Endpoint(ep.address, port, ep.node))
        if self._node_ready(self.node_name):
            for pod in self.local_pods.by_index("revision", key):
                ip = pod.get("status", {}).get("podIP")
                port = slice_port or first_container_port(pod)
                if ip and port and pod_is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                    found.add(Endpoint(ip, port, self.node_name))
        return frozenset(found)

    def _node_ready(self, name: str) -> bool:
        if not name:
            return True  # a slice that does not say where the endpoint is: trust the endpoint's own condition
        node = self.nodes.get(name)
        return node is not None and node_is_ready(node)

    async def wait_for_endpoints(self, key: str, timeout: float) -> None:
        """Until the revision has at least one ready endpoint; TimeoutError after ``timeout``."""
        if self.endpoints(key):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            waiters = self._waiters.get(key, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(key, None)

    # -- keeping endpoints current -----------------------------------------------------------------------------

    def _new_throttler(self, key: str) -> Throttler:
        try:
            revision = self.revision(key)
        except KnativeValueError:
            revision = None
        cc = revision.container_concurrency if revision else 0
        throttler = Throttler(container_concurrency=cc, queue_limit=self.queue_limit)
        throttler.update(self.endpoints(key))
        throttler.on_no_capacity = lambda: self.on_no_capacity(key)
        return throttler

    def recompute(self, key: str) -> None:
        nodes = frozenset(ep.node for s in self.slices.by_index("revision", key) for ep in endpoints_of(s) if ep.node)
        for node in self._nodes_of.get(key, frozenset()) - nodes:
            revisions = self._by_node.get(node)
            if revisions is not None:
                revisions.discard(key)
                if not revisions:
                    del self._by_node[node]
        for node in nodes:
            self._by_node.setdefault(node, set()).add(key)
        self._nodes_of[key] = nodes
        endpoints = self.endpoints(key)
        namespace, _, name = key.partition("/")
        self.metrics.endpoints.labels(namespace, name).set(len(endpoints))
        throttler = self.throttlers.peek(key)
        if throttler is not None:
            throttler.update(endpoints)
        if endpoints:
            for future in self._waiters.pop(key, []):
                if not future.done():
                    future.set_result(None)

    def revisions_on(self, node: str) -> frozenset[str]:
        return frozenset(self._by_node.get(node, ()))

    def _on_slice(self, event: Event) -> None:
        for key in revision_of_slice(event.obj):
            self.recompute(key)

    def _on_local_pod(self, event: Event) -> None:
        was = event.old is not None and pod_is_ready(event.old)
        now = event.type != "DELETED" and pod_is_ready(event.obj) and not event.obj["metadata"].get("deletionTimestamp")
        if was != now or event.type == "DELETED":
            for key in revision_of_pod(event.obj):
                self.recompute(key)

    def _on_node(self, event: Event) -> None:
        was = event.old is not None and node_is_ready(event.old)
        now = event.type != "DELETED" and node_is_ready(event.obj)
        if was != now:
            name = event.obj["metadata"]["name"]
            affected = self.revisions_on(name)
            if affected:
                log.info("node %s is %s: recomputing %d revision(s)", name, "Ready" if now else "NotReady",
                         len(affected))  # fmt: skip
            for key in affected:
                self.recompute(key)

    def _on_revision(self, event: Event) -> None:
        meta = event.obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if event.type == "DELETED":
            self.throttlers.remove(key)
            self._parsed.pop(key, None)
            return
        throttler = self.throttlers.peek(key)
        if throttler is None:
            return
        try:
            revision = self.revision(key)
        except KnativeValueError as exc:
            log.warning("revision %s is invalid: %s", key, exc)
            return
        if revision is not None:
            throttler.update(self.endpoints(key), revision.container_concurrency)
