"""The cluster as selection sees it, kept current from watch events on every replica, leader or not.

:class:`ClusterView` turns activator pod, Node, private EndpointSlice and config-autoscaler events into the small
values of :mod:`endpointsctl.inventory` and reports what changed (:class:`~endpointsctl.inventory.Change`, a
revision key, a flag); the controller decides what to queue. Nothing here enqueues, writes or calls the API. A
standby replica keeps this view warm, so that a new leader can reconcile the moment it takes the Lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from endpointsctl.inventory import ActivatorPod, Change, NodeFacts, activator_change, activator_of, node_change
from endpointsctl.inventory import ready_pods as count_ready_pods
from endpointsctl.inventory import zone_of as node_zone
from endpointsctl.subsetting.framework import Snapshot
from localsched import knative
from localsched.kube.client import Obj
from localsched.kube.slices import SERVICE_NAME_LABEL
from localsched.kube.watching import Event, WatchCache

log = logging.getLogger(__name__)

RevisionsOf = Callable[[str], frozenset[str]]


def service_key(slice_obj: Obj) -> str:
    """``namespace/service`` of an EndpointSlice."""
    meta = slice_obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{(meta.get('labels') or {}).get(SERVICE_NAME_LABEL, '')}"


class ClusterView:
    def __init__(self) -> None:
        self.activators: dict[str, ActivatorPod] = {}
        self.nodes: dict[str, Obj] = {}
        self.ready_pods: dict[str, int] = {}  # revision key -> ready pods (absent: none)
        self.autoscaler = knative.AutoscalerConfig()
        self.autoscaler_error: str | None = None
        self._on_node: dict[str, set[str]] = {}
        self._node_facts: dict[str, NodeFacts] = {}
        self._snapshot: Snapshot | None = None

    # -- events ---------------------------------------------------------------------------------------------------

    def activator_event(self, event: Event, revisions_of: RevisionsOf) -> Change | None:
        """An activator pod event; the change, or None when nothing selection reads changed."""
        name = event.obj["metadata"]["name"]
        new = None if event.type == "DELETED" else activator_of(event.obj, self.zone)
        return self._set_activator(name, new, revisions_of)

    def node_event(self, event: Event, revisions_of: RevisionsOf) -> list[tuple[Change, str | None]]:
        """A Node event: the node's change (paired with None) and, when its zone changed, one change per activator
        on it (paired with the activator's name). Heartbeats change nothing."""
        name = event.obj["metadata"]["name"]
        old = self._node_facts.get(name)
        new = None if event.type == "DELETED" else NodeFacts.of(event.obj)
        if new is None:
            self.nodes.pop(name, None)
            self._node_facts.pop(name, None)
        else:
            self.nodes[name] = event.obj
            self._node_facts[name] = new
        if old == new:
            return []
        self._snapshot = None
        on_node = sorted(self._on_node.get(name, ()))
        changes: list[tuple[Change, str | None]] = [(node_change(old, new, on_node, revisions_of), None)]
        if new is not None:
            zone = node_zone(event.obj)
            for activator in on_node:
                current = self.activators[activator]
                if zone != current.activator.zone:
                    moved = ActivatorPod(replace(current.activator, zone=zone), current.namespace, current.uid)
                    change = self._set_activator(activator, moved, revisions_of)
                    if change is not None:
                        changes.append((change, activator))
        return changes

    def private_slice_event(self, event: Event, slices: WatchCache) -> str | None:
        """A private EndpointSlice event: the revision key whose number of ready pods changed, or None."""
        service = service_key(event.obj)
        namespace, _, name = service.partition("/")
        revision = knative.revision_of_private_service(name)
        if revision is None:
            return None
        key = f"{namespace}/{revision}"
        count = count_ready_pods(slices.by_index("service", service))
        if self.ready_pods.get(key, 0) == count:
            return None
        if count:
            self.ready_pods[key] = count
        else:
            self.ready_pods.pop(key, None)
        return key

    def autoscaler_event(self, event: Event) -> bool:
        """A config-autoscaler event: True when the configuration (or its error) changed. An invalid map keeps the
        last valid configuration and reports the error."""
        data = None if event.type == "DELETED" else event.obj.get("data")
        try:
            config, error = knative.AutoscalerConfig.from_configmap(data), None
        except knative.AutoscalerConfigError as exc:
            config, error = self.autoscaler, f"config-autoscaler: {exc}; keeping the last valid configuration"
            log.warning("%s", error)
        if (config, error) == (self.autoscaler, self.autoscaler_error):
            return False
        self.autoscaler, self.autoscaler_error = config, error
        return True

    def _set_activator(self, name: str, new: ActivatorPod | None, revisions_of: RevisionsOf) -> Change | None:
        old = self.activators.get(name)
        if old == new:
            return None
        if old is not None:
            self._on_node.get(old.activator.node, set()).discard(name)
        if new is None:
            self.activators.pop(name, None)
        else:
            self.activators[name] = new
            self._on_node.setdefault(new.activator.node, set()).add(name)
        self._snapshot = None
        return activator_change(old, new, revisions_of)

    # -- reading --------------------------------------------------------------------------------------------------

    def zone(self, node: str) -> str:
        return node_zone(self.nodes.get(node))

    def snapshot(self, load: Mapping[str, int]) -> Snapshot:
        """Activators and nodes as selection sees them, with ``load`` (a live view); rebuilt only after something
        relevant changed, so that feasible sets computed for one revision are reused by the next with the same
        scheduling constraints."""
        if self._snapshot is None or self._snapshot.load is not load:
            activators = {name: a.activator for name, a in self.activators.items()}
            self._snapshot = Snapshot(activators, dict(self.nodes), load)
        return self._snapshot

    def ready_activators(self) -> list[str]:
        return sorted(name for name, a in self.activators.items() if a.activator.ready)
