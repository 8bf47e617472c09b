"""The ActivationEndpoints controller: for every Revision, N activators, published (docs/subsetting.md).

Inputs are watch caches (Revisions and ActivationEndpoints in all namespaces, the activator pods, Nodes, the
revisions' private EndpointSlices, config-autoscaler) and outputs are written through a :class:`Writer` that skips
unchanged content. Every replica keeps its caches warm; only the leader reconciles (:meth:`Controller.lead`).

Work is per revision key (``namespace/name``) in a :class:`WorkQueue`: one reconcile per key at a time, bursts
coalesced. What is queued is decided by what changed:

* a Revision or its ActivationEndpoints (spec): that revision;
* an activator or a node: through the reverse index, only the revisions it served (``inventory.activator_change``
  and ``node_change``), plus the revisions still short of N when capacity grew; a newly Ready activator is also
  rebalanced onto after a delay (``rebalancing``), a bounded number of single-slot moves;
* the ready pods of a revision (its ``{rev}-private`` EndpointSlices): that revision;
* nodes appearing or going: the revisions whose N comes from maxNodeSelection; config-autoscaler: every revision;
* our own outputs changed or deleted by someone else: their revision; a periodic resync: every revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from endpointsctl import publishing, status
from endpointsctl.assignments import Assignments
from endpointsctl.choosing import choose
from endpointsctl.inventory import ActivatorPod, Change
from endpointsctl.metrics import Metrics
from endpointsctl.observing import ClusterView, service_key
from endpointsctl.queueing import WorkQueue
from endpointsctl.rebalancing import fair_share, rebalance_onto
from endpointsctl.recording import Recorder
from endpointsctl.settings import Settings
from endpointsctl.sizing import Sizing, desired_activators
from endpointsctl.subsetting.framework import Algorithm, RevisionRequest, Snapshot
from endpointsctl.writing import OutputConflict, Writer
from localsched import knative
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import AlreadyExists, Forbidden, Invalid, KubeError
from localsched.kube.slices import MANAGED_BY_LABEL
from localsched.kube.watching import Event, WatchCache, key_of

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = "-activationendpoints"
ENDPOINTSLICE_CONTROLLER = "endpointslice-controller.k8s.io"
WARNING_CONDITIONS = (status.NOT_ENOUGH, status.NO_HA, status.INVALID_SPEC, status.INVALID_CONFIGURATION)


def revision_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class Controller:
    def __init__(
        self,
        client: KubeClient,
        settings: Settings,
        algorithm: Algorithm,
        metrics: Metrics,
        *,
        recorder: Recorder | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        self._fence = fence  # False while a write could race a new leader (LeaderElector.fresh)
        self.settings = settings
        self.algorithm = algorithm
        self.algorithm_name = settings.subsetting.config.algorithm
        self.metrics = metrics
        self.writer = Writer(client, metrics)
        self.recorder = recorder
        self.queue = WorkQueue(self.reconcile, workers=settings.reconciling.workers, name="reconcile",
                               expected=(KubeError, StaleLease))  # fmt: skip
        self.assignments = Assignments()
        self.leading = False
        self.slice_version = ""
        self.caches: dict[str, WatchCache] = {}
        self.view = ClusterView()  # derived from the caches, kept current on every replica
        # The leader's bookkeeping, reset when it stops leading.
        self._short: set[str] = set()  # revisions with fewer activators than N
        self._node_dependent: set[str] = set()  # revisions whose N comes from the number of nodes
        self._requests: dict[str, RevisionRequest] = {}
        self._rejected: dict[str, tuple[tuple[str, ...], str]] = {}  # key -> (addresses, server message)
        self._status_refused: dict[str, int] = {}  # key -> the generation whose status the server refused
        self._rebalance_timers: dict[str, asyncio.TimerHandle] = {}

    # -- caches ---------------------------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the watch caches (the EndpointSlice version needs one API call). Run them with :meth:`watches`."""
        slices = await self.client.endpointslice_resource()
        self.slice_version = slices.version
        sources = self.settings.sources

        def cache(name: str, resource: r.Resource, handler: Callable[[Event], None], **kwargs: Any) -> WatchCache:
            watch = WatchCache(self.client, resource, name=name, **kwargs)
            watch.add_handler(handler)
            self.caches[name] = watch
            return watch

        cache("revisions", r.REVISIONS, self._on_revision)
        cache("activationendpoints", r.ACTIVATION_ENDPOINTS, self._on_activation_endpoints)
        cache("activators", r.PODS, self._on_activator, namespace=sources.activator_namespace,
              label_selector=sources.activator_selector)  # fmt: skip
        cache("nodes", r.NODES, self._on_node_event)
        cache("config-autoscaler", r.CONFIGMAPS, self._on_autoscaler, namespace=sources.knative_namespace,
              field_selector=f"metadata.name={knative.AUTOSCALER_CONFIGMAP}")  # fmt: skip
        # The EndpointSlice controller copies the Service's labels to its slices: Knative's private Services carry
        # serviceType=Private, so only those slices are watched, not every slice in the cluster.
        private_selector = f"{MANAGED_BY_LABEL}={ENDPOINTSLICE_CONTROLLER},{knative.PRIVATE_SERVICE_SELECTOR}"
        private = cache("private-slices", slices, self._on_private_slice, label_selector=private_selector)
        private.add_index("service", lambda s: [service_key(s)])
        output = f"{publishing.APP_MANAGED_BY_LABEL}={publishing.APP_MANAGED_BY}"
        cache("slices", slices, self._on_output, label_selector=f"{MANAGED_BY_LABEL}={publishing.SLICE_MANAGER}")
        cache("services", r.SERVICES, self._on_output, label_selector=output)
        cache("endpoints", r.ENDPOINTS, self._on_output, label_selector=output)

    def watches(self) -> dict[str, Callable[[], Any]]:
        """The watch loops to run (name -> coroutine function), for the app to run as guarded tasks."""
        return {f"watch:{name}": cache.run for name, cache in self.caches.items()}

    def synced(self) -> bool:
        return bool(self.caches) and all(c.synced.is_set() for c in self.caches.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(c.synced.wait() for c in self.caches.values()))

    # -- handlers: derived state always, work only while leading --------------------------------------------------

    def _enqueue(self, keys: Iterable[str], cause: str) -> None:
        if not self.leading:
            return
        keys = list(keys)
        if keys:
            self.metrics.queued.labels(cause).inc(len(keys))
            self.queue.add_all(keys)

    def _on_revision(self, event: Event) -> None:
        if event.type == "MODIFIED" and event.old is not None and not _spec_changed(event.old, event.obj):
            return  # a status update
        namespace, name = key_of(event.obj)
        self._enqueue([revision_key(namespace, name)], "revision")

    def _on_activation_endpoints(self, event: Event) -> None:
        if event.type == "MODIFIED" and event.old is not None and not _spec_changed(event.old, event.obj):
            return  # our own status write, or labels
        if event.type != "DELETED" and self.writer.is_echo(event.obj):
            return  # our own create or adoption
        if event.type == "DELETED":
            self.writer.forget(publishing.KIND, *key_of(event.obj))
        namespace, name = key_of(event.obj)
        self._enqueue([revision_key(namespace, name)], "activationendpoints")

    def _on_output(self, event: Event) -> None:
        namespace, name = key_of(event.obj)
        if not name.endswith(OUTPUT_SUFFIX):
            return
        if event.type == "DELETED":
            self.writer.forget(str(event.obj.get("kind")), namespace, name)
        elif self.writer.is_echo(event.obj):
            return
        self._enqueue([revision_key(namespace, name.removesuffix(OUTPUT_SUFFIX))], "output")

    def _on_private_slice(self, event: Event) -> None:
        key = self.view.private_slice_event(event, self.caches["private-slices"])
        if key is not None:
            self._enqueue([key], "ready-pods")

    def _on_autoscaler(self, event: Event) -> None:
        if self.view.autoscaler_event(event):
            self._enqueue(self._revision_keys(), "config")

    def _on_activator(self, event: Event) -> None:
        change = self.view.activator_event(event, self.assignments.revisions_of)
        if change is not None:
            self._react(change, "activator", newcomer=event.obj["metadata"]["name"])

    def _on_node_event(self, event: Event) -> None:
        for change, activator in self.view.node_event(event, self.assignments.revisions_of):
            self._react(change, "node" if activator is None else "activator", newcomer=activator)

    def _react(self, change: Change, cause: str, *, newcomer: str | None = None) -> None:
        self._enqueue(sorted(change.revisions), cause)
        if change.capacity_grew:
            self._enqueue(sorted(self._short - change.revisions), "capacity")
            if newcomer is not None:
                self._schedule_rebalance(newcomer)
        if change.node_set_changed:
            self._enqueue(sorted(self._node_dependent - change.revisions - self._short), "node-set")

    def _revision_keys(self) -> list[str]:
        return [revision_key(*key_of(obj)) for obj in self.caches["revisions"]]

    # -- snapshot -------------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self.view.snapshot(self.assignments.load())

    def observe(self) -> None:
        """Refresh the gauges that summarize state (called when /metrics is scraped)."""
        self.metrics.observe_load(self.assignments.load(), self.view.ready_activators())
        self.metrics.queue_depth.labels("queued").set(len(self.queue))
        self.metrics.queue_depth.labels("in_progress").set(self.queue.in_progress)

    # -- leading --------------------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Reconcile until cancelled (the leader elector cancels this when the Lease is lost)."""
        await self.wait_synced()
        self._seed()
        self.leading = True
        self.metrics.leader.set(1)
        log.info("leading: reconciling %d revisions", len(self.caches["revisions"]))
        self._enqueue(self._revision_keys(), "lead")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.queue.run(), name="reconcile-workers")
                group.create_task(self._resync(), name="resync")
        finally:
            self._stop_leading()

    def _seed(self) -> None:
        """Resume what a previous leader published (assignments, refused Endpoints addresses), so that a handover
        moves and writes nothing."""
        self.assignments = Assignments()  # the snapshot follows: it is rebuilt for a new load view
        revisions = self.caches["revisions"]
        for ae in self.caches["activationendpoints"]:
            namespace, name = key_of(ae)
            if revisions.get(name, namespace) is None:
                continue
            key = revision_key(namespace, name)
            names = publishing.activators_in_status(ae)
            if names:
                self.assignments.set(key, names)
            refusal = publishing.refusal_in_status(ae)
            if refusal is not None:
                self._rejected[key] = refusal

    def _stop_leading(self) -> None:
        self.leading = False
        self.metrics.leader.set(0)
        self.queue.clear()
        for timer in self._rebalance_timers.values():
            timer.cancel()
        self._rebalance_timers.clear()
        self._short.clear()
        self._node_dependent.clear()
        self._requests.clear()
        self._rejected.clear()
        self._status_refused.clear()
        self.writer.clear()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconciling.resync_seconds)
            self._enqueue(self._revision_keys(), "resync")

    # -- rebalancing ----------------------------------------------------------------------------------------------

    def _schedule_rebalance(self, name: str) -> None:
        if not (self.leading and self.settings.reconciling.rebalance):
            return
        timer = self._rebalance_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        delay = self.settings.reconciling.rebalance_delay_seconds
        self._rebalance_timers[name] = asyncio.get_running_loop().call_later(delay, self.rebalance, name)

    def rebalance(self, name: str) -> int:
        """Move single slots onto activator ``name`` up to its fair share; queue the moved revisions."""
        self._rebalance_timers.pop(name, None)
        pod = self.view.activators.get(name)
        if not self.leading or pod is None or not pod.activator.ready:
            return 0
        load = self.assignments.load()
        target = fair_share(load, self.view.ready_activators())
        if load.get(name, 0) + 1 >= target:
            return 0
        result = rebalance_onto(
            self.assignments, self.algorithm, self.snapshot(), name, target=target, request_of=self._requests.get
        )
        self.metrics.rebalances.inc()
        self.metrics.rebalanced_revisions.inc(len(result.moves))
        if result.moves:
            self.metrics.assignment_changes.labels("rebalance").inc(len(result.moves))
            log.info("rebalanced %d revision(s) onto %s (target %d)", len(result.moves), name, target)
        self._enqueue((move.revision for move in result.moves), "rebalance")
        return len(result.moves)

    # -- reconciling one revision ---------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        if self._fence is not None and not self._fence():
            raise StaleLease("the lease was not renewed within the renew deadline: not writing until it is")
        started = time.perf_counter()
        result = "error"
        try:
            await self._reconcile(key)
            result = "success"
        except Forbidden as exc:
            if "being terminated" not in str(exc):
                raise
            # The namespace is being deleted: its Revision's deletion will come as an event; no retries until then.
            log.debug("%s: namespace terminating: %s", key, exc)
            result = "skipped"
        finally:
            self.metrics.reconciles.labels(result).inc()
            self.metrics.reconcile_duration.labels(result).observe(time.perf_counter() - started)

    async def _reconcile(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        revision = self.caches["revisions"].get(name, namespace)
        if revision is None or revision["metadata"].get("deletionTimestamp"):
            self._forget(key)
            return
        ae = await self._activation_endpoints(revision)
        if ae is None:
            return  # an ActivationEndpoints of an earlier Revision with this name awaits garbage collection
        generation = int(ae["metadata"].get("generation") or 0)
        try:
            rev = knative.Revision.from_object(revision)
        except knative.RevisionSpecError as exc:
            kept = [self.view.activators[n] for n in self.assignments.get(key) if n in self.view.activators]
            previous = int((ae.get("status") or {}).get("desiredActivators") or 0)
            outcome = status.Outcome(generation, self.algorithm_name, kept, revision_error=str(exc),
                                     previous_desired=previous)  # fmt: skip
            await self._write_status(ae, outcome)
            return

        override, spec_error = publishing.spec_override(ae)
        sizing, chosen = self._select(key, rev, override)
        pods = [self.view.activators[n] for n in chosen]
        self.metrics.subset_size.labels(namespace, name).set(len(pods))
        self.metrics.desired_subset_size.labels(namespace, name).set(sizing.desired)

        conflict: str | None = None
        rejected: str | None = None
        try:
            await self._publish(ae, pods)
            rejected = await self._publish_endpoints(key, ae, pods)
        except OutputConflict as exc:
            conflict = str(exc)
        outcome = status.Outcome(generation, self.algorithm_name, pods, sizing=sizing, spec_error=spec_error,
                                 autoscaler_error=self.view.autoscaler_error, conflict=conflict,
                                 endpoints_rejected=rejected)  # fmt: skip
        await self._write_status(ae, outcome)

    def _select(self, key: str, rev: knative.Revision, override: int | None) -> tuple[Sizing, tuple[str, ...]]:
        """Size and select (:func:`choose`; synchronously: no other reconcile interleaves) and record the
        assignment."""
        config = self.view.autoscaler
        tbc = rev.effective_target_burst_capacity(config)

        def size(eligible: int) -> Sizing:
            return desired_activators(
                spec_override=override,
                target_burst_capacity=tbc,
                max_node_selection=self.settings.subsetting.max_node_selection,
                ready_pods=self.view.ready_pods.get(key, 0),
                per_pod_capacity=rev.per_pod_capacity(config),
                activator_capacity=config.activator_capacity,
                eligible=eligible,
                nodes=len(self.view.nodes),
            )

        request = RevisionRequest(key, rev.pod_spec, frozenset(self.assignments.get(key)))
        self._requests[key] = request
        choice = choose(self.algorithm, self.snapshot(), request, size)
        change = self.assignments.set(key, choice.chosen)
        if change.changed:
            self.metrics.assignment_changes.labels("selection").inc()
        (self._short.add if len(choice.chosen) < choice.sizing.desired else self._short.discard)(key)
        (self._node_dependent.add if tbc == knative.UNLIMITED_BURST_CAPACITY else self._node_dependent.discard)(key)
        return choice.sizing, choice.chosen

    async def _activation_endpoints(self, revision: Obj) -> Obj | None:
        meta = revision["metadata"]
        cache = self.caches["activationendpoints"]
        ae = self.writer.current(cache, meta["name"], meta["namespace"])
        if ae is None:
            try:
                return await self.writer.create(r.ACTIVATION_ENDPOINTS, publishing.activation_endpoints(revision))
            except AlreadyExists:
                ae = await self.client.get(r.ACTIVATION_ENDPOINTS, meta["name"], meta["namespace"])
        owner = publishing.controller_uid(ae)
        if owner == meta["uid"]:
            return ae
        if owner is not None:
            return None
        # Created by hand (to set spec before the controller did): adopt it.
        desired = publishing.activation_endpoints(revision)
        return await self.writer.update(
            r.ACTIVATION_ENDPOINTS, publishing.overlay(ae, {"metadata": desired["metadata"]})
        )

    async def _publish(self, ae: Obj, pods: list[ActivatorPod]) -> None:
        port = self.settings.sources.activator_port
        await self.writer.apply(self.caches["services"], publishing.service(ae, port))
        await self.writer.apply(self.caches["slices"], publishing.endpoint_slice(ae, self.slice_version, pods, port))

    async def _publish_endpoints(self, key: str, ae: Obj, pods: list[ActivatorPod]) -> str | None:
        """Publish the Endpoints object; a refusal of these addresses is remembered (and reported) instead of
        retried, and no stale Endpoints object is left behind. Returns the refusal, or None."""
        addresses = publishing.addresses_key(pods)
        name, namespace = knative.activation_endpoints_name(ae["metadata"]["name"]), ae["metadata"]["namespace"]
        cache = self.caches["endpoints"]
        known = self._rejected.get(key)
        if known is not None and known[0] == addresses:
            await self.writer.delete(cache, name, namespace)
            return known[1]
        try:
            await self.writer.apply(cache, publishing.endpoints(ae, pods, self.settings.sources.activator_port))
        except Invalid as exc:
            message = f"the API server refused the Endpoints object: {exc.args[0]}"
            log.info("%s: %s", key, message)
            self._rejected[key] = (addresses, message)
            await self.writer.delete(cache, name, namespace)
            return message
        self._rejected.pop(key, None)
        return None

    async def _write_status(self, ae: Obj, outcome: status.Outcome) -> None:
        meta = ae["metadata"]
        fresh = self.writer.current(self.caches["activationendpoints"], meta["name"], meta["namespace"]) or ae
        previous = fresh.get("status") or {}
        new = status.status(meta["name"], outcome, previous, timestamps.now())
        try:
            await self.writer.replace_status(r.ACTIVATION_ENDPOINTS, fresh, new)
        except Invalid as exc:
            self._status_refused_by_server(fresh, outcome, exc)
            return
        self._status_refused.pop(revision_key(meta["namespace"], meta["name"]), None)
        if self.recorder is not None:
            self.recorder.record_transitions(fresh, previous, new, WARNING_CONDITIONS)

    def _status_refused_by_server(self, ae: Obj, outcome: status.Outcome, exc: Invalid) -> None:
        """The server validates the whole object on a status write (1.20 does): one stored before its CRD's schema
        forbade its spec gets no new status until the spec is fixed, and retrying cannot help. Say so once per
        generation, as a Warning Event on it, and wait for the edit (which queues the revision again); the slice and
        the Service were published before the status, so the revision is served meanwhile."""
        key = revision_key(ae["metadata"]["namespace"], ae["metadata"]["name"])
        if self._status_refused.get(key) == outcome.generation:
            return
        self._status_refused[key] = outcome.generation
        message = (f"status not updated: the API server refuses this object as it is stored, so its status stays "
                   f"as it was until its spec is fixed: {exc.args[0]}")  # fmt: skip
        log.warning("%s: %s", key, message)
        if self.recorder is not None:
            self.recorder.record(ae, "Warning", "StatusRefused", message)

    def _forget(self, key: str) -> None:
        self.assignments.remove_revision(key)
        for keyed in (self._short, self._node_dependent):
            keyed.discard(key)
        for mapping in (self._requests, self._rejected, self._status_refused):
            mapping.pop(key, None)
        namespace, name = key.split("/", 1)
        for gauge in (self.metrics.subset_size, self.metrics.desired_subset_size):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass


class StaleLease(RuntimeError):
    """Raised instead of reconciling while leadership is unconfirmed; the queue retries the key later."""


def _spec_changed(old: Obj, new: Obj) -> bool:
    """Anything but status changed: generation (spec), annotations, labels, uid, ownerReferences."""
    fields = ("generation", "annotations", "labels", "uid", "ownerReferences", "deletionTimestamp")
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return any(old_meta.get(f) != new_meta.get(f) for f in fields)
