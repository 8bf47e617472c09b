"""What the controller knows about the cluster, distilled from API objects into small comparable values.

Watch events arrive far more often than anything relevant changes (every node heartbeat is a MODIFIED event), so
each object is reduced to the few fields selection depends on, and only a change of those triggers work:

* an activator pod -> :class:`ActivatorPod` (name, pod IP, node, zone, Ready, uid);
* a node -> :class:`NodeFacts` (labels, taints, unschedulable, Ready);
* a revision's private EndpointSlices -> its number of ready pods.

:func:`activator_change` and :func:`node_change` say which revisions to recompute: those the reverse index says
the activator (or the node's activators) served, and -- when capacity may have grown -- those still short of N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from endpointsctl.subsetting.framework import Activator
from localsched.kube.slices import endpoints_of
from localsched.predicates import is_ready, node_is_ready

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
_TERMINAL = frozenset({"Succeeded", "Failed"})

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class ActivatorPod:
    activator: Activator
    namespace: str
    uid: str

    @property
    def name(self) -> str:
        return self.activator.name


def zone_of(node: Obj | None) -> str:
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    for key in ZONE_LABELS:
        if labels.get(key):
            return str(labels[key])
    return ""


def activator_of(pod: Obj, node_zone: Callable[[str], str]) -> ActivatorPod | None:
    """The activator a pod is, or None while it is not bound to a node or has terminated. A pod being deleted,
    or without an IP, is an activator that is not Ready."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    node = str(spec.get("nodeName") or "")
    if not node or status.get("phase") in _TERMINAL:
        return None
    ip = str(status.get("podIP") or "")
    ready = is_ready(pod) and bool(ip) and not meta.get("deletionTimestamp")
    activator = Activator(name=str(meta["name"]), ip=ip, node=node, zone=node_zone(node), ready=ready)
    return ActivatorPod(activator, str(meta.get("namespace") or ""), str(meta.get("uid") or ""))


@dataclass(frozen=True)
class NodeFacts:
    """What selection reads from a node (``localsched.predicates.node_eligible`` and the zone)."""

    labels: tuple[tuple[str, str], ...]
    taints: tuple[tuple[str, str, str], ...]
    unschedulable: bool
    ready: bool

    @classmethod
    def of(cls, node: Obj) -> NodeFacts:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        labels = tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))
        taints = tuple(
            sorted(
                (str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
                for t in spec.get("taints") or ()
            )
        )
        return cls(labels, taints, spec.get("unschedulable") is True, node_is_ready(node))


def ready_pods(slices: Iterable[Obj]) -> int:
    """Distinct ready addresses over a service's EndpointSlices (a pod may appear in two slices briefly)."""
    return len({ep.address for s in slices for ep in endpoints_of(s) if ep.ready})


@dataclass(frozen=True)
class Change:
    """Which revisions to recompute after an activator or node changed."""

    revisions: frozenset[str]
    capacity_grew: bool  # an activator became usable: revisions short of N may now get more
    node_set_changed: bool = False  # nodes appeared or went away: N from maxNodeSelection may change


def activator_change(
    old: ActivatorPod | None, new: ActivatorPod | None, revisions_of: Callable[[str], frozenset[str]]
) -> Change:
    """An activator appeared, went away or changed: its own revisions are recomputed when it can no longer serve
    them as published (gone, not Ready, new IP, moved); capacity grew when it is newly Ready."""
    if old == new:
        return Change(frozenset(), False)
    name = (new or old).name  # type: ignore[union-attr]
    was_ready = old is not None and old.activator.ready
    is_ready = new is not None and new.activator.ready
    affected = revisions_of(name) if old is not None else frozenset()
    return Change(affected, is_ready and not was_ready)


def node_change(
    old: NodeFacts | None,
    new: NodeFacts | None,
    activators_on_node: Iterable[str],
    revisions_of: Callable[[str], frozenset[str]],
) -> Change:
    """A node appeared, went away or changed what selection reads: the revisions of its activators are recomputed
    (NodeEligible and ActivatorReady may now reject them), and revisions short of N may gain capacity."""
    if old == new:
        return Change(frozenset(), False)
    affected: set[str] = set()
    for name in activators_on_node:
        affected |= revisions_of(name)
    return Change(frozenset(affected), capacity_grew=new is not None, node_set_changed=(old is None) != (new is None))
