"""The KPA stand-in's decisions against hand-computed cases: config-autoscaler and annotations as Knative reads them,
the per-second windows, panic mode, the rate limits, min/max-scale and the scale-to-zero grace. Time is passed in."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.kpa import Buckets, Config, Decider, DeciderSpec, should_poke, stat_value
from localsched.knative import AutoscalerConfigError, RevisionSpecError
from localsched.stats import Stat

WINDOW = "autoscaling.knative.dev/window"
TARGET = "autoscaling.knative.dev/target"
UTILIZATION = "autoscaling.knative.dev/target-utilization-percentage"
PANIC_WINDOW = "autoscaling.knative.dev/panic-window-percentage"
PANIC_THRESHOLD = "autoscaling.knative.dev/panic-threshold-percentage"
PANIC_THRESHOLD_LEGACY = "autoscaling.knative.dev/panicThresholdPercentage"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE_LEGACY = "autoscaling.knative.dev/maxScale"
INITIAL_SCALE = "autoscaling.knative.dev/initial-scale"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"


def spec(**changes: Any) -> DeciderSpec:
    """Knative's defaults with a target of 10 per pod (round numbers), changed as asked."""
    return DeciderSpec(**{"target": 10.0, "total": 10.0, **changes})


def feed(decider: Decider, start: int, seconds: int, value: float) -> None:
    """One stat a second, as one activator sends them, from ``start`` on."""
    for second in range(start, start + seconds):
        decider.record(second + 0.5, value)


# -- config-autoscaler -------------------------------------------------------------------------------------------


def test_a_missing_configmap_or_key_gives_knatives_defaults_and_unknown_keys_are_ignored() -> None:
    config = Config.from_configmap({"target-burst-capacity": "211", "activator-capacity": "100"})
    assert config == Config.from_configmap(None) == Config()
    assert (config.container_concurrency_target_percentage, config.container_concurrency_target_default) == (70, 100)
    assert (config.stable_window, config.panic_window_percentage, config.panic_threshold_percentage) == (60, 10, 200)
    assert (config.max_scale_up_rate, config.max_scale_down_rate) == (1000, 2)
    assert (config.scale_to_zero_grace_period, config.scale_to_zero_pod_retention_period) == (30, 0)
    assert (config.enable_scale_to_zero, config.initial_scale, config.allow_zero_initial_scale) == (True, 1, False)
    assert (config.min_scale, config.max_scale) == (0, 0)


