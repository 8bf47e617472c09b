"""The built-in subsetting plugins: two filters and three scorers, each a small frozen dataclass (its fields are
its args; none needs any yet). Their contracts are the Protocols of :mod:`endpointsctl.subsetting.framework`; their
names are registered in :mod:`endpointsctl.subsetting.registry`."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from endpointsctl.subsetting.framework import MAX_SCORE, Activator, RevisionRequest, Snapshot
from localsched.predicates import node_eligible, node_is_ready

ACTIVATOR_NOT_READY = "ActivatorNotReady"
NODE_NOT_FOUND = "NodeNotFound"
NODE_NOT_READY = "NodeNotReady"


# -- filters ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivatorReady:
    """The activator pod is Ready and its node is known and Ready."""

    def __call__(self, snapshot: Snapshot, request: RevisionRequest, activator: Activator) -> str | None:
        if not activator.ready:
            return ACTIVATOR_NOT_READY
        node = snapshot.nodes.get(activator.node)
        if node is None:
            return NODE_NOT_FOUND
        if not node_is_ready(node):
            return NODE_NOT_READY
        return None

    def cache_key(self, request: RevisionRequest) -> Hashable:
        return ()  # independent of the revision


@dataclass(frozen=True)
class NodeEligible:
    """The activator's node could run the revision's pods at all (``localsched.predicates.node_eligible``: Ready,
    not cordoned, NoSchedule/NoExecute taints tolerated, nodeSelector and required node affinity matched), so a
    cold start there can be scheduled locally. The reason is the predicate's (``TaintNotTolerated``, ...)."""

    def __call__(self, snapshot: Snapshot, request: RevisionRequest, activator: Activator) -> str | None:
        node = snapshot.nodes.get(activator.node)
        if node is None:
            return NODE_NOT_FOUND
        reason = node_eligible(node, request.pod_spec)
        return None if reason is None else str(reason)

    def cache_key(self, request: RevisionRequest) -> Hashable:
        return scheduling_key(request.pod_spec)


def scheduling_key(pod_spec: Mapping[str, Any]) -> str:
    """The pod-spec fields ``node_eligible`` reads (tolerations, nodeSelector, node affinity), canonically encoded:
    pod specs with equal keys are eligible on the same nodes. Keep in step with ``localsched.predicates``."""
    affinity = pod_spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    shape = {
        "nodeSelector": pod_spec.get("nodeSelector"),
        "tolerations": pod_spec.get("tolerations"),
        "nodeAffinity": node_affinity,
    }
    return json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)


# -- scorers ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stickiness:
    """100 for activators the revision already uses: limits churn. With the default weights it outweighs every
    other scorer together, so a revision only moves off an activator that is lost or no longer eligible."""

    uses_chosen = False

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        return MAX_SCORE if activator.name in request.current else 0


@dataclass(frozen=True)
class LeastLoaded:
    """Fewer assigned revisions score higher. The raw score is the activator's load without this revision's own
    slot (so that keeping an activator is not penalised); :meth:`normalize` reverses it against the busiest
    candidate: ``100 x (max - load) / max``. Near-equal loads stay near-equal scores (a new, empty activator
    scores 100 against ~0 for the rest), unlike min-max scaling, which would blow a 1-revision difference up
    to the full 0..100 range."""

    uses_chosen = False

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        load = snapshot.load.get(activator.name, 0)
        if activator.name in request.current and load > 0:
            load -= 1
        return load

    def normalize(self, scores: dict[str, int]) -> dict[str, int]:
        busiest = max(scores.values(), default=0)
        if busiest <= 0:
            return dict.fromkeys(scores, MAX_SCORE)
        return {name: MAX_SCORE * (busiest - load) // busiest for name, load in scores.items()}


@dataclass(frozen=True)
class ZoneSpread:
    """Prefers zones the selection uses least: ``100 x (1 - share of the chosen activators in this zone)``, so a
    zone not yet chosen scores 100. Activators without a zone share the zone ``""``."""

    uses_chosen = True
    # One-slot memo of the zone counts of the last ``chosen_so_far`` (the framework scores every candidate of a
    # pick against the same tuple); invisible from outside.
    _last: list[tuple[tuple[Activator, ...], dict[str, int]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        if not chosen_so_far:
            return MAX_SCORE
        counts = self._counts(chosen_so_far)
        total = len(chosen_so_far)
        return MAX_SCORE * (total - counts.get(activator.zone, 0)) // total

    def _counts(self, chosen: tuple[Activator, ...]) -> dict[str, int]:
        last = self._last[0] if self._last else None
        if last is not None and last[0] is chosen:
            return last[1]
        counts: dict[str, int] = {}
        for activator in chosen:
            counts[activator.zone] = counts.get(activator.zone, 0) + 1
        self._last[:] = [(chosen, counts)]
        return counts
