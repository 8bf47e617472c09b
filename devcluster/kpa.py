"""TEST SCAFFOLDING — the decisions of a stand-in for Knative Serving's autoscaler (the KPA): pure logic, no I/O.

Knative's autoscaler cannot run on the devcluster, and without it nothing scales a revision to zero, nor back from
zero on the standard path. ``devcluster/autoscaler_standin.py`` is the process; this module is what it decides
with, written after knative/serving so that localsched can be tested against the same behaviour:

* :class:`Config`: ``config-autoscaler`` (``pkg/autoscaler/config/config.go``), with Knative's defaults and checks.
* :class:`DeciderSpec`: one revision's parameters, the config overridden by the Revision's annotations and
  ``containerConcurrency`` (``pkg/reconciler/autoscaling/kpa/resources/decider.go``, ``ResolveMetricTarget``).
* :class:`Buckets`: per-second sums of the activators' concurrency (``pkg/autoscaler/aggregation/bucketing.go``).
* :class:`Decider`: the stable and panic windows, panic mode, the scale-up and scale-down rates
  (``pkg/autoscaler/scaling/autoscaler.go``), then min/max-scale and the scale-to-zero grace
  (``pkg/reconciler/autoscaling/kpa/scaler.go``).

Time is whatever the caller passes as ``now`` (seconds, any monotonic origin), so tests drive it by hand.
docs/autoscaler-standin.md lists what is modelled and what is simplified.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from localsched import knative
from localsched.knative import AutoscalerConfigError, RevisionSpecError
from localsched.stats import Stat

BUCKET_SECONDS = 1  # Knative's config.BucketSize: stats are summed per second


def _seconds(value: float) -> str:
    """A duration as Knative would print it in an error, e.g. ``60s``."""
    return f"{value:g}s"


def _require(ok: bool, key: str, value: object, reason: str, error: type[knative.KnativeValueError]) -> None:
    if not ok:
        raise error(key, value, reason)


# -- config-autoscaler ----------------------------------------------------------------------------------------------


def _percentage(key: str, value: object) -> float:
    """container-concurrency-target-percentage: Knative still reads a value in (0, 1] as a fraction (``0.7``)."""
    number = knative.parse_number(key, value, low=0, high=100, low_exclusive=True)
    return number * 100 if number <= 1 else number


def _float(key: str, value: object) -> float:
    return knative.parse_number(key, value)


# Config field -> (config-autoscaler key, parser of the ConfigMap's string).
_CONFIG_KEYS: dict[str, tuple[str, Callable[[str, object], Any]]] = {
    "enable_scale_to_zero": ("enable-scale-to-zero", knative.parse_bool),
    "container_concurrency_target_percentage": ("container-concurrency-target-percentage", _percentage),
    "container_concurrency_target_default": ("container-concurrency-target-default", _float),
    "stable_window": ("stable-window", knative.parse_duration),
    "panic_window_percentage": ("panic-window-percentage", _float),
    "panic_threshold_percentage": ("panic-threshold-percentage", _float),
    "max_scale_up_rate": ("max-scale-up-rate", _float),
    "max_scale_down_rate": ("max-scale-down-rate", _float),
    "scale_to_zero_grace_period": ("scale-to-zero-grace-period", knative.parse_duration),
    "scale_to_zero_pod_retention_period": ("scale-to-zero-pod-retention-period", knative.parse_duration),
    "initial_scale": ("initial-scale", knative.parse_whole),
    "allow_zero_initial_scale": ("allow-zero-initial-scale", knative.parse_bool),
    "min_scale": ("min-scale", knative.parse_whole),
    "max_scale": ("max-scale", knative.parse_whole),
}


@dataclass(frozen=True)
class Config:
    """The ``config-autoscaler`` keys the KPA decides with, and Knative's defaults.

    Durations are seconds; the target percentage is a percentage (70, not 0.7). Validated on construction with
    Knative's own checks (``validate`` in config.go), so a bad ConfigMap is refused as Knative would refuse it:
    :class:`~localsched.knative.AutoscalerConfigError` names the key and the value.
    """

    enable_scale_to_zero: bool = True
    container_concurrency_target_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0

    def __post_init__(self) -> None:
        self._check_windows()
        self._check_rates()
        self._check_scales()

    @classmethod
    def from_configmap(cls, data: Mapping[str, str] | None) -> Config:
        """Read a ConfigMap's ``data``: a missing map or key keeps Knative's default, keys the KPA does not use
        (``target-burst-capacity`` ...) are ignored, and a bad value raises naming the key."""
        data = data or {}
        values = {name: parse(key, data[key]) for name, (key, parse) in _CONFIG_KEYS.items() if key in data}
        return cls(**values)

    @property
    def target_utilization(self) -> float:
        """container-concurrency-target-percentage as a fraction."""
        return self.container_concurrency_target_percentage / 100

    def _check_windows(self) -> None:
        err = AutoscalerConfigError
        window = self.stable_window
        _require(knative.WINDOW_MIN_SECONDS <= window <= knative.WINDOW_MAX_SECONDS, "stable-window",
                 _seconds(window), "must be between 6s and 1h", err)  # fmt: skip
        _require(window == round(window), "stable-window", _seconds(window), "must be whole seconds", err)
        pwp = self.panic_window_percentage
        _require(knative.PANIC_WINDOW_PERCENTAGE_MIN <= pwp <= knative.PANIC_WINDOW_PERCENTAGE_MAX,
                 "panic-window-percentage", pwp, "must be between 1 and 100", err)  # fmt: skip
        ptp = self.panic_threshold_percentage
        _require(knative.PANIC_THRESHOLD_PERCENTAGE_MIN <= ptp <= knative.PANIC_THRESHOLD_PERCENTAGE_MAX,
                 "panic-threshold-percentage", ptp, "must be between 110 and 1000", err)  # fmt: skip
        grace = self.scale_to_zero_grace_period
        _require(grace > 0, "scale-to-zero-grace-period", _seconds(grace), "must be positive", err)
        retention = self.scale_to_zero_pod_retention_period
        _require(retention >= 0, "scale-to-zero-pod-retention-period", _seconds(retention), "must be >= 0", err)

    def _check_rates(self) -> None:
        err = AutoscalerConfigError
        pct = self.container_concurrency_target_percentage
        _require(0 < pct <= 100, "container-concurrency-target-percentage", pct, "must be in (0, 100]", err)
        default = self.container_concurrency_target_default
        _require(default * self.target_utilization >= knative.TARGET_MIN, "container-concurrency-target-default",
                 default, f"times the target percentage must be at least {knative.TARGET_MIN}", err)  # fmt: skip
        _require(self.max_scale_up_rate > 1, "max-scale-up-rate", self.max_scale_up_rate, "must be > 1", err)
        _require(self.max_scale_down_rate > 1, "max-scale-down-rate", self.max_scale_down_rate, "must be > 1", err)

    def _check_scales(self) -> None:
        err = AutoscalerConfigError
        for key, value in (("initial-scale", self.initial_scale), ("min-scale", self.min_scale),
                           ("max-scale", self.max_scale)):  # fmt: skip
            _require(value >= 0, key, value, "must be >= 0", err)
        _require(self.initial_scale > 0 or self.allow_zero_initial_scale, "initial-scale", self.initial_scale,
                 "0 needs allow-zero-initial-scale: true", err)  # fmt: skip
        _require(self.max_scale == 0 or self.min_scale <= self.max_scale, "min-scale", self.min_scale,
                 f"must be <= max-scale ({self.max_scale})", err)  # fmt: skip


# -- one revision's parameters -------------------------------------------------------------------------------------


def _window(key: str, value: object) -> float:
    seconds = knative.parse_duration(key, value, RevisionSpecError)
    _require(knative.WINDOW_MIN_SECONDS <= seconds <= knative.WINDOW_MAX_SECONDS, key, value,
             "must be between 6s and 1h", RevisionSpecError)  # fmt: skip
    _require(seconds == math.floor(seconds), key, value, "must be whole seconds", RevisionSpecError)
    return seconds


def _retention(key: str, value: object) -> float:
    seconds = knative.parse_duration(key, value, RevisionSpecError)
    _require(0 <= seconds <= knative.WINDOW_MAX_SECONDS, key, value, "must be between 0s and 1h", RevisionSpecError)
    return seconds


def _ranged(low: float, high: float) -> Callable[[str, object], float]:
    def parse(key: str, value: object) -> float:
        return knative.parse_number(key, value, low=low, high=high, error=RevisionSpecError)

    return parse


def _target(key: str, value: object) -> float:
    return knative.parse_number(key, value, low=knative.TARGET_MIN, error=RevisionSpecError)


def _scale(key: str, value: object) -> int:
    return knative.parse_whole(key, value, RevisionSpecError)


def _round_half_up(value: float) -> int:
    """Go's ``Duration.Round``: halves away from zero (Python's ``round`` would round them to even)."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class DeciderSpec:
    """What the decider of one revision works with: ``config-autoscaler`` overridden by the revision.

    ``target`` is the per-pod concurrency the KPA aims at (``total`` times the target utilization); ``total`` is
    the per-pod capacity it is taken from: the ``target`` annotation (at most ``containerConcurrency``), else
    ``containerConcurrency``, else ``container-concurrency-target-default``. Windows and periods are seconds;
    ``panic_threshold`` is a ratio (2.0 for 200%); ``max_scale`` 0 means no maximum.
    """

    target: float = 70.0
    total: float = 100.0
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    min_scale: int = 0
    max_scale: int = 0
    initial_scale: int = 1
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0

    @property
    def scale_to_zero_wait(self) -> float:
        """How long a revision must want zero pods before it gets zero: the longer of the grace period and the
        last pod's retention period (Knative's ``lastPodMaxTimeout``)."""
        return max(self.scale_to_zero_grace_period, self.scale_to_zero_pod_retention_period)

    @classmethod
    def from_revision(cls, revision: Mapping[str, Any], config: Config) -> DeciderSpec:
        """Parse a Revision object; a value Knative's webhook would reject raises
        :class:`~localsched.knative.RevisionSpecError` naming the annotation or field."""
        rev = knative.Revision.from_object(revision)
        return cls.from_config(config, container_concurrency=rev.container_concurrency, annotations=rev.annotations)

    @classmethod
    def from_config(
        cls, config: Config, *, container_concurrency: int = 0, annotations: Mapping[str, str] | None = None
    ) -> DeciderSpec:
        """The spec of a revision with these annotations and ``containerConcurrency`` (0: unbounded); without
        either, the spec of any revision under ``config`` (what a stat for an unknown revision is decided with)."""
        anns = annotations or {}

        def annotation(keys: tuple[str, ...], parse: Callable[[str, object], Any]) -> Any:
            return knative.annotation_value(anns, keys, parse)

        target = annotation((knative.TARGET_ANNOTATION,), _target)
        utilization = annotation((knative.TARGET_UTILIZATION_ANNOTATION, knative.TARGET_UTILIZATION_ANNOTATION_LEGACY),
                                 _ranged(1, 100))  # fmt: skip
        window = annotation((knative.WINDOW_ANNOTATION,), _window)
        panic_window_pct = annotation(
            (knative.PANIC_WINDOW_PERCENTAGE_ANNOTATION, knative.PANIC_WINDOW_PERCENTAGE_ANNOTATION_LEGACY),
            _ranged(knative.PANIC_WINDOW_PERCENTAGE_MIN, knative.PANIC_WINDOW_PERCENTAGE_MAX),
        )
        panic_threshold_pct = annotation(
            (knative.PANIC_THRESHOLD_PERCENTAGE_ANNOTATION, knative.PANIC_THRESHOLD_PERCENTAGE_ANNOTATION_LEGACY),
            _ranged(knative.PANIC_THRESHOLD_PERCENTAGE_MIN, knative.PANIC_THRESHOLD_PERCENTAGE_MAX),
        )
        retention = annotation((knative.SCALE_TO_ZERO_POD_RETENTION_ANNOTATION,), _retention)
        min_scale, max_scale, initial_scale = _scales(config, anns)

        total = _total(config, container_concurrency, target)
        fraction = utilization / 100 if utilization is not None else config.target_utilization
        stable_window = window if window is not None else config.stable_window
        pwp = panic_window_pct if panic_window_pct is not None else config.panic_window_percentage
        ptp = panic_threshold_pct if panic_threshold_pct is not None else config.panic_threshold_percentage
        return cls(
            target=max(knative.TARGET_MIN, total * fraction),
            total=total,
            stable_window=stable_window,
            panic_window=max(BUCKET_SECONDS, _round_half_up(stable_window * pwp / 100)),
            panic_threshold=ptp / 100,
            max_scale_up_rate=config.max_scale_up_rate,
            max_scale_down_rate=config.max_scale_down_rate,
            min_scale=min_scale,
            max_scale=max_scale,
            initial_scale=initial_scale,
            enable_scale_to_zero=config.enable_scale_to_zero,
            scale_to_zero_grace_period=config.scale_to_zero_grace_period,
            scale_to_zero_pod_retention_period=(
                retention if retention is not None else config.scale_to_zero_pod_retention_period
            ),
        )


