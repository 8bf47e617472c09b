"""Scheduling predicates in the shape of kube-scheduler's filter stage, on plain API JSON.

Shared by the activator (may this node run a new pod of the revision right now?) and endpointsctl (may this
activator's node run the revision's pods at all?). Every predicate is pure and synchronous; a failing filter
answers with a :class:`Reason` named like kube-scheduler's, so a skipped local schedule can be explained.
Objects (nodes, pods, pod specs) are the API's dicts with camelCase keys; ``null`` fields are treated as absent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from localsched.quantity import cpu_millis, memory_bytes, parse_quantity

__all__ = [
    "Reason",
    "Resources",
    "filter_local",
    "is_ready",
    "matches_node_selector",
    "matches_required_node_affinity",
    "node_allocatable",
    "node_eligible",
    "node_is_ready",
    "pod_requests",
    "resources_fit",
    "tolerates",
    "unsupported_constraint",
    "untolerated_taint",
]

DEFAULT_SCHEDULER = "default-scheduler"
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
_FILTERING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_INT64 = re.compile(r"[+-]?[0-9]+")
_NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")  # a tuple: malformed ones may not hash


class Reason(enum.StrEnum):
    """Why a node was filtered out."""

    CUSTOM_SCHEDULER = "CustomScheduler"
    NODE_NOT_READY = "NodeNotReady"
    NODE_UNSCHEDULABLE = "NodeUnschedulable"
    TAINT_NOT_TOLERATED = "TaintNotTolerated"
    NODE_SELECTOR_MISMATCH = "NodeSelectorMismatch"
    NODE_AFFINITY_MISMATCH = "NodeAffinityMismatch"
    INSUFFICIENT_CPU = "InsufficientCPU"
    INSUFFICIENT_MEMORY = "InsufficientMemory"
    TOO_MANY_PODS = "TooManyPods"
    UNSUPPORTED_CONSTRAINT = "UnsupportedConstraint"


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    """``obj[a][b]...``, or None when any step is missing, null or not a mapping."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _mapping(obj: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    value = _get(obj, *path)
    return value if isinstance(value, Mapping) else {}


def _items(obj: Mapping[str, Any], *path: str) -> list[Mapping[str, Any]]:
    value = _get(obj, *path)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


# -- node state and taints ----------------------------------------------------------------------------------------


def is_ready(obj: Mapping[str, Any]) -> bool:
    """The object's (a pod's, a node's) ``Ready`` condition is ``"True"``."""
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in _items(obj, "status", "conditions"))


def node_is_ready(node: Mapping[str, Any]) -> bool:
    """The node's ``Ready`` condition is ``"True"``."""
    return is_ready(node)


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """kube's ``ToleratesTaint``: an empty effect matches every effect, an empty key with ``Exists`` every key;
    operator ``Equal`` (the default) also compares values. ``tolerationSeconds`` does not affect scheduling."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def _tolerated(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(toleration, taint) for toleration in tolerations)


def untolerated_taint(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first NoSchedule/NoExecute taint of the node the pod does not tolerate (PreferNoSchedule is ignored)."""
    tolerations = _items(pod_spec, "tolerations")
    for taint in _items(node, "spec", "taints"):
        if taint.get("effect") in _FILTERING_EFFECTS and not _tolerated(tolerations, taint):
            return dict(taint)
    return None


