"""One revision's activators: size N, select, size again with what the filters let through.

N is needed before the selection runs, but the selection is what tells how many activators are eligible. So
:func:`choose` sizes N as if every activator in the snapshot were eligible, asks the algorithm for that many,
then sizes again with ``Selection.eligible``: only ``effective`` (and its conditions) can change, since ``desired``
never depends on the eligible count (:mod:`endpointsctl.sizing`).

The algorithm -- possibly a third party's -- is trusted with the choice, not with the bounds: what it returns is
cut to known activators (those in the snapshot), without duplicates, at most ``desired``, in its pick order.

Pure and synchronous, like the selection it drives: the caller records the assignment. The controller runs it for
every reconcile, the scale simulation (``loadtest/subsetting_sim.py``) for every revision it recomputes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from endpointsctl.sizing import Sizing
from endpointsctl.subsetting.framework import Algorithm, RevisionRequest, Snapshot

Size = Callable[[int], Sizing]
"""eligible activators -> the revision's :class:`Sizing` (``desired_activators`` with every other input bound)."""


@dataclass(frozen=True)
class Choice:
    sizing: Sizing
    """Sized with the number of activators that passed the filters."""
    chosen: tuple[str, ...]
    """Activator names in pick order; fewer than ``sizing.desired`` when not enough are eligible."""


def choose(algorithm: Algorithm, snapshot: Snapshot, request: RevisionRequest, size: Size) -> Choice:
    """Size, select with ``algorithm`` and size again (see the module docstring). Never raises what ``size`` and
    ``algorithm.select`` do not."""
    wanted = size(len(snapshot.activators)).desired
    selection = algorithm.select(snapshot, request, wanted)
    sizing = size(selection.eligible)
    known = (name for name in dict.fromkeys(selection.chosen) if name in snapshot.activators)
    return Choice(sizing, tuple(known)[: sizing.desired])
