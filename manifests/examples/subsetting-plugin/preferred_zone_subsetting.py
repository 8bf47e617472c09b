"""``preferred-zone``: the built-in filters and scorers plus one score plugin of its own, which puts the activators
of one zone first (say, the zone with the cheapest nodes). The zone comes from ``PREFERRED_ZONE``.

The whole contract in one file: a score plugin is a small frozen dataclass with a pure ``score()``; an algorithm is
anything with ``select(snapshot, request, n) -> Selection``; the entry point names a factory taking the
controller's :class:`SubsettingConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from endpointsctl.subsetting.framework import Activator, Profile, ProfileAlgorithm, RevisionRequest, Snapshot
from endpointsctl.subsetting.registry import FILTERS, SCORERS, SubsettingConfig


@dataclass(frozen=True)
class PreferredZone:
    """100 for activators in ``zone``, 0 elsewhere."""

    zone: str
    uses_chosen = False  # ignores the partial selection: scored once per select()

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        return 100 if activator.zone == self.zone else 0


def algorithm(config: SubsettingConfig) -> ProfileAlgorithm:
    """The entry point: the operator's filters and weights, and PreferredZone weighing more than load and spread
    together (Stickiness, at 3 by default, still keeps what a revision already has)."""
    zone = os.environ.get("PREFERRED_ZONE", "")
    if not zone:
        raise ValueError("preferred-zone: set PREFERRED_ZONE to the zone to prefer")
    scorers = [(SCORERS[name](), weight) for name, weight in config.weights.items() if weight > 0]
    scorers.append((PreferredZone(zone), 2 * sum(w for name, w in config.weights.items() if name != "Stickiness")))
    return ProfileAlgorithm(Profile(filters=[FILTERS[name]() for name in config.filters], scorers=scorers))