def test_config_values_are_read_as_knative_reads_them() -> None:
    config = Config.from_configmap({
        "stable-window": "1m30s", "scale-to-zero-grace-period": "6s", "scale-to-zero-pod-retention-period": "1m",
        "container-concurrency-target-percentage": "0.5",  # a legacy fraction: 50%
        "enable-scale-to-zero": "false", "initial-scale": "0", "allow-zero-initial-scale": "true",
        "max-scale-up-rate": "10.5", "min-scale": "1", "max-scale": "4",
    })  # fmt: skip
    assert (config.stable_window, config.scale_to_zero_grace_period) == (90, 6)
    assert config.scale_to_zero_pod_retention_period == 60
    assert config.container_concurrency_target_percentage == 50
    assert (config.enable_scale_to_zero, config.initial_scale, config.allow_zero_initial_scale) == (False, 0, True)
    assert (config.max_scale_up_rate, config.min_scale, config.max_scale) == (10.5, 1, 4)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"stable-window": "60"}, "stable-window", id="a-duration-needs-a-unit"),
        pytest.param({"stable-window": "5s"}, "stable-window", id="stable-window-below-6s"),
        pytest.param({"stable-window": "2h"}, "stable-window", id="stable-window-above-1h"),
        pytest.param({"stable-window": "6500ms"}, "stable-window", id="stable-window-in-whole-seconds"),
        pytest.param({"panic-window-percentage": "0.5"}, "panic-window-percentage", id="panic-window-below-1"),
        pytest.param({"panic-threshold-percentage": "100"}, "panic-threshold-percentage", id="panic-threshold"),
        pytest.param({"max-scale-up-rate": "1"}, "max-scale-up-rate", id="scale-up-rate-must-exceed-1"),
        pytest.param({"max-scale-down-rate": "one"}, "max-scale-down-rate", id="scale-down-rate-not-a-number"),
        pytest.param({"container-concurrency-target-percentage": "101"}, "container-concurrency-target-percentage",
                     id="target-percentage-above-100"),
        pytest.param({"container-concurrency-target-default": "0"}, "container-concurrency-target-default",
                     id="target-default-zero"),
        pytest.param({"enable-scale-to-zero": "yes"}, "enable-scale-to-zero", id="not-a-boolean"),
        pytest.param({"scale-to-zero-grace-period": "0s"}, "scale-to-zero-grace-period", id="grace-must-be-positive"),
        pytest.param({"scale-to-zero-pod-retention-period": "-1s"}, "scale-to-zero-pod-retention-period",
                     id="negative-retention"),
        pytest.param({"initial-scale": "0"}, "initial-scale", id="zero-initial-scale-not-allowed"),
        pytest.param({"initial-scale": "-1", "allow-zero-initial-scale": "true"}, "initial-scale", id="negative"),
        pytest.param({"min-scale": "3", "max-scale": "2"}, "min-scale", id="min-above-max"),
    ],
)  # fmt: skip
def test_an_invalid_config_value_raises_naming_the_key(data: dict[str, str], key: str) -> None:
    with pytest.raises(AutoscalerConfigError) as caught:
        Config.from_configmap(data)
    assert caught.value.key == key
    assert key in str(caught.value)


# -- one revision's spec --------------------------------------------------------------------------------------------


def test_the_default_spec_is_knatives_default_target_and_windows() -> None:
    default = DeciderSpec.from_config(Config())
    assert default == DeciderSpec()
    assert (default.target, default.stable_window, default.panic_window, default.panic_threshold) == (70, 60, 6, 2.0)


@pytest.mark.parametrize(
    ("container_concurrency", "annotations", "target"),
    [
        pytest.param(0, {}, 70.0, id="default-100-at-70%"),
        pytest.param(10, {}, 7.0, id="containerConcurrency-at-70%"),
        pytest.param(0, {TARGET: "50"}, 35.0, id="target-annotation-at-70%"),
        pytest.param(10, {TARGET: "50"}, 7.0, id="target-annotation-capped-by-containerConcurrency"),
        pytest.param(0, {UTILIZATION: "50"}, 50.0, id="utilization-annotation"),
        pytest.param(4, {TARGET: "2", UTILIZATION: "100"}, 2.0, id="both"),
    ],
)
def test_the_target_per_pod_follows_knatives_resolve_metric_target(
    container_concurrency: int, annotations: dict[str, str], target: float
) -> None:
    resolved = DeciderSpec.from_config(Config(), container_concurrency=container_concurrency, annotations=annotations)
    assert resolved.target == pytest.approx(target)


def test_annotations_override_the_config_and_the_panic_window_is_a_share_of_the_stable_window() -> None:
    config = Config(min_scale=1, max_scale=9, scale_to_zero_pod_retention_period=5)
    resolved = DeciderSpec.from_config(config, annotations={
        WINDOW: "20s", PANIC_WINDOW: "25", PANIC_THRESHOLD_LEGACY: "300", MIN_SCALE: "2", MAX_SCALE_LEGACY: "3",
        RETENTION: "1m",
    })  # fmt: skip
    assert (resolved.stable_window, resolved.panic_window, resolved.panic_threshold) == (20, 5, 3.0)
    assert (resolved.min_scale, resolved.max_scale, resolved.scale_to_zero_pod_retention_period) == (2, 3, 60)
    assert resolved.scale_to_zero_wait == 60  # the longer of the grace (30 s) and the last pod's retention
    inherited = DeciderSpec.from_config(config, annotations={WINDOW: "6s"})
    assert (inherited.min_scale, inherited.max_scale, inherited.panic_window) == (1, 9, 1)  # 0.6 s: one bucket


