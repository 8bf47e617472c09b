import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpointsctl.sizing import (
    MIN_ACTIVATORS,
    Severity,
    Sizing,
    SizingReason,
    SizingSource,
    desired_activators,
)
from localsched.knative import AutoscalerConfig, Revision

INVALID_SPEC = SizingReason.INVALID_SPEC
INVALID_MNS = SizingReason.INVALID_MAX_NODE_SELECTION
INVALID_CONFIG = SizingReason.INVALID_AUTOSCALER_CONFIG
NO_HA = SizingReason.NO_HIGH_AVAILABILITY
NOT_ENOUGH = SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS

CONFIG = AutoscalerConfig()


def size(
    *,
    spec_override: int | None = None,
    tbc: float = CONFIG.target_burst_capacity,
    max_node_selection: int | None = None,
    ready_pods: int = 0,
    per_pod_capacity: float = CONFIG.container_concurrency_target_default,
    activator_capacity: float = CONFIG.activator_capacity,
    eligible: int = 100,
    nodes: int = 100,
) -> Sizing:
    return desired_activators(
        spec_override=spec_override,
        target_burst_capacity=tbc,
        max_node_selection=max_node_selection,
        ready_pods=ready_pods,
        per_pod_capacity=per_pod_capacity,
        activator_capacity=activator_capacity,
        eligible=eligible,
        nodes=nodes,
    )


def per_pod(container_concurrency: int) -> float:
    revision = Revision(namespace="ns", name="rev", container_concurrency=container_concurrency)
    return revision.per_pod_capacity(CONFIG)


@pytest.mark.parametrize(
    ("kwargs", "desired", "effective", "source", "reasons"),
    [
        # capacity: N = max(2, ceil((ready x per-pod + TBC) / activator capacity))
        pytest.param({}, 3, 3, SizingSource.CAPACITY, set(), id="scaled-to-zero-covers-the-default-burst-211"),
        pytest.param({"ready_pods": 3}, 6, 6, SizingSource.CAPACITY, set(), id="ready-pods-add-their-capacity"),
        pytest.param({"tbc": 50}, 2, 2, SizingSource.CAPACITY, set(), id="never-fewer-than-two"),
        pytest.param(
            {"ready_pods": 1, "tbc": 200}, 3, 3, SizingSource.CAPACITY, set(), id="exact-multiple-no-round-up"
        ),
        pytest.param(
            {"ready_pods": 3, "per_pod_capacity": 100 * 0.7, "tbc": 90},
            3,
            3,
            SizingSource.CAPACITY,
            set(),
            id="float-noise-does-not-round-up",
        ),
        pytest.param({"ready_pods": 1, "tbc": 201}, 4, 4, SizingSource.CAPACITY, set(), id="any-excess-rounds-up"),
        pytest.param(
            {"ready_pods": 10, "tbc": 0}, 2, 2, SizingSource.CAPACITY, set(), id="tbc-0-is-two-as-in-knative-kpa"
        ),
        pytest.param(
            {"ready_pods": 2, "per_pod_capacity": per_pod(0)},
            5,
            5,
            SizingSource.CAPACITY,
            set(),
            id="cc-0-counts-the-container-concurrency-target-default",
        ),
        pytest.param(
            {"ready_pods": 2, "per_pod_capacity": per_pod(10)},
            3,
            3,
            SizingSource.CAPACITY,
            set(),
            id="cc-10-counts-ten-per-pod",
        ),
        pytest.param({"activator_capacity": 50}, 5, 5, SizingSource.CAPACITY, set(), id="smaller-activators-need-more"),
        # TBC -1: maxNodeSelection, 1 <= N < nodes
        pytest.param(
            {"tbc": -1, "max_node_selection": 3, "nodes": 10},
            3,
            3,
            SizingSource.MAX_NODE_SELECTION,
            set(),
            id="tbc-minus-1-uses-max-node-selection",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 9, "nodes": 10},
            9,
            9,
            SizingSource.MAX_NODE_SELECTION,
            set(),
            id="tbc-minus-1-allows-nodes-minus-one",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 1, "nodes": 10},
            1,
            1,
            SizingSource.MAX_NODE_SELECTION,
            {NO_HA},
            id="tbc-minus-1-allows-one-with-no-ha-warning",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 10, "nodes": 10},
            9,
            9,
            SizingSource.FALLBACK,
            {INVALID_MNS},
            id="max-node-selection-equal-to-nodes-is-clamped-below",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 0, "nodes": 10},
            2,
            2,
            SizingSource.FALLBACK,
            {INVALID_MNS},
            id="max-node-selection-0-falls-back-to-two",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": None, "nodes": 10},
            2,
            2,
            SizingSource.FALLBACK,
            {INVALID_MNS},
            id="max-node-selection-missing-falls-back-to-two",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 1, "nodes": 1, "eligible": 1},
            1,
            1,
            SizingSource.MAX_NODE_SELECTION,
            {NO_HA},
            id="single-node-allows-one",
        ),
        pytest.param(
            {"tbc": -1, "max_node_selection": 2, "nodes": 1, "eligible": 1},
            1,
            1,
            SizingSource.FALLBACK,
            {INVALID_MNS, NO_HA},
            id="single-node-clamps-two-to-one",
        ),
        # spec override wins, must be >= 1
        pytest.param({"spec_override": 5}, 5, 5, SizingSource.SPEC, set(), id="spec-override-wins"),
        pytest.param(
            {"spec_override": 4, "tbc": -1, "max_node_selection": 2},
            4,
            4,
            SizingSource.SPEC,
            set(),
            id="spec-override-wins-over-max-node-selection",
        ),
        pytest.param({"spec_override": 1}, 1, 1, SizingSource.SPEC, {NO_HA}, id="spec-override-1-warns-no-ha"),
        pytest.param(
            {"spec_override": 0}, 3, 3, SizingSource.CAPACITY, {INVALID_SPEC}, id="spec-override-0-is-invalid"
        ),
        pytest.param(
            {"spec_override": -2, "tbc": -1, "max_node_selection": 3},
            3,
            3,
            SizingSource.MAX_NODE_SELECTION,
            {INVALID_SPEC},
            id="negative-spec-override-is-invalid",
        ),
        # clamps to the eligible activators
        pytest.param(
            {"ready_pods": 3, "eligible": 4}, 6, 4, SizingSource.CAPACITY, {NOT_ENOUGH}, id="clamped-to-eligible"
        ),
        pytest.param(
            {"eligible": 1}, 3, 1, SizingSource.CAPACITY, {NOT_ENOUGH, NO_HA}, id="clamped-to-one-warns-no-ha"
        ),
        pytest.param({"eligible": 0}, 3, 0, SizingSource.CAPACITY, {NOT_ENOUGH}, id="no-eligible-activator"),
        pytest.param({"spec_override": 3, "eligible": 3}, 3, 3, SizingSource.SPEC, set(), id="exactly-enough"),
        # invalid config: a condition and two, never an exception
        pytest.param({"tbc": -5}, 2, 2, SizingSource.FALLBACK, {INVALID_CONFIG}, id="tbc-below-minus-1"),
        pytest.param({"tbc": math.nan}, 2, 2, SizingSource.FALLBACK, {INVALID_CONFIG}, id="tbc-nan"),
        pytest.param(
            {"activator_capacity": 0}, 2, 2, SizingSource.FALLBACK, {INVALID_CONFIG}, id="activator-capacity-0"
        ),
        pytest.param(
            {"per_pod_capacity": math.inf}, 2, 2, SizingSource.FALLBACK, {INVALID_CONFIG}, id="per-pod-capacity-inf"
        ),
    ],
)
def test_number_of_activators(
    kwargs: dict[str, Any],
    desired: int,
    effective: int,
    source: SizingSource,
    reasons: set[SizingReason],
) -> None:
    sizing = size(**kwargs)

    assert (sizing.desired, sizing.effective, sizing.source) == (desired, effective, source)
    assert sizing.reasons == reasons


