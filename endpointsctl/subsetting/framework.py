"""Activator subsetting in the shape of kube-scheduler's framework: filter -> score -> normalize -> weighted sum.

One entry, :func:`select`, picks N activators for a revision from an in-memory :class:`Snapshot`. It is pure,
synchronous and deterministic (ties go to the smaller activator name). Picking is greedy, one activator at a time,
so that score plugins which look at the partial selection (zone spread) can see it.

This module holds the contracts and :func:`select`, and knows no plugin by name. The built-in plugins are in
:mod:`endpointsctl.subsetting.plugins`; their names, the operator's choice of them (``SubsettingConfig``) and the
algorithms found through the ``localsched.subsetting`` entry-point group are in
:mod:`endpointsctl.subsetting.registry`, beside them. The contracts, as Protocols:

- :class:`FilterPlugin`: a callable ``(snapshot, request, activator) -> reason | None``. A filter that is also a
  :class:`CacheableFilter` has ``cache_key(request) -> Hashable``: its verdicts then depend on the request only
  through that key and on the snapshot only through its activators and nodes (never its load), and :func:`select`
  computes the feasible set once per snapshot and key (kube-scheduler's old equivalence-class cache): revisions
  with the same scheduling constraints share it.
- :class:`ScorePlugin`: ``score(snapshot, request, activator, chosen_so_far) -> int``; the result must be
  0..:data:`MAX_SCORE`, or any int when the plugin is also a :class:`Normalizer`, whose ``normalize(scores)`` maps
  the raw scores of all candidates to 0..:data:`MAX_SCORE`. A plugin that is a :class:`DeclaresUsesChosen` with
  ``uses_chosen`` False declares that it ignores ``chosen_so_far``: it is scored and normalized once per selection
  over all feasible activators, instead of once per pick over those left (a plugin that does not say is assumed
  to read it).
- :class:`Algorithm`: anything with ``select(snapshot, request, n) -> Selection``; :class:`ProfileAlgorithm`, one
  :class:`Profile` run through :func:`select`, is the built-in one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

MAX_SCORE = 100
"""The best score; every score, after normalization, is in 0..MAX_SCORE."""


@dataclass(frozen=True)
class Activator:
    name: str
    ip: str
    node: str
    zone: str
    ready: bool


@dataclass(frozen=True)
class Snapshot:
    """What selection sees. ``activators`` and ``nodes`` (Node JSON by name) must not change while the snapshot is
    in use: feasible sets are cached on it. ``load`` (activator -> revisions assigned, counting the current
    assignment of the revision being selected) may be a live read-only view such as ``Assignments.load()``, so
    that a run of selections sees each other's choices."""

    activators: Mapping[str, Activator]
    nodes: Mapping[str, Mapping[str, Any]]
    load: Mapping[str, int] = field(default_factory=dict)
    _feasible: dict[Hashable, _Feasible] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, activator in self.activators.items():
            if name != activator.name:
                raise ValueError(f"activator {activator.name!r} is keyed as {name!r}")


@dataclass(frozen=True)
class RevisionRequest:
    key: str
    pod_spec: Mapping[str, Any]
    current: frozenset[str] = frozenset()
    """Activators assigned now (stickiness keeps them)."""


@dataclass(frozen=True)
class Selection:
    chosen: tuple[str, ...]
    """In pick order, best first."""
    eligible: int
    """How many activators passed every filter."""
    rejected: Mapping[str, str]
    """Activator -> reason of the first filter that rejected it."""


class FilterPlugin(Protocol):
    """Rejects an activator with a reason, or passes it (None)."""

    def __call__(self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, /) -> str | None: ...


@runtime_checkable
class CacheableFilter(FilterPlugin, Protocol):
    """A filter whose verdicts depend on the request only through ``cache_key(request)`` and on the snapshot only
    through its activators and nodes: its feasible sets are cached on the snapshot by that key."""

    def cache_key(self, request: RevisionRequest) -> Hashable: ...


class ScorePlugin(Protocol):
    """Scores an activator 0..MAX_SCORE (any int when it is also a :class:`Normalizer`)."""

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int: ...