@pytest.mark.parametrize(
    ("annotations", "key"),
    [
        pytest.param({WINDOW: "5s"}, WINDOW, id="window-below-6s"),
        pytest.param({WINDOW: "6500ms"}, WINDOW, id="window-in-whole-seconds"),
        pytest.param({WINDOW: "soon"}, WINDOW, id="window-not-a-duration"),
        pytest.param({PANIC_WINDOW: "101"}, PANIC_WINDOW, id="panic-window-above-100"),
        pytest.param({PANIC_THRESHOLD: "100"}, PANIC_THRESHOLD, id="panic-threshold-below-110"),
        pytest.param({UTILIZATION: "0.5"}, UTILIZATION, id="utilization-below-1"),
        pytest.param({TARGET: "0.001"}, TARGET, id="target-below-0.01"),
        pytest.param({RETENTION: "2h"}, RETENTION, id="retention-above-1h"),
        pytest.param({INITIAL_SCALE: "0"}, INITIAL_SCALE, id="zero-initial-scale-not-allowed-by-the-config"),
        pytest.param({MIN_SCALE: "3", MAX_SCALE_LEGACY: "2"}, MIN_SCALE, id="min-above-max"),
        pytest.param({PANIC_THRESHOLD: "200", PANIC_THRESHOLD_LEGACY: "300"}, PANIC_THRESHOLD, id="spellings-conflict"),
    ],
)  # fmt: skip
def test_an_annotation_knative_would_reject_raises_naming_it(annotations: dict[str, str], key: str) -> None:
    with pytest.raises(RevisionSpecError) as caught:
        DeciderSpec.from_config(Config(), annotations=annotations)
    assert caught.value.key == key


def test_a_zero_initial_scale_is_accepted_where_the_config_allows_it() -> None:
    config = Config.from_configmap({"initial-scale": "0", "allow-zero-initial-scale": "true"})
    assert DeciderSpec.from_config(config, annotations={INITIAL_SCALE: "0"}).initial_scale == 0


def test_a_revision_object_gives_its_annotations_and_container_concurrency() -> None:
    revision: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"namespace": "demo", "name": "hello-00001", "annotations": {MIN_SCALE: "1", WINDOW: "10s"}},
        "spec": {"containerConcurrency": 4, "containers": [{"image": "hello"}]},
    }
    resolved = DeciderSpec.from_revision(revision, Config())
    assert (resolved.target, resolved.total, resolved.min_scale, resolved.stable_window) == (2.8, 4, 1, 10)
    revision["spec"]["containerConcurrency"] = -1
    with pytest.raises(RevisionSpecError, match="containerConcurrency"):
        DeciderSpec.from_revision(revision, Config())


# -- the per-second buckets -------------------------------------------------------------------------------------------


def test_a_fresh_revisions_first_stat_counts_in_full_and_empty_seconds_then_count_as_zero() -> None:
    buckets = Buckets()
    buckets.record(100.2, 6.0, keep=60)
    assert buckets.average(100.9, 60) == 6.0  # one second of history: 6 / 1
    assert buckets.average(102.0, 60) == 2.0  # seconds 100, 101, 102: 6 / 3


def test_stats_of_one_second_add_up_and_stats_older_than_the_window_are_forgotten() -> None:
    buckets = Buckets()
    for second in range(60):
        buckets.record(second, 3.0, keep=60)
        buckets.record(second + 0.9, 7.0, keep=60)  # a second activator, same second
    assert buckets.average(59, 60) == 10.0
    assert buckets.average(59, 6) == 10.0
    assert buckets.average(89, 60) == 5.0  # seconds 30..59 still in the window, 60..89 empty: 300 / 60
    buckets.prune(119, keep=60)
    assert len(buckets) == 0
    buckets.record(200, 4.0, keep=60)  # a window went by without stats: the history starts again
    assert buckets.average(200, 60) == 4.0