def _total(config: Config, container_concurrency: int, target: float | None) -> float:
    """Per-pod capacity before the utilization, as Knative's ``ResolveMetricTarget`` picks it for concurrency."""
    if target is not None:
        return min(target, float(container_concurrency)) if container_concurrency > 0 else target
    if container_concurrency > 0:
        return float(container_concurrency)
    return config.container_concurrency_target_default


def _scales(config: Config, anns: Mapping[str, str]) -> tuple[int, int, int]:
    """(min-scale, max-scale, initial-scale): the annotations, else config-autoscaler's defaults."""
    min_scale = knative.annotation_value(anns, (knative.MIN_SCALE_ANNOTATION, knative.MIN_SCALE_ANNOTATION_LEGACY),
                                         _scale)  # fmt: skip
    max_scale = knative.annotation_value(anns, (knative.MAX_SCALE_ANNOTATION, knative.MAX_SCALE_ANNOTATION_LEGACY),
                                         _scale)  # fmt: skip
    initial = knative.annotation_value(
        anns, (knative.INITIAL_SCALE_ANNOTATION, knative.INITIAL_SCALE_ANNOTATION_LEGACY), _scale
    )
    low = config.min_scale if min_scale is None else min_scale
    high = config.max_scale if max_scale is None else max_scale
    if high and low > high:
        raise RevisionSpecError(knative.MIN_SCALE_ANNOTATION, low, f"must be <= max-scale ({high})")
    if initial == 0 and not config.allow_zero_initial_scale:
        raise RevisionSpecError(knative.INITIAL_SCALE_ANNOTATION, "0",
                                "0 is not allowed by config-autoscaler (allow-zero-initial-scale: false)")  # fmt: skip
    return low, high, config.initial_scale if initial is None else initial


