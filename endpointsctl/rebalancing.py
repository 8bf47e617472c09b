"""Bounded rebalancing onto a newly Ready activator: take it into use without reshuffling every revision.

Stickiness keeps every revision where it is, so a new activator would only ever receive new revisions and those
short of N. :func:`rebalance_onto` moves single slots onto it until it holds its fair share (the mean load of the
Ready activators). Each step takes a donor busier than the newcomer by more than one -- from the newcomer's own zone
first, busiest first, ties by name -- and re-selects one of the donor's revisions with stickiness released for that
donor only. The move is kept only when exactly that slot lands on the newcomer (the newcomer must pass the
revision's filters and win on score) and the revision spans no fewer zones than before (a same-zone move never
changes the zones; a move across zones must not undo zone spread). A donor none of whose revisions can move is
skipped.

Churn is bounded: every move changes one slot of one revision, at most ``target`` moves in all -- about
1/activators of all slots. Pure and synchronous, like the selection it drives; the caller publishes the moved
revisions. The scale simulation (``loadtest/subsetting_sim.py``) runs this function to measure it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from endpointsctl.assignments import AssignmentChange, Assignments
from endpointsctl.subsetting.framework import Algorithm, RevisionRequest, Snapshot


@dataclass(frozen=True)
class Rebalance:
    newcomer: str
    target: int
    moves: tuple[AssignmentChange, ...]
    attempts: int  # selections run


def fair_share(load: Mapping[str, int], ready: Iterable[str]) -> int:
    """The mean number of revisions per Ready activator, rounded down."""
    names = list(ready)
    if not names:
        return 0
    return math.floor(sum(load.get(name, 0) for name in names) / len(names))


def rebalance_onto(
    assignments: Assignments,
    algorithm: Algorithm,
    snapshot: Snapshot,
    newcomer: str,
    *,
    target: int,
    request_of: Callable[[str], RevisionRequest | None],
) -> Rebalance:
    """Move single slots onto ``newcomer`` until it holds ``target`` revisions (see the module docstring).

    ``request_of(key)`` gives a revision's request (its pod spec; ``current`` is ignored) or None when the
    revision is unknown. ``assignments`` is updated in place; the moves are returned.
    """
    activator = snapshot.activators.get(newcomer)
    if activator is None or not activator.ready:
        return Rebalance(newcomer, target, (), 0)
    load = assignments.load()
    zone_of = {a.name: a.zone for a in snapshot.activators.values()}
    donors = {a.name for a in snapshot.activators.values() if a.name != newcomer and a.ready}
    tried: set[tuple[str, str]] = set()
    moves: list[AssignmentChange] = []
    attempts = 0
    while load.get(newcomer, 0) < target and donors:
        donor = min(donors, key=lambda name: (zone_of[name] != activator.zone, -load.get(name, 0), name))
        if load.get(donor, 0) <= load.get(newcomer, 0) + 1:
            donors.discard(donor)  # moving more would only swap which one is busier
            continue
        for key in sorted(assignments.revisions_of(donor)):
            current = frozenset(assignments.get(key))
            if newcomer in current or (key, donor) in tried:
                continue
            tried.add((key, donor))
            request = request_of(key)
            if request is None:
                continue
            attempts += 1
            released = RevisionRequest(key, request.pod_spec, current - {donor})
            selection = algorithm.select(snapshot, released, len(current))
            after = frozenset(selection.chosen)
            zones_kept = len({zone_of.get(n, "") for n in after}) >= len({zone_of.get(n, "") for n in current})
            if after == (current - {donor}) | {newcomer} and zones_kept:
                moves.append(assignments.set(key, selection.chosen))
                break
        else:
            donors.discard(donor)
    return Rebalance(newcomer, target, tuple(moves), attempts)