# -- deciding ------------------------------------------------------------------------------------------------------


def test_the_first_stat_from_zero_pokes_and_gives_one_pod() -> None:
    stat = Stat(pod_name="activator-a", average_concurrent_requests=1.0, request_count=1)
    assert should_poke(stat, current_scale=0)
    assert not should_poke(stat, current_scale=1)
    assert not should_poke(Stat(pod_name="activator-a"), current_scale=0)  # "nothing" wakes nobody
    decider = Decider(DeciderSpec())
    decider.record(100.4, stat_value(stat))
    decision = decider.decide(100.4, ready_pods=0, current=0)
    assert (decision.desired, decision.stable, decision.panic, decision.in_panic) == (1, 1.0, 1.0, False)


def test_what_a_proxy_already_counted_is_not_counted_again() -> None:
    stat = Stat(pod_name="pod", average_concurrent_requests=5.0, average_proxied_concurrent_requests=2.0)
    assert stat_value(stat) == 3.0


def test_a_steady_load_gets_stable_over_target_pods() -> None:
    decider = Decider(spec())
    feed(decider, 0, 60, 25.0)
    decision = decider.decide(59.5, ready_pods=3, current=3)
    assert (decision.desired, decision.stable, decision.in_panic) == (3, 25.0, False)  # ceil(25 / 10)
    assert "stable 25" in decision.reason


def test_a_burst_enters_panic_and_panic_never_scales_down_until_a_stable_window_passes() -> None:
    decider = Decider(spec())
    decider.record(0.5, 35.0)
    burst = decider.decide(0.5, ready_pods=1, current=1)
    assert (burst.desired, burst.in_panic) == (4, True)  # ceil(35 / 10) = 4 pods, and 4 / 1 ready >= 200%
    calm = decider.decide(10, ready_pods=4, current=4)
    # The stable window wants ceil((35 / 11) / 10) = 1, the scale-down rate allows 4 / 2 = 2, panic keeps 4.
    assert (calm.desired, calm.in_panic, calm.panic) == (4, True, 0.0)
    assert "no scale-down in panic" in calm.reason
    still = decider.decide(60, ready_pods=4, current=4)  # 60 s after the last time over the threshold: not yet
    assert (still.desired, still.in_panic) == (4, True)
    after = decider.decide(60.5 + 0.6, ready_pods=4, current=4)
    assert (after.desired, after.in_panic) == (2, False)  # out of panic: the scale-down rate's 4 / 2


def test_crossing_the_threshold_again_extends_panic() -> None:
    decider = Decider(spec())
    decider.record(0.5, 35.0)
    assert decider.decide(0.5, ready_pods=1, current=1).in_panic
    feed(decider, 25, 6, 80.0)  # the panic window (6 s) averages 80: 8 pods, 200% of the 4 ready ones
    again = decider.decide(30.5, ready_pods=4, current=4)
    assert (again.desired, again.panic, again.in_panic) == (8, 80.0, True)
    assert decider.decide(70, ready_pods=8, current=8).in_panic  # 30.5 + 60 is the new end of panic
    assert not decider.decide(91, ready_pods=8, current=8).in_panic


def test_scale_down_is_limited_to_the_ready_pods_over_the_scale_down_rate() -> None:
    decider = Decider(spec())
    decider.record(0.5, 10.0)
    first = decider.decide(70, ready_pods=10, current=10)  # the stat aged out: the load wants 0
    assert first.desired == 5
    assert "scale-down limited to 5" in first.reason
    assert decider.decide(72, ready_pods=5, current=5).desired == 2
    assert decider.decide(74, ready_pods=2, current=2).desired == 1
    assert decider.decide(76, ready_pods=1, current=1).desired == 1  # floor(1 / 2) = 0, but the grace holds one


