"""Activator subsetting in the shape of kube-scheduler's framework: filter -> score -> normalize -> weighted sum.

One entry, :func:`select`, picks N activators for a revision from an in-memory :class:`Snapshot`. It is pure,
synchronous and deterministic (ties go to the smaller activator name). Picking is greedy, one activator at a time,
so that score plugins which look at the partial selection (zone spread) can see it.

Plugins (see :mod:`endpointsctl.subsetting.plugins`):

- a *filter* is a callable ``(snapshot, request, activator) -> reason | None``. It may define
  ``cache_key(request) -> Hashable``: its verdicts then depend on the request only through that key and on the
  snapshot only through its activators and nodes (never its load), and :func:`select` computes the feasible set
  once per snapshot and key (kube-scheduler's old equivalence-class cache): revisions with the same scheduling
  constraints share it.
- a *score* plugin has ``score(snapshot, request, activator, chosen_so_far) -> int``; the result must be 0..100,
  or any int when it also has ``normalize(scores) -> scores`` mapping the raw scores of all candidates to 0..100.
  A plugin whose ``uses_chosen`` attribute is False declares that it ignores ``chosen_so_far``: it is scored and
  normalized once per selection over all feasible activators, instead of once per pick over those left.

Algorithms are swappable: :func:`load_algorithm` resolves :attr:`SubsettingConfig.algorithm` through the
``localsched.subsetting`` entry-point group, where the built-in :func:`default_algorithm` is ``least-loaded``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from endpointsctl.subsetting import plugins

ENTRY_POINT_GROUP = "localsched.subsetting"
DEFAULT_ALGORITHM = "least-loaded"
MAX_SCORE = 100


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
    def __call__(self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, /) -> str | None: ...


class ScorePlugin(Protocol):
    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int: ...


@runtime_checkable
class Normalizer(Protocol):
    def normalize(self, scores: dict[str, int]) -> dict[str, int]: ...


class Algorithm(Protocol):
    def select(self, snapshot: Snapshot, request: RevisionRequest, n: int) -> Selection: ...


class PluginError(ValueError):
    """A plugin broke its contract (a score outside 0..100)."""


@dataclass(frozen=True)
class Profile:
    filters: Sequence[FilterPlugin]
    scorers: Sequence[tuple[ScorePlugin, int]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "scorers", tuple((plugin, weight) for plugin, weight in self.scorers))
        for plugin, weight in self.scorers:
            if weight < 0:
                raise ValueError(f"score plugin {_name(plugin)} has a negative weight {weight}")


# Explicit registries: name -> factory. Third parties ship whole algorithms through the entry-point group.
FILTERS: dict[str, Callable[[], FilterPlugin]] = {
    "ActivatorReady": plugins.ActivatorReady,
    "NodeEligible": plugins.NodeEligible,
}
SCORERS: dict[str, Callable[[], ScorePlugin]] = {
    "Stickiness": plugins.Stickiness,
    "LeastLoaded": plugins.LeastLoaded,
    "ZoneSpread": plugins.ZoneSpread,
}

DEFAULT_FILTERS = ("ActivatorReady", "NodeEligible")
# Stickiness outweighs everything else together (300 > 100 + 100), so an unchanged snapshot never reshuffles and
# a recompute after a loss only replaces what was lost. Zone spread and least-loaded weigh the same; with
# LeastLoaded normalized against the busiest candidate, balanced loads differ by a few points, so zone spread
# decides between zones and load decides within a zone.
DEFAULT_WEIGHTS: Mapping[str, int] = MappingProxyType({"Stickiness": 3, "LeastLoaded": 1, "ZoneSpread": 1})


@dataclass(frozen=True)
class SubsettingConfig:
    """Which algorithm, and for the built-in one, which filters and score weights (weight 0 disables a scorer)."""

    algorithm: str = DEFAULT_ALGORITHM
    weights: Mapping[str, int] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    filters: tuple[str, ...] = DEFAULT_FILTERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))
        object.__setattr__(self, "filters", tuple(self.filters))
        for name in self.filters:
            if name not in FILTERS:
                raise ValueError(f"subsetting.filters: unknown filter {name!r}; available: {', '.join(FILTERS)}")
        for name, weight in self.weights.items():
            if name not in SCORERS:
                raise ValueError(f"subsetting.weights: unknown score plugin {name!r}; available: {', '.join(SCORERS)}")
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise ValueError(f"subsetting.weights.{name}: must be a whole number >= 0, got {weight!r}")

    def profile(self) -> Profile:
        return Profile(
            filters=[FILTERS[name]() for name in self.filters],
            scorers=[(SCORERS[name](), weight) for name, weight in self.weights.items() if weight > 0],
        )


@dataclass(frozen=True)
class ProfileAlgorithm:
    """The built-in algorithm: one :class:`Profile` run through :func:`select`."""

    profile: Profile

    def select(self, snapshot: Snapshot, request: RevisionRequest, n: int) -> Selection:
        return select(snapshot, request, n, self.profile)


def default_algorithm(config: SubsettingConfig) -> Algorithm:
    """The built-in ``least-loaded`` algorithm (registered under the ``localsched.subsetting`` entry points)."""
    return ProfileAlgorithm(config.profile())


class UnknownAlgorithmError(LookupError):
    pass


def load_algorithm(config: SubsettingConfig) -> Algorithm:
    """Resolve ``config.algorithm`` through the entry-point group and build it with ``config``.

    An entry point names a callable ``(SubsettingConfig) -> Algorithm``.
    """
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    entry_point = found.get(config.algorithm)
    if entry_point is None:
        available = ", ".join(sorted(found)) or "none installed"
        raise UnknownAlgorithmError(
            f"subsetting.algorithm: unknown algorithm {config.algorithm!r}; "
            f"available in entry-point group {ENTRY_POINT_GROUP!r}: {available}"
        )
    factory = entry_point.load()
    algorithm = factory(config)
    if not callable(getattr(algorithm, "select", None)):
        raise TypeError(f"subsetting algorithm {config.algorithm!r} ({entry_point.value}) has no select() method")
    return algorithm  # type: ignore[no-any-return]


# -- selection ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Feasible:
    activators: tuple[Activator, ...]  # sorted by name
    rejected: Mapping[str, str]


def select(snapshot: Snapshot, request: RevisionRequest, n: int, profile: Profile) -> Selection:
    """Pick up to ``n`` activators for ``request``: filter, then greedily the best weighted score, ties by name."""
    feasible = _feasible(snapshot, request, profile.filters)
    candidates = feasible.activators
    count = min(n, len(candidates))
    if count <= 0:
        return Selection((), len(candidates), feasible.rejected)

    static: dict[str, int] = dict.fromkeys((a.name for a in candidates), 0)
    dynamic: list[tuple[ScorePlugin, int]] = []
    for plugin, weight in profile.scorers:
        if weight == 0:
            continue
        if getattr(plugin, "uses_chosen", True):
            dynamic.append((plugin, weight))
            continue
        scores = _scores(plugin, snapshot, request, candidates, ())
        for name, value in scores.items():
            static[name] += weight * value

    # Candidates by static score, best first; a pick stops looking once no one left can reach the best total.
    picker = _Picker(snapshot, request, static, tuple(dynamic))
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


def _feasible(snapshot: Snapshot, request: RevisionRequest, filters: Sequence[FilterPlugin]) -> _Feasible:
    key = _cache_key(request, filters)
    if key is not None:
        cached = snapshot._feasible.get(key)
        if cached is not None:
            return cached
    passed: list[Activator] = []
    rejected: dict[str, str] = {}
    for name in sorted(snapshot.activators):
        activator = snapshot.activators[name]
        for check in filters:
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


def _cache_key(request: RevisionRequest, filters: Sequence[FilterPlugin]) -> Hashable | None:
    parts: list[Hashable] = []
    for check in filters:
        cache_key = getattr(check, "cache_key", None)
        if cache_key is None:
            return None
        parts.append((check, cache_key(request)))
    return tuple(parts)


def _name(plugin: object) -> str:
    return type(plugin).__name__