def _cordoned_for(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    """kube's NodeUnschedulable: ``spec.unschedulable`` unless the pod tolerates the unschedulable taint."""
    taint = {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"}
    return _get(node, "spec", "unschedulable") is True and not _tolerated(_items(pod_spec, "tolerations"), taint)


# -- node selector and node affinity ------------------------------------------------------------------------------


def matches_node_selector(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    """Every ``spec.nodeSelector`` entry is among the node's labels."""
    labels = _mapping(node, "metadata", "labels")
    return all(key in labels and labels[key] == value for key, value in _mapping(pod_spec, "nodeSelector").items())


def _requirement_matches(requirement: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """One ``NodeSelectorRequirement`` against labels (or fields); malformed requirements match nothing."""
    key = requirement.get("key")
    operator = requirement.get("operator")
    if not isinstance(key, str) or operator not in _NODE_SELECTOR_OPERATORS:
        return False
    wanted = requirement.get("values") or []
    present = key in values
    if operator == "In":
        return present and values[key] in wanted
    if operator == "NotIn":
        return not present or values[key] not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    # Gt or Lt
    return present and len(wanted) == 1 and _compares(operator, str(values[key]), str(wanted[0]))


def _compares(operator: str, actual: str, bound: str) -> bool:
    """``Gt``/``Lt``: both sides are whole numbers and compare so; anything else matches nothing."""
    if not (_INT64.fullmatch(actual) and _INT64.fullmatch(bound)):
        return False
    return int(actual) > int(bound) if operator == "Gt" else int(actual) < int(bound)


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    expressions = _items(term, "matchExpressions")
    field_expressions = _items(term, "matchFields")
    if not expressions and not field_expressions:
        return False  # an empty term matches no objects
    return all(_requirement_matches(r, labels) for r in expressions) and all(
        _requirement_matches(r, fields) for r in field_expressions
    )


def matches_required_node_affinity(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    """``requiredDuringSchedulingIgnoredDuringExecution``: any term matches (terms are ORed, a term's requirements
    ANDed); ``matchFields`` knows ``metadata.name``. No required affinity matches every node; an empty term list
    matches none, as in kube."""
    required = _get(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    if not isinstance(required, Mapping):
        return True
    labels = _mapping(node, "metadata", "labels")
    fields = {"metadata.name": _get(node, "metadata", "name") or ""}
    return any(_term_matches(term, labels, fields) for term in _items(required, "nodeSelectorTerms"))


# -- resources ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """CPU in millicores, memory in bytes, and a pod count."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes, self.pods + other.pods
        )

    def max(self, other: Resources) -> Resources:
        """The per-resource maximum."""
        return Resources(
            max(self.cpu_millis, other.cpu_millis),
            max(self.memory_bytes, other.memory_bytes),
            max(self.pods, other.pods),
        )


def _resource_list(resources: Mapping[str, Any]) -> Resources:
    return Resources(
        cpu_millis=cpu_millis(resources["cpu"]) if resources.get("cpu") is not None else 0,
        memory_bytes=memory_bytes(resources["memory"]) if resources.get("memory") is not None else 0,
    )


def _container_requests(container: Mapping[str, Any]) -> Resources:
    """Requests as the API server defaults them: a resource with a limit but no request requests its limit."""
    resources = _mapping(container, "resources")
    return _resource_list({**_mapping(resources, "limits"), **_mapping(resources, "requests")})


def pod_requests(pod_spec: Mapping[str, Any]) -> Resources:
    """What the scheduler and kubelet charge a pod: the containers' requests summed, raised to any init container's
    (restartable sidecar init containers add to both), plus ``overhead``; ``pods`` is 1.

    Raises :class:`~localsched.quantity.QuantityError` on a malformed quantity.
    """
    total = Resources(pods=1)
    for container in _items(pod_spec, "containers"):
        total += _container_requests(container)
    init_peak = Resources()
    sidecars = Resources()
    for container in _items(pod_spec, "initContainers"):
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar: runs beside everything after it
            total += requests
            sidecars += requests
        else:
            init_peak = init_peak.max(requests + sidecars)
    return total.max(init_peak) + _resource_list(_mapping(pod_spec, "overhead"))


def node_allocatable(node: Mapping[str, Any]) -> Resources:
    """``status.allocatable``, each resource falling back to ``status.capacity``; a missing resource is 0."""
    merged = {**_mapping(node, "status", "capacity"), **_mapping(node, "status", "allocatable")}
    resources = _resource_list(merged)
    pods = int(parse_quantity(merged["pods"])) if merged.get("pods") is not None else 0
    return Resources(resources.cpu_millis, resources.memory_bytes, pods)


def resources_fit(
    node: Mapping[str, Any], pods_on_node: Iterable[Mapping[str, Any]], pod_spec: Mapping[str, Any]
) -> Reason | None:
    """kube's NodeResourcesFit: the new pod plus every non-terminal pod already on the node (pods being deleted
    still count) within allocatable. Checked in kube's order: pod count, cpu, memory; like kube, a resource the new
    pod does not request never fails, even on an overcommitted node."""
    used = Resources()
    for pod in pods_on_node:
        if _get(pod, "status", "phase") not in _TERMINAL_PHASES:
            used += pod_requests(_mapping(pod, "spec"))
    wanted = pod_requests(pod_spec)
    allocatable = node_allocatable(node)
    if used.pods + wanted.pods > allocatable.pods:
        return Reason.TOO_MANY_PODS
    if wanted.cpu_millis > 0 and used.cpu_millis + wanted.cpu_millis > allocatable.cpu_millis:
        return Reason.INSUFFICIENT_CPU
    if wanted.memory_bytes > 0 and used.memory_bytes + wanted.memory_bytes > allocatable.memory_bytes:
        return Reason.INSUFFICIENT_MEMORY
    return None


# -- the filter stage ---------------------------------------------------------------------------------------------


def unsupported_constraint(pod_spec: Mapping[str, Any]) -> str | None:
    """A constraint local scheduling cannot evaluate cheaply, described; such pods take the standard path.

    Required inter-pod (anti-)affinity, DoNotSchedule topology spread, and volumes whose PersistentVolumeClaims need
    the scheduler's volume binding (a pod created with ``nodeName`` could wait forever for them).
    """
    affinity = _mapping(pod_spec, "affinity")
    if _get(affinity, "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"):
        return "required pod affinity"
    if _get(affinity, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"):
        return "required pod anti-affinity"
    for constraint in _items(pod_spec, "topologySpreadConstraints"):
        if constraint.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule":
            return f"topology spread constraint on {constraint.get('topologyKey')!r} with DoNotSchedule"
    for volume in _items(pod_spec, "volumes"):
        if volume.get("persistentVolumeClaim") or volume.get("ephemeral"):
            return f"volume {volume.get('name')!r} needs PersistentVolumeClaim binding"
    return None


def node_eligible(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> Reason | None:
    """Could the node run the pod at all: Ready, not cordoned, taints tolerated, nodeSelector and required node
    affinity matched. No resources, no scheduler name: endpointsctl uses this to pick activators' nodes."""
    if not node_is_ready(node):
        return Reason.NODE_NOT_READY
    if _cordoned_for(node, pod_spec):
        return Reason.NODE_UNSCHEDULABLE
    if untolerated_taint(node, pod_spec) is not None:
        return Reason.TAINT_NOT_TOLERATED
    if not matches_node_selector(node, pod_spec):
        return Reason.NODE_SELECTOR_MISMATCH
    if not matches_required_node_affinity(node, pod_spec):
        return Reason.NODE_AFFINITY_MISMATCH
    return None


def filter_local(
    node: Mapping[str, Any], pod_spec: Mapping[str, Any], pods_on_node: Iterable[Mapping[str, Any]]
) -> Reason | None:
    """May the activator on ``node`` create the pod there now? The first failing reason, or None.

    Order: scheduler name (empty or ``default-scheduler``), unsupported constraints, :func:`node_eligible`,
    :func:`resources_fit`.
    """
    if (pod_spec.get("schedulerName") or DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
        return Reason.CUSTOM_SCHEDULER
    if unsupported_constraint(pod_spec) is not None:
        return Reason.UNSUPPORTED_CONSTRAINT
    return node_eligible(node, pod_spec) or resources_fit(node, pods_on_node, pod_spec)
