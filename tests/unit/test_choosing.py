from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpointsctl.choosing import Size, choose
from endpointsctl.sizing import Sizing, SizingReason, desired_activators
from endpointsctl.subsetting.framework import Activator, RevisionRequest, Selection, Snapshot
from endpointsctl.subsetting.registry import SubsettingConfig, default_algorithm

NAMES = ("a", "b", "c", "d", "e")
REQUEST = RevisionRequest("ns/rev", {"containers": [{"name": "c"}]})


def node(name: str, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def snapshot(names: tuple[str, ...] = NAMES, *, tainted: tuple[str, ...] = ()) -> Snapshot:
    activators = {n: Activator(n, f"10.0.0.{i}", f"node-{n}", "zone-a", True) for i, n in enumerate(names)}
    taint = [{"key": "gpu", "effect": "NoSchedule"}]
    nodes = {f"node-{n}": node(f"node-{n}", taint if n in tainted else None) for n in names}
    return Snapshot(activators, nodes)


def sized(desired: int, asked: list[int] | None = None) -> Size:
    """A size function with a fixed N (the spec override), recording the eligible counts it is asked about."""

    def size(eligible: int) -> Sizing:
        if asked is not None:
            asked.append(eligible)
        return desired_activators(spec_override=desired, target_burst_capacity=200, max_node_selection=None,
                                  ready_pods=0, per_pod_capacity=100, activator_capacity=100, eligible=eligible,
                                  nodes=len(NAMES))  # fmt: skip

    return size


@dataclass
class Scripted:
    """An algorithm (a third party's, say) that answers with a fixed selection and records what it was asked."""

    chosen: tuple[str, ...]
    eligible: int
    asked: list[int] = field(default_factory=list)

    def select(self, snapshot: Snapshot, request: RevisionRequest, n: int) -> Selection:
        self.asked.append(n)
        return Selection(self.chosen, self.eligible, {})


@pytest.mark.parametrize(
    ("returned", "eligible", "desired", "chosen", "effective"),
    [
        pytest.param(("c", "a", "e"), 5, 3, ("c", "a", "e"), 3, id="a-full-choice-is-kept-in-pick-order"),
        pytest.param(("a", "b"), 2, 3, ("a", "b"), 2, id="fewer-eligible-lowers-effective-not-desired"),
        pytest.param(("a", "b", "c", "d"), 5, 3, ("a", "b", "c"), 3, id="more-than-desired-is-cut-to-the-first-n"),
        pytest.param(("a", "a", "b", "c"), 5, 3, ("a", "b", "c"), 3, id="duplicates-are-dropped-before-cutting"),
        pytest.param(("zz", "a", "b"), 5, 2, ("a", "b"), 2, id="activators-not-in-the-snapshot-are-dropped"),
        pytest.param((), 0, 3, (), 0, id="nothing-eligible-chooses-nothing"),
    ],
)
def test_the_algorithm_is_trusted_with_the_choice_not_with_the_bounds(
    returned: tuple[str, ...], eligible: int, desired: int, chosen: tuple[str, ...], effective: int
) -> None:
    choice = choose(Scripted(returned, eligible), snapshot(), REQUEST, sized(desired))

    assert choice.chosen == chosen
    assert choice.sizing.desired == desired
    assert choice.sizing.effective == effective


def test_n_is_sized_with_every_activator_then_again_with_those_that_passed_the_filters() -> None:
    algorithm, asked = Scripted(("a", "b"), 2), []

    choice = choose(algorithm, snapshot(), REQUEST, sized(3, asked))

    assert asked == [len(NAMES), 2]
    assert algorithm.asked == [3]
    assert SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS in choice.sizing.reasons


def test_with_the_built_in_algorithm_filtered_activators_lower_only_the_effective_n() -> None:
    algorithm = default_algorithm(SubsettingConfig())

    choice = choose(algorithm, snapshot(tainted=("a", "b", "c")), REQUEST, sized(3))

    assert choice.chosen == ("d", "e")
    assert (choice.sizing.desired, choice.sizing.effective) == (3, 2)
    assert SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS in choice.sizing.reasons


@given(
    returned=st.lists(st.sampled_from((*NAMES, "unknown", "gone")), max_size=10),
    eligible=st.integers(0, len(NAMES)),
    desired=st.integers(1, 6),
)
def test_the_choice_is_known_activators_without_duplicates_and_never_more_than_desired(
    returned: list[str], eligible: int, desired: int
) -> None:
    choice = choose(Scripted(tuple(returned), eligible), snapshot(), REQUEST, sized(desired))

    assert set(choice.chosen) <= set(NAMES)
    assert len(set(choice.chosen)) == len(choice.chosen)
    assert len(choice.chosen) <= choice.sizing.desired == desired