def test_out_of_range_max_node_selection_names_the_value_and_the_range() -> None:
    sizing = size(tbc=-1, max_node_selection=12, nodes=10)

    (condition,) = sizing.conditions
    assert condition.reason is INVALID_MNS
    assert condition.severity is Severity.ERROR
    assert "maxNodeSelection=12" in condition.message
    assert "1 <= N < 10" in condition.message
    assert not sizing.valid


def test_invalid_spec_override_says_what_is_used_instead() -> None:
    (condition,) = size(spec_override=0).conditions

    assert condition.severity is Severity.ERROR
    assert "got 0" in condition.message
    assert "computed value" in condition.message


def test_warnings_leave_the_sizing_valid() -> None:
    sizing = size(spec_override=1, eligible=1)

    assert sizing.reasons == {NO_HA}
    assert sizing.valid


def test_not_enough_eligible_message_gives_both_numbers() -> None:
    (condition,) = size(ready_pods=3, eligible=4).conditions

    assert "6 activators wanted" in condition.message
    assert "only 4 are eligible" in condition.message


inputs = st.fixed_dictionaries(
    {
        "spec_override": st.none() | st.integers(-5, 50),
        "tbc": st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-1.0, 0.0, 211.0]),
        "max_node_selection": st.none() | st.integers(-5, 50),
        "ready_pods": st.integers(-5, 10_000),
        "per_pod_capacity": st.floats(allow_nan=True, allow_infinity=True),
        "activator_capacity": st.floats(allow_nan=True, allow_infinity=True),
        "eligible": st.integers(0, 2_000),
        "nodes": st.integers(0, 2_000),
    }
)


@given(inputs)
def test_sizing_never_raises_and_stays_within_bounds(kwargs: dict[str, Any]) -> None:
    sizing = size(**kwargs)

    assert sizing.desired >= 1
    assert sizing.effective == min(sizing.desired, kwargs["eligible"])
    assert (NOT_ENOUGH in sizing.reasons) == (sizing.effective < sizing.desired)
    assert (NO_HA in sizing.reasons) == (sizing.effective == 1)
    if sizing.source is SizingSource.CAPACITY and kwargs["spec_override"] is None:
        assert sizing.desired >= MIN_ACTIVATORS
