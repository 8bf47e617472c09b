from typing import Any

import pytest

from endpointsctl import status
from endpointsctl.inventory import ActivatorPod
from endpointsctl.sizing import Sizing, desired_activators
from endpointsctl.subsetting.framework import Activator

Obj = dict[str, Any]


def pod(name: str, zone: str = "zone-a", ready: bool = True) -> ActivatorPod:
    return ActivatorPod(Activator(name, f"10.0.0.{ord(name[-1])}", f"node-{name[-1]}", zone, ready), "ns", "uid")


def sizing(*, eligible: int = 10, override: int | None = None, tbc: float = 211, mns: int | None = 2) -> Sizing:
    return desired_activators(spec_override=override, target_burst_capacity=tbc, max_node_selection=mns,
                              ready_pods=0, per_pod_capacity=100, activator_capacity=100, eligible=eligible,
                              nodes=10)  # fmt: skip


def outcome(**kwargs: Any) -> status.Outcome:
    base: dict[str, Any] = {"generation": 2, "algorithm": "least-loaded",
                            "chosen": [pod("a"), pod("b"), pod("c")], "sizing": sizing()}  # fmt: skip
    return status.Outcome(**{**base, **kwargs})


def conditions(result: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def test_a_healthy_revision_is_ready_and_every_abnormal_condition_is_false() -> None:
    result = status.status("hello", outcome(), None, "t0")
    assert conditions(result) == {
        "Ready": ("True", "Published"),
        "NotEnoughEligibleActivators": ("False", "EnoughEligibleActivators"),
        "NoHighAvailability": ("False", "HighAvailability"),
        "InvalidSpec": ("False", "SpecValid"),
        "InvalidConfiguration": ("False", "ConfigurationValid"),
        "EndpointsPublished": ("True", "Published"),
    }
    assert result["observedGeneration"] == 2
    assert (result["desiredActivators"], result["actualActivators"], result["readyActivators"]) == (3, 3, 3)
    assert [a["name"] for a in result["activators"]] == ["a", "b", "c"]
    assert result["endpointSlice"] == result["service"] == "hello-activationendpoints"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"sizing": sizing(eligible=2), "chosen": [pod("a"), pod("b")]},
                     {"NotEnoughEligibleActivators": ("True", "NotEnoughEligibleActivators")}, id="not-enough"),
        pytest.param({"sizing": sizing(override=1), "chosen": [pod("a")]},
                     {"NoHighAvailability": ("True", "NoHighAvailability")}, id="n-is-one"),
        pytest.param({"sizing": sizing(override=0)}, {"InvalidSpec": ("True", "InvalidSpec")}, id="override-zero"),
        pytest.param({"spec_error": "spec.activators must be a whole number"},
                     {"InvalidSpec": ("True", "InvalidSpec")}, id="spec-not-a-number"),
        pytest.param({"revision_error": "bad annotation", "sizing": None},
                     {"Ready": ("False", "RevisionInvalid"), "InvalidSpec": ("True", "RevisionInvalid"),
                      "EndpointsPublished": ("Unknown", "NotAttempted")}, id="revision-invalid"),
        pytest.param({"sizing": sizing(tbc=-1, mns=50)},
                     {"InvalidConfiguration": ("True", "InvalidMaxNodeSelection")}, id="max-node-selection"),
        pytest.param({"autoscaler_error": "config-autoscaler: bad"},
                     {"InvalidConfiguration": ("True", "InvalidAutoscalerConfig")}, id="config-autoscaler"),
        pytest.param({"chosen": [], "sizing": sizing(eligible=0)},
                     {"Ready": ("False", "NoEligibleActivators")}, id="none-eligible"),
        pytest.param({"conflict": "Service x is not ours"}, {"Ready": ("False", "OutputConflict")}, id="conflict"),
        pytest.param({"endpoints_rejected": "loopback"},
                     {"Ready": ("True", "Published"), "EndpointsPublished": ("False", "AddressesRejected")},
                     id="endpoints-refused-but-slice-published"),
    ],
)  # fmt: skip
def test_each_problem_is_a_condition(kwargs: dict[str, Any], expected: dict[str, tuple[str, str]]) -> None:
    found = conditions(status.status("hello", outcome(**kwargs), None, "t0"))
    assert {kind: found[kind] for kind in expected} == expected


def test_warnings_and_errors_carry_a_severity_and_a_message() -> None:
    result = status.status("hello", outcome(sizing=sizing(override=1), chosen=[pod("a")]), None, "t0")
    no_ha = next(c for c in result["conditions"] if c["type"] == "NoHighAvailability")
    assert no_ha["severity"] == "Warning"
    assert "single activator" in no_ha["message"]


def test_an_unchanged_outcome_gives_an_identical_status_and_transitions_keep_their_time() -> None:
    first = status.status("hello", outcome(), None, "t0")
    again = status.status("hello", outcome(), first, "t1")
    assert again == first  # nothing to write
    degraded = status.status("hello", outcome(sizing=sizing(override=1), chosen=[pod("a")]), first, "t2")
    times = {c["type"]: c["lastTransitionTime"] for c in degraded["conditions"]}
    assert times["NoHighAvailability"] == "t2"
    assert times["Ready"] == "t0"


def test_the_status_holds_no_empty_strings() -> None:
    """The server drops them (and the devcluster's refuses them in custom resources)."""
    result = status.status("hello", outcome(chosen=[pod("a", zone="")], revision_error="x", sizing=None), None, "t0")

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert "" not in strings(result)
    assert "zone" not in result["activators"][0]
