"""How many activators N a revision gets (docs/subsetting.md, "How N is computed").

Pure and total: invalid input never raises. It yields a usable N plus an error condition that names the bad
value, so a controller can write the condition to `status` and keep serving the revision.

Order of the rules:

1. `spec` override, when >= 1. Anything lower is an `InvalidSpec` error and the computed value below is used.
2. target-burst-capacity == -1 (activator always in path): `maxNodeSelection`, valid range 1 <= N < nodes
   (with a single node, N = 1). Missing or out of range is an `InvalidMaxNodeSelection` error; a value above
   the range is clamped to its top, a missing or too small one falls back to min(2, top).
3. target-burst-capacity == 0: 2. As in Knative's KPA (`computeNumActivators`): with TBC 0 the activator is
   only in the path while the revision is at zero, so the ready pods' capacity never flows through it.
4. otherwise N = max(2, ceil((readyPods x perPodCapacity + TBC) / activatorCapacity)), Knative's own formula.
   The original design note's `min(1, TBC - CC)` is always <= 1 and is deliberately not used.

Then `effective = min(desired, eligible)` with `NotEnoughEligibleActivators` when that cuts, and
`NoHighAvailability` whenever a single activator ends up serving the revision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MIN_ACTIVATORS = 2
"""Knative's `minActivators`: fewer than two is a single point of failure."""

_CEIL_EPSILON = 1e-9
"""Absorbs float noise such as 3 x 70.00000000000001 so that an exact multiple does not round up."""


class SizingReason(StrEnum):
    INVALID_SPEC = "InvalidSpec"
    INVALID_MAX_NODE_SELECTION = "InvalidMaxNodeSelection"
    INVALID_AUTOSCALER_CONFIG = "InvalidAutoscalerConfig"
    NO_HIGH_AVAILABILITY = "NoHighAvailability"
    NOT_ENOUGH_ELIGIBLE_ACTIVATORS = "NotEnoughEligibleActivators"


class Severity(StrEnum):
    ERROR = "Error"
    """The input is invalid; a fallback value is in use until it is fixed."""
    WARNING = "Warning"
    """The input is valid but the result is degraded."""


class SizingSource(StrEnum):
    SPEC = "Spec"
    MAX_NODE_SELECTION = "MaxNodeSelection"
    CAPACITY = "Capacity"
    FALLBACK = "Fallback"


@dataclass(frozen=True)
class SizingCondition:
    reason: SizingReason
    severity: Severity
    message: str


@dataclass(frozen=True)
class Sizing:
    desired: int
    """N before looking at which activators are eligible."""
    effective: int
    """N actually served: min(desired, eligible)."""
    source: SizingSource
    conditions: tuple[SizingCondition, ...] = ()

    @property
    def valid(self) -> bool:
        """No input was invalid (warnings allowed)."""
        return all(c.severity is not Severity.ERROR for c in self.conditions)

    @property
    def reasons(self) -> frozenset[SizingReason]:
        return frozenset(c.reason for c in self.conditions)


def desired_activators(
    *,
    spec_override: int | None,
    target_burst_capacity: float,
    max_node_selection: int | None,
    ready_pods: int,
    per_pod_capacity: float,
    activator_capacity: float,
    eligible: int,
    nodes: int,
) -> Sizing:
    """N for one revision. ``target_burst_capacity`` is the revision's effective TBC
    (``Revision.effective_target_burst_capacity``), ``per_pod_capacity`` its ``Revision.per_pod_capacity``,
    ``eligible`` the activators passing the subsetting filters (``Selection.eligible``), ``nodes`` the cluster's
    node count. Never raises."""
    conditions: list[SizingCondition] = []
    desired, source = _desired(
        conditions,
        spec_override=spec_override,
        target_burst_capacity=target_burst_capacity,
        max_node_selection=max_node_selection,
        ready_pods=ready_pods,
        per_pod_capacity=per_pod_capacity,
        activator_capacity=activator_capacity,
        nodes=nodes,
    )
    effective = max(0, min(desired, eligible))
    if effective < desired:
        conditions.append(
            SizingCondition(
                SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS,
                Severity.WARNING,
                f"{desired} activators wanted but only {max(0, eligible)} are eligible for this revision",
            )
        )
    if effective == 1:
        conditions.append(
            SizingCondition(
                SizingReason.NO_HIGH_AVAILABILITY,
                Severity.WARNING,
                "a single activator serves this revision: no high availability",
            )
        )
    return Sizing(desired=desired, effective=effective, source=source, conditions=tuple(conditions))


