"""Which endpoints serve each revision, from watch caches: never an API call per request.

Revisions, the revisions' private EndpointSlices, Nodes and the pods on this activator's own node are watched.
A revision's endpoints are, on Ready nodes only:

* the addresses of its ``{rev}-private`` slices that are ready, and the not-ready ones that passed the
  activator's own readiness check (as Knative's activator probes not-ready addresses itself, so a new pod serves
  before Kubernetes calls it Ready);
* its pods on this node straight from the pod cache, Ready or passed the check, without waiting for the
  EndpointSlice to catch up;
* a pod this activator scheduled here (a stand-in, see ``scheduling``) only once its cold start admitted it: its
  replica was claimed and the check passed. Other stand-ins on the node are never used.

Not-ready candidates are probed (``probing.Prober``) only for revisions with a throttler, i.e. with traffic here.
A node -> revisions reverse index means a node going NotReady (or away) takes every endpoint on it out of rotation
at once, recomputing only the revisions that had endpoints there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from activator.metrics import Metrics
from activator.probing import Prober, ProbeSpecError, ReadinessCheck, readiness_check
from activator.throttling import Endpoint, Throttler, Throttlers
from localsched.knative import (
    PRIVATE_SERVICE_SELECTOR,
    REVISION_LABEL,
    KnativeValueError,
    Revision,
    revision_key_of,
    revision_of_private_service,
)
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.slices import SERVICE_NAME_LABEL, endpoints_of, port_of
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import is_ready, node_is_ready

log = logging.getLogger(__name__)

SCHEDULED_BY_LABEL = "localsched.dev/scheduled-by"  # on pods the activators create; value: the node
FOR_REVISION_LABEL = "localsched.dev/revision"  # on those pods too: the revision, whatever Knative's labels


def revision_of_pod(pod: Obj) -> list[str]:
    """``["ns/rev"]`` from Knative's revision label, else from the one on the pods activators create (the pod
    index)."""
    return revision_key_of(pod, (REVISION_LABEL, FOR_REVISION_LABEL))


def is_stand_in(pod: Obj) -> bool:
    """A pod an activator wrote onto its node that no ReplicaSet owns yet."""
    meta = pod["metadata"]
    return SCHEDULED_BY_LABEL in (meta.get("labels") or {}) and not meta.get("ownerReferences")


def first_container_port(pod: Obj) -> int | None:
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            return int(port["containerPort"])
    return None


def revision_of_slice(slice_obj: Obj) -> list[str]:
    """``["ns/rev"]`` for a slice of ``{rev}-private``, else ``[]`` (the slice index)."""
    revision = revision_of_private_service((slice_obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
    return [] if revision is None else [f"{slice_obj['metadata']['namespace']}/{revision}"]


def _pod_signature(pod: Obj | None) -> tuple[object, ...]:
    """What about a local pod changes its endpoints: address, readiness, terminating, ownership."""
    if pod is None:
        return ()
    meta = pod["metadata"]
    return (pod.get("status", {}).get("podIP"), is_ready(pod), bool(meta.get("deletionTimestamp")),
            is_stand_in(pod), pod.get("status", {}).get("phase"))  # fmt: skip


class Tracker:
    """Owns the watch caches, the per-revision throttlers and the prober, and keeps their endpoints current."""

    def __init__(
        self,
        kube: KubeClient,
        slice_resource: r.Resource,
        *,
        queue_limit: int,
        metrics: Metrics,
        on_no_capacity: Callable[[str], None],
        node_name: str,
        probe_interval: float,
    ) -> None:
        self.node_name = node_name
        self.revisions = WatchCache(kube, r.REVISIONS, name="revisions")
        # Knative labels its private Services so, and the EndpointSlice controller copies their labels onto slices.
        self.slices = WatchCache(kube, slice_resource, label_selector=PRIVATE_SERVICE_SELECTOR, name="endpointslices")
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
        self.prober = Prober(interval=probe_interval, on_healthy=self.recompute)
        self.throttlers = Throttlers(self._new_throttler)
        self._admitted: dict[str, set[str]] = {}  # revision -> stand-ins admitted by their cold start
        self._nodes_of: dict[str, frozenset[str]] = {}  # revision -> nodes its slices mention
        self._by_node: dict[str, set[str]] = {}  # node -> revisions with endpoints there
        self._changed: dict[str, asyncio.Event] = {}  # revision -> set on its next recompute
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
        throttler = self.throttlers.peek(key)
        if throttler is None:
            throttler = self.throttlers.get(key)
            self.recompute(key)  # traffic from now on: its not-ready addresses are worth probing
        return throttler

    def endpoints(self, key: str) -> frozenset[Endpoint]:
        return self._compute(key)[0]

    def addresses(self, key: str) -> frozenset[Endpoint]:
        """Every address known for the revision on a Ready node, ready or not (what the prober may try)."""
        found, candidates = self._compute(key)
        return found | frozenset(candidates)

    def _check(self, key: str) -> ReadinessCheck | None:
        try:
            revision = self.revision(key)
            return None if revision is None else readiness_check(revision.pod_spec, revision.container_port)
        except (KnativeValueError, ProbeSpecError):
            return None

    def _compute(self, key: str) -> tuple[frozenset[Endpoint], dict[Endpoint, ReadinessCheck]]:
        """(endpoints, not-ready candidates to probe) of a revision."""
        healthy = self.prober.healthy(key)
        check = self._check(key)
        found: set[Endpoint] = set()
        candidates: dict[Endpoint, ReadinessCheck] = {}
        ready_in_api: set[Endpoint] = set()
        in_slices, slice_port = self._slice_addresses(key)
        for endpoint, ready in [*in_slices, *self._local_addresses(key, slice_port)]:
            if ready:
                ready_in_api.add(endpoint)
            elif check is not None:
                candidates[endpoint] = check  # healthy ones stay candidates: the prober keeps their verdict
            if ready or endpoint in healthy:
                found.add(endpoint)
        for endpoint in ready_in_api:
            candidates.pop(endpoint, None)
        return frozenset(found), candidates

    def _slice_addresses(self, key: str) -> tuple[list[tuple[Endpoint, bool]], int | None]:
        """The revision's addresses in its private slices, not terminating and on Ready nodes, each with its ready
        condition; and the port of the last slice that names one (None: no slice does)."""
        addresses: list[tuple[Endpoint, bool]] = []
        slice_port: int | None = None
        for slice_obj in self.slices.by_index("revision", key):
            port = port_of(slice_obj, "http") or port_of(slice_obj)
            if port is None:
                continue
            slice_port = port
            for ep in endpoints_of(slice_obj):
                if not ep.terminating and self._node_ready(ep.node):
                    addresses.append((Endpoint(ep.address, port, ep.node), ep.ready))
        return addresses, slice_port

    def _local_addresses(self, key: str, slice_port: int | None) -> list[tuple[Endpoint, bool]]:
        """The revision's pods on this node (when it is Ready) with an address and not finished, each with its
        Ready condition, straight from the pod cache; a stand-in only once its cold start admitted it."""
        if not self._node_ready(self.node_name):
            return []
        admitted = self._admitted.get(key, ())
        addresses: list[tuple[Endpoint, bool]] = []
        for pod in self.local_pods.by_index("revision", key):
            ip = pod.get("status", {}).get("podIP")
            port = slice_port or first_container_port(pod)
            if not ip or not port or pod["metadata"].get("deletionTimestamp"):
                continue
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if is_stand_in(pod) and pod["metadata"]["name"] not in admitted:
                continue  # its replica is not (yet) claimed: it must not serve
            addresses.append((Endpoint(ip, port, self.node_name), is_ready(pod)))
        return addresses

    def _node_ready(self, name: str) -> bool:
        if not name:
            return True  # a slice that does not say where the endpoint is: trust the endpoint's own condition
        node = self.nodes.get(name)
        return node is not None and node_is_ready(node)

    async def wait_until(self, key: str, condition: Callable[[], bool], timeout: float) -> None:
        """Until ``condition()`` holds, re-checked whenever the revision's endpoints are recomputed."""
        async with asyncio.timeout(timeout):
            while not condition():
                event = self._changed.setdefault(key, asyncio.Event())
                await event.wait()

    async def wait_for_endpoints(self, key: str, timeout: float) -> None:
        """Until the revision has at least one endpoint; TimeoutError after ``timeout``."""
        await self.wait_until(key, lambda: bool(self.endpoints(key)), timeout)

    # -- a cold start's own pod ----------------------------------------------------------------------------------

    def admit(self, key: str, pod: str, endpoint: Endpoint) -> None:
        """A stand-in whose replica was claimed and whose IP passed the check: it serves from now on."""
        self._admitted.setdefault(key, set()).add(pod)
        self.prober.mark_healthy(key, endpoint)
        self.recompute(key)

    # -- keeping endpoints current -----------------------------------------------------------------------------

    def _new_throttler(self, key: str) -> Throttler:
        try:
            revision = self.revision(key)
        except KnativeValueError:
            revision = None
        cc = revision.container_concurrency if revision else 0
        throttler = Throttler(container_concurrency=cc, queue_limit=self.queue_limit,
                              on_no_capacity=lambda: self.on_no_capacity(key))  # fmt: skip
        throttler.update(self.endpoints(key))
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
        endpoints, candidates = self._compute(key)
        throttler = self.throttlers.peek(key)
        # Probe only for revisions with traffic here; the others' pods are checked if and when it comes.
        self.prober.update(key, candidates if throttler is not None else {})
        namespace, _, name = key.partition("/")
        if throttler is not None:
            self.metrics.endpoints.labels(namespace, name).set(len(endpoints))
            throttler.update(endpoints)
        else:  # a series only for the revisions this activator serves, not one per revision in the cluster
            with contextlib.suppress(KeyError):
                self.metrics.endpoints.remove(namespace, name)
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    def revisions_on(self, node: str) -> frozenset[str]:
        return frozenset(self._by_node.get(node, ()))

    def _on_slice(self, event: Event) -> None:
        for key in revision_of_slice(event.obj):
            self.recompute(key)

    def _on_local_pod(self, event: Event) -> None:
        new = None if event.type == "DELETED" else event.obj
        if _pod_signature(event.old) == _pod_signature(new):
            return
        for key in revision_of_pod(event.obj):
            if new is None:
                admitted = self._admitted.get(key)
                if admitted is not None:
                    admitted.discard(event.obj["metadata"]["name"])
                    if not admitted:
                        del self._admitted[key]
            self.recompute(key)

    def _on_node(self, event: Event) -> None:
        was = event.old is not None and node_is_ready(event.old)
        now = event.type != "DELETED" and node_is_ready(event.obj)
        if was != now:
            name = event.obj["metadata"]["name"]
            affected = self.revisions_on(name)
            if name == self.node_name:
                affected |= frozenset(self.local_pods.index_values("revision"))
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
            self.prober.forget(key)
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
