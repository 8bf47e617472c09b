"""Names to plugins and algorithms, beside the plugins (as kube-scheduler keeps its in-tree registry).

- :data:`FILTERS` and :data:`SCORERS`: the built-in plugins of :mod:`endpointsctl.subsetting.plugins` by name, in
  explicit dicts (name -> factory);
- :class:`SubsettingConfig`: the operator's choice of algorithm and, for the built-in one, of filters and score
  weights, checked against those names when it is built;
- algorithms by name: :func:`load_algorithm` resolves :attr:`SubsettingConfig.algorithm` through the
  ``localsched.subsetting`` entry-point group, where the built-in :func:`default_algorithm` is ``least-loaded``.
  Third parties ship whole algorithms through that group (docs/subsetting.md).

The contracts and :func:`~endpointsctl.subsetting.framework.select` are in :mod:`endpointsctl.subsetting.framework`,
which knows no plugin by name.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from endpointsctl.subsetting import plugins
from endpointsctl.subsetting.framework import Algorithm, FilterPlugin, Profile, ProfileAlgorithm, ScorePlugin

ENTRY_POINT_GROUP = "localsched.subsetting"
DEFAULT_ALGORITHM = "least-loaded"

FILTERS: dict[str, Callable[[], FilterPlugin]] = {
    "ActivatorReady": plugins.ActivatorReady,
    "NodeEligible": plugins.NodeEligible,
}
SCORERS: dict[str, Callable[[], ScorePlugin]] = {
    "Stickiness": plugins.Stickiness,
    "LeastLoaded": plugins.LeastLoaded,
    "ZoneSpread": plugins.ZoneSpread,
}

DEFAULT_FILTERS: tuple[str, ...] = ("ActivatorReady", "NodeEligible")
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
    if not (isinstance(algorithm, Algorithm) and callable(algorithm.select)):
        raise TypeError(f"subsetting algorithm {config.algorithm!r} ({entry_point.value}) has no select() method")
    return algorithm