def test_scale_up_is_limited_to_the_scale_up_rate_times_the_ready_pods() -> None:
    decider = Decider(spec(max_scale_up_rate=2.0))
    decider.record(0.5, 100.0)
    decision = decider.decide(0.5, ready_pods=1, current=1)
    assert decision.desired == 2  # wants 10, ceil(2 x 1) allowed
    assert "scale-up limited to 2" in decision.reason


def test_zero_only_after_the_grace_period_without_demand() -> None:
    decider = Decider(spec())
    decider.record(0.5, 5.0)
    assert decider.decide(59, ready_pods=1, current=1).desired == 1
    idle = decider.decide(60.5, ready_pods=1, current=1)  # the stat left the stable window: the load wants 0
    assert (idle.desired, idle.stable) == (1, 0.0)
    assert "scale-to-zero wait" in idle.reason
    assert decider.decide(90.4, ready_pods=1, current=1).desired == 1
    gone = decider.decide(90.5, ready_pods=1, current=1)
    assert gone.desired == 0
    assert "to zero" in gone.reason


def test_demand_restarts_the_grace_and_the_retention_period_can_lengthen_it() -> None:
    decider = Decider(spec(scale_to_zero_pod_retention_period=45.0))
    decider.record(0.5, 5.0)
    assert decider.decide(60.5, ready_pods=1, current=1).desired == 1  # the wait starts
    decider.record(70.5, 1.0)
    assert decider.decide(130.5, ready_pods=1, current=1).desired == 1  # wants 0 again: a fresh wait from here
    assert decider.decide(175.4, ready_pods=1, current=1).desired == 1
    assert decider.decide(175.5, ready_pods=1, current=1).desired == 0  # 45 s, the longer of grace and retention


def test_a_revision_at_zero_without_demand_stays_there_and_its_wait_starts_only_with_a_pod() -> None:
    decider = Decider(spec())
    at_zero = decider.decide(100, ready_pods=0, current=0)
    assert at_zero.desired == 0
    assert "stays at zero" in at_zero.reason
    claimed = decider.decide(500, ready_pods=0, current=1)  # an activator claimed a replica: a whole grace for it
    assert claimed.desired == 1
    assert decider.decide(529, ready_pods=1, current=1).desired == 1
    assert decider.decide(530, ready_pods=1, current=1).desired == 0


def test_without_scale_to_zero_the_last_pod_stays() -> None:
    decider = Decider(spec(enable_scale_to_zero=False))
    assert decider.decide(1000, ready_pods=1, current=1).desired == 1
    assert "enable-scale-to-zero is false" in decider.decide(2000, ready_pods=1, current=1).reason


def test_min_and_max_scale_bound_the_decision() -> None:
    idle = Decider(spec(min_scale=2))
    decision = idle.decide(100, ready_pods=0, current=0)
    assert decision.desired == 2
    assert "min-scale 2" in decision.reason
    busy = Decider(spec(max_scale=3))
    busy.record(0.5, 100.0)
    decision = busy.decide(0.5, ready_pods=3, current=3)
    assert decision.desired == 3  # wants 10
    assert "max-scale 3" in decision.reason


def test_a_decider_made_for_a_revision_with_pods_starts_in_panic_at_that_count() -> None:
    decider = Decider(spec(), now=0.0, ready_pods=4)  # a restarted autoscaler has no history yet
    held = decider.decide(30, ready_pods=4, current=4)
    assert (held.desired, held.in_panic) == (4, True)
    released = decider.decide(61, ready_pods=4, current=4)
    assert (released.desired, released.in_panic) == (2, False)


def test_a_new_spec_keeps_the_history() -> None:
    decider = Decider(spec())
    decider.record(0.5, 30.0)
    decider.update(spec(target=5.0, total=5.0))
    assert decider.decide(0.5, ready_pods=6, current=6).desired == 6