# -- the stats ------------------------------------------------------------------------------------------------------


def stat_value(stat: Stat) -> float:
    """What Knative's collector records of a stat: its concurrency less the part a proxy already counted (an
    activator's stats say 0 proxied, so all of it counts)."""
    return stat.average_concurrent_requests - stat.average_proxied_concurrent_requests


def should_poke(stat: Stat, current_scale: int | None) -> bool:
    """Knative's ``MultiScaler.Poke``: a stat that says "requests" for a revision at zero is decided at once,
    not at the next tick, so that a scale from zero does not wait up to a tick."""
    return current_scale == 0 and stat.average_concurrent_requests > 0


class Buckets:
    """Per-second sums of the recorded values (Knative's ``TimedFloat64Buckets`` with a 1 s bucket).

    Every stat of a second adds to that second's bucket, so two activators each reporting 3 make 6. An average
    over a window divides the sum of its buckets by the window, or by the seconds since the first bucket if that
    is shorter (a fresh revision's first stat counts in full, as in Knative); seconds without a stat count as 0.
    Buckets older than the window are dropped, and once none is left the "first bucket" starts again.
    """

    def __init__(self) -> None:
        self._sums: dict[int, float] = {}
        self._first: int | None = None

    def __len__(self) -> int:
        return len(self._sums)

    def record(self, now: float, value: float, keep: float) -> None:
        """Add ``value`` to the bucket of ``now``'s second, forgetting buckets more than ``keep`` seconds old."""
        second = math.floor(now)
        self.prune(now, keep)
        if self._first is None:
            self._first = second
        self._sums[second] = self._sums.get(second, 0.0) + value

    def prune(self, now: float, keep: float) -> None:
        oldest = math.floor(now) - max(BUCKET_SECONDS, int(keep)) + 1
        for second in [s for s in self._sums if s < oldest]:
            del self._sums[second]
        if not self._sums:
            self._first = None

    def average(self, now: float, window: float) -> float:
        """The average per second over the ``window`` seconds ending with ``now``'s second."""
        if self._first is None:
            return 0.0
        second = math.floor(now)
        length = max(BUCKET_SECONDS, int(window))
        start = second - length + 1
        total = sum(value for s, value in self._sums.items() if start <= s <= second)
        span = min(length, second - self._first + 1)
        return total / span if span > 0 else 0.0