def _desired(
    conditions: list[SizingCondition],
    *,
    spec_override: int | None,
    target_burst_capacity: float,
    max_node_selection: int | None,
    ready_pods: int,
    per_pod_capacity: float,
    activator_capacity: float,
    nodes: int,
) -> tuple[int, SizingSource]:
    if spec_override is not None:
        if spec_override >= 1:
            return spec_override, SizingSource.SPEC
        conditions.append(
            SizingCondition(
                SizingReason.INVALID_SPEC,
                Severity.ERROR,
                f"spec activators override must be >= 1, got {spec_override}; using the computed value",
            )
        )

    tbc = target_burst_capacity
    if tbc == -1:
        return _from_max_node_selection(conditions, max_node_selection, nodes)

    problem = _invalid_capacity(tbc, activator_capacity, per_pod_capacity)
    if problem is not None:
        return _fallback(conditions, problem)
    if tbc == 0:
        return MIN_ACTIVATORS, SizingSource.CAPACITY

    needed = (max(0, ready_pods) * per_pod_capacity + tbc) / activator_capacity
    if not math.isfinite(needed):
        return _fallback(conditions, f"capacity to cover overflows: {needed}")
    return max(MIN_ACTIVATORS, math.ceil(needed - _CEIL_EPSILON)), SizingSource.CAPACITY


def _from_max_node_selection(
    conditions: list[SizingCondition], max_node_selection: int | None, nodes: int
) -> tuple[int, SizingSource]:
    top = max(1, nodes - 1)  # 1 <= N < nodes; a single-node cluster may still use its one activator
    if max_node_selection is not None and 1 <= max_node_selection <= top:
        return max_node_selection, SizingSource.MAX_NODE_SELECTION
    fallback = top if max_node_selection is not None and max_node_selection > top else min(MIN_ACTIVATORS, top)
    if max_node_selection is None:
        what = "maxNodeSelection is not set but target-burst-capacity is -1"
    else:
        what = f"maxNodeSelection={max_node_selection} is out of range 1 <= N < {max(nodes, 2)} (nodes={nodes})"
    conditions.append(
        SizingCondition(SizingReason.INVALID_MAX_NODE_SELECTION, Severity.ERROR, f"{what}; using {fallback}")
    )
    return fallback, SizingSource.FALLBACK


def _invalid_capacity(tbc: float, activator_capacity: float, per_pod_capacity: float) -> str | None:
    """What is wrong with the capacities sizing divides and multiplies by, or None."""
    if not math.isfinite(tbc) or tbc < 0:
        return f"target-burst-capacity must be >= 0 or -1, got {tbc}"
    if not math.isfinite(activator_capacity) or activator_capacity <= 0:
        return f"activator-capacity must be > 0, got {activator_capacity}"
    if not math.isfinite(per_pod_capacity) or per_pod_capacity < 0:
        return f"per-pod capacity must be >= 0, got {per_pod_capacity}"
    return None


def _fallback(conditions: list[SizingCondition], what: str) -> tuple[int, SizingSource]:
    conditions.append(
        SizingCondition(SizingReason.INVALID_AUTOSCALER_CONFIG, Severity.ERROR, f"{what}; using {MIN_ACTIVATORS}")
    )
    return MIN_ACTIVATORS, SizingSource.FALLBACK