@runtime_checkable
class Normalizer(Protocol):
    """A score plugin that maps the raw scores of all candidates to 0..MAX_SCORE."""

    def normalize(self, scores: dict[str, int]) -> dict[str, int]: ...


@runtime_checkable
class DeclaresUsesChosen(Protocol):
    """A score plugin that says whether its score reads ``chosen_so_far``. False: it is scored once per selection
    (over all feasible activators), not once per pick. A plugin that does not say is assumed to read it."""

    @property
    def uses_chosen(self) -> bool: ...


def uses_chosen(plugin: ScorePlugin) -> bool:
    """Whether ``plugin``'s score depends on the partial selection (True unless it declares otherwise)."""
    return plugin.uses_chosen if isinstance(plugin, DeclaresUsesChosen) else True


@runtime_checkable
class Algorithm(Protocol):
    def select(self, snapshot: Snapshot, request: RevisionRequest, n: int) -> Selection: ...


class PluginError(ValueError):
    """A plugin broke its contract (a score outside 0..100)."""


@dataclass(frozen=True)
class Profile:
    """Filters in order, and weighted scorers (weight 0 disables one). The plugins' optional capabilities are read
    once, here: an ``isinstance`` check on a runtime-checkable Protocol is too slow to repeat per selection."""

    filters: Sequence[FilterPlugin]
    scorers: Sequence[tuple[ScorePlugin, int]]
    cacheable: tuple[CacheableFilter, ...] | None = field(init=False, repr=False, compare=False)
    """The filters, when every one is a :class:`CacheableFilter` (feasible sets are then cached), else None."""
    static: tuple[tuple[ScorePlugin, int], ...] = field(init=False, repr=False, compare=False)
    """The enabled scorers that ignore ``chosen_so_far``: scored once per selection."""
    dynamic: tuple[tuple[ScorePlugin, int], ...] = field(init=False, repr=False, compare=False)
    """The enabled scorers that read ``chosen_so_far``: scored once per pick."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "scorers", tuple((plugin, weight) for plugin, weight in self.scorers))
        for plugin, weight in self.scorers:
            if weight < 0:
                raise ValueError(f"score plugin {_name(plugin)} has a negative weight {weight}")
        cacheable = tuple(check for check in self.filters if isinstance(check, CacheableFilter))
        object.__setattr__(self, "cacheable", cacheable if len(cacheable) == len(self.filters) else None)
        enabled = [(plugin, weight) for plugin, weight in self.scorers if weight != 0]
        object.__setattr__(self, "static", tuple((p, w) for p, w in enabled if not uses_chosen(p)))
        object.__setattr__(self, "dynamic", tuple((p, w) for p, w in enabled if uses_chosen(p)))


@dataclass(frozen=True)
class ProfileAlgorithm:
    """The built-in algorithm: one :class:`Profile` run through :func:`select`."""

    profile: Profile

    def select(self, snapshot: Snapshot, request: RevisionRequest, n: int) -> Selection:
        return select(snapshot, request, n, self.profile)


# -- selection ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Feasible:
    activators: tuple[Activator, ...]  # sorted by name
    rejected: Mapping[str, str]


def select(snapshot: Snapshot, request: RevisionRequest, n: int, profile: Profile) -> Selection:
    """Pick up to ``n`` activators for ``request``: filter, then greedily the best weighted score, ties by name."""
    feasible = _feasible(snapshot, request, profile)
    candidates = feasible.activators
    count = min(n, len(candidates))
    if count <= 0:
        return Selection((), len(candidates), feasible.rejected)

    static: dict[str, int] = dict.fromkeys((a.name for a in candidates), 0)
    for plugin, weight in profile.static:
        scores = _scores(plugin, snapshot, request, candidates, ())
        for name, value in scores.items():
            static[name] += weight * value

    # Candidates by static score, best first; a pick stops looking once no one left can reach the best total.
    picker = _Picker(snapshot, request, static, profile.dynamic)
    order = sorted(candidates, key=lambda a: (-static[a.name], a.name))
    chosen: list[Activator] = []
    taken: set[str] = set()
    for _ in range(count):
        pick = picker.pick(order, taken, tuple(chosen))
        chosen.append(pick)
        taken.add(pick.name)
    return Selection(tuple(a.name for a in chosen), len(candidates), feasible.rejected)


@dataclass(frozen=True)
class _Picker:
    """One pick of the greedy loop: the best total of static (precomputed) and chosen-dependent scores."""

    snapshot: Snapshot
    request: RevisionRequest
    static: Mapping[str, int]
    dynamic: tuple[tuple[ScorePlugin, int], ...]

    def pick(self, order: list[Activator], taken: set[str], so_far: tuple[Activator, ...]) -> Activator:
        """The best of ``order`` (sorted by static score, best first, then by name) not yet ``taken``."""
        if any(isinstance(plugin, Normalizer) for plugin, _ in self.dynamic):
            return self._pick_normalized([a for a in order if a.name not in taken], so_far)
        return self._pick_bounded(order, taken, so_far)

    def _pick_bounded(self, order: list[Activator], taken: set[str], so_far: tuple[Activator, ...]) -> Activator:
        # Chosen-dependent scores add at most `headroom`. Candidates come by static score, then name, so once one
        # cannot beat the best so far even with full headroom (or only tie it with a larger name), no later one
        # can either: stop. In the common case this looks at a handful of candidates, not all of them.
        headroom = sum(weight * MAX_SCORE for _, weight in self.dynamic)
        best: Activator | None = None
        best_total = -1
        for activator in order:
            if activator.name in taken:
                continue
            bound = self.static[activator.name] + headroom
            if best is not None and (bound < best_total or (bound == best_total and activator.name > best.name)):
                break
            total = self.static[activator.name]
            for plugin, weight in self.dynamic:
                value = plugin.score(self.snapshot, self.request, activator, so_far)
                if not 0 <= value <= MAX_SCORE:
                    raise _out_of_range(plugin, value)
                total += weight * value
            if best is None or total > best_total or (total == best_total and activator.name < best.name):
                best, best_total = activator, total
        assert best is not None, "pick() is only called while candidates remain"
        return best

    def _pick_normalized(self, remaining: list[Activator], so_far: tuple[Activator, ...]) -> Activator:
        totals = {a.name: self.static[a.name] for a in remaining}
        for plugin, weight in self.dynamic:
            for name, value in _scores(plugin, self.snapshot, self.request, remaining, so_far).items():
                totals[name] += weight * value
        return min(remaining, key=lambda a: (-totals[a.name], a.name))


def _scores(
    plugin: ScorePlugin,
    snapshot: Snapshot,
    request: RevisionRequest,
    candidates: Sequence[Activator],
    so_far: tuple[Activator, ...],
) -> dict[str, int]:
    scores = {a.name: plugin.score(snapshot, request, a, so_far) for a in candidates}
    if isinstance(plugin, Normalizer):
        scores = plugin.normalize(scores)
    for value in scores.values():
        if not 0 <= value <= MAX_SCORE:
            raise _out_of_range(plugin, value)
    return scores


def _out_of_range(plugin: object, value: int) -> PluginError:
    return PluginError(f"score plugin {_name(plugin)} returned {value}, outside 0..{MAX_SCORE}")


def _feasible(snapshot: Snapshot, request: RevisionRequest, profile: Profile) -> _Feasible:
    key = None if profile.cacheable is None else tuple((check, check.cache_key(request)) for check in profile.cacheable)
    if key is not None:
        cached = snapshot._feasible.get(key)
        if cached is not None:
            return cached
    passed: list[Activator] = []
    rejected: dict[str, str] = {}
    for name in sorted(snapshot.activators):
        activator = snapshot.activators[name]
        for check in profile.filters:
            reason = check(snapshot, request, activator)
            if reason is not None:
                rejected[name] = reason
                break
        else:
            passed.append(activator)
    result = _Feasible(tuple(passed), MappingProxyType(rejected))
    if key is not None:
        snapshot._feasible[key] = result
    return result


def _name(plugin: object) -> str:
    return type(plugin).__name__