# -- deciding -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One decision for one revision: the replicas it should have and why.

    ``current`` is the Deployment's replicas and ``ready`` its ready pods the decision was made with; ``stable``
    and ``panic`` the window averages of concurrency; ``target`` the per-pod target; ``at`` the decider's clock.
    """

    desired: int
    current: int
    ready: int
    stable: float
    panic: float
    in_panic: bool
    reason: str
    target: float = 0.0
    at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pods(value: float, target: float) -> int:
    """ceil(value / target), without a float's last bit turning 2.0000000000000004 into 3 pods."""
    return max(0, math.ceil(round(value / target, 9)))


class Decider:
    """One revision's KPA: records its stats, and decides its replicas on every tick (or poke).

    ``decide`` follows Knative's ``autoscaler.Scale`` and then the KPA scaler: the stable and panic window
    averages over the target give the wanted pods; scale-up is limited to ``max-scale-up-rate`` times the ready
    pods and scale-down to the ready pods over ``max-scale-down-rate``; panic mode (the panic window wants at least
    the panic threshold times the ready pods) never scales below its highest decision until a whole stable window
    passed without crossing the threshold; min-scale and max-scale bound the result; and zero is decided only after
    the revision wanted zero, without demand, for the scale-to-zero wait (until then it keeps one pod).

    A decider created for a revision already at more than one ready pod starts in panic at that count, as Knative's
    does: a restarted autoscaler has lost the history and must not scale down before it has seen a window.
    """

    def __init__(self, spec: DeciderSpec, *, now: float = 0.0, ready_pods: int = 0) -> None:
        self.spec = spec
        self.buckets = Buckets()
        self.panic_time: float | None = now if ready_pods > 1 else None  # the last time over the threshold
        self.max_panic_pods = ready_pods
        self.zero_since: float | None = None  # since when it wants zero, with pods and without demand
        self.last_demand: float | None = None
        self.last: Decision | None = None

    def update(self, spec: DeciderSpec) -> None:
        """A changed revision or config-autoscaler: the history and the panic state are kept, as in Knative."""
        self.spec = spec

    def record(self, now: float, value: float) -> None:
        """One stat's value (:func:`stat_value`), received at ``now``. Any demand restarts the scale-to-zero wait."""
        self.buckets.record(now, value, self.spec.stable_window)
        if value > 0:
            self.last_demand = now
            self.zero_since = None

    @property
    def idle(self) -> bool:
        """No stat within the stable window: nothing to decide with (a decider of a vanished revision can go)."""
        return len(self.buckets) == 0

    @property
    def in_panic(self) -> bool:
        return self.panic_time is not None

    def decide(self, now: float, ready_pods: int, current: int | None = None) -> Decision:
        """The replicas the revision should have at ``now``, given its ready pods and its Deployment's current
        replicas (``current`` defaults to the ready pods)."""
        spec = self.spec
        current = ready_pods if current is None else current
        self.buckets.prune(now, spec.stable_window)
        stable = self.buckets.average(now, spec.stable_window)
        panic = self.buckets.average(now, spec.panic_window)
        desired, reasons = self._wanted(now, stable, panic, ready_pods)
        desired = self._bounded(desired, reasons)
        desired = self._scale_to_zero(now, desired, current, reasons)
        self.last = Decision(desired=desired, current=current, ready=ready_pods, stable=stable, panic=panic,
                             in_panic=self.in_panic, reason="; ".join(reasons), target=spec.target, at=now)  # fmt: skip
        return self.last

    def _wanted(self, now: float, stable: float, panic: float, ready_pods: int) -> tuple[int, list[str]]:
        """Knative's ``autoscaler.Scale``: the rate-limited pods for the stable and panic windows, and panic mode."""
        spec = self.spec
        ready = max(1, ready_pods)
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate)
        want_stable, want_panic = _pods(stable, spec.target), _pods(panic, spec.target)
        desired_stable = min(max(want_stable, max_down), max_up)
        desired_panic = min(max(want_panic, max_down), max_up)
        reasons = [f"stable {stable:.3g} over {spec.stable_window:g}s / target {spec.target:.3g} = {want_stable}"]
        if want_stable > max_up:
            reasons.append(f"scale-up limited to {max_up} (max-scale-up-rate {spec.max_scale_up_rate:g})")
        elif want_stable < max_down:
            reasons.append(f"scale-down limited to {max_down} (max-scale-down-rate {spec.max_scale_down_rate:g})")
        self._track_panic(now, want_panic / ready >= spec.panic_threshold)
        if not self.in_panic:
            return desired_stable, reasons
        desired = max(desired_stable, desired_panic)
        reasons.append(f"panic: {panic:.3g} over {spec.panic_window:g}s wants {want_panic}")
        if desired < self.max_panic_pods:
            reasons.append(f"no scale-down in panic: keeping {self.max_panic_pods}")
        self.max_panic_pods = max(self.max_panic_pods, desired)
        return self.max_panic_pods, reasons

    def _track_panic(self, now: float, over_threshold: bool) -> None:
        if over_threshold:
            self.panic_time = now  # entering, or extending
        elif self.panic_time is not None and now - self.panic_time > self.spec.stable_window:
            self.panic_time = None  # the surge has made its way into the stable window
            self.max_panic_pods = 0

    def _bounded(self, desired: int, reasons: list[str]) -> int:
        spec = self.spec
        if desired < spec.min_scale:
            reasons.append(f"min-scale {spec.min_scale}")
            return spec.min_scale
        if spec.max_scale and desired > spec.max_scale:
            reasons.append(f"max-scale {spec.max_scale}")
            return spec.max_scale
        return desired

    def _scale_to_zero(self, now: float, desired: int, current: int, reasons: list[str]) -> int:
        """Zero only after wanting it, with pods and without demand, for the whole scale-to-zero wait.

        The wait starts when a revision with pods first wants zero, so a pod that just came up (an activator's
        claim, a restart of this stand-in) gets the whole grace before it can go.
        """
        if desired > 0 or current == 0:
            self.zero_since = None
            if desired == 0:
                reasons.append("at zero without demand: stays at zero")
            return desired
        if not self.spec.enable_scale_to_zero:
            reasons.append("enable-scale-to-zero is false: keeping 1")
            return 1
        if self.zero_since is None:
            self.zero_since = now
        idle, wait = now - self.zero_since, self.spec.scale_to_zero_wait
        if idle >= wait:
            reasons.append(f"no demand for {idle:.0f}s (scale-to-zero wait {wait:g}s): to zero")
            return 0
        reasons.append(f"keeping 1 until the scale-to-zero wait ends ({wait - idle:.0f}s of {wait:g}s left)")
        return 1
