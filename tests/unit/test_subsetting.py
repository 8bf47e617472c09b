import importlib.metadata
import subprocess
import sys
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from endpointsctl.subsetting.framework import (
    Activator,
    PluginError,
    Profile,
    ProfileAlgorithm,
    RevisionRequest,
    Snapshot,
    select,
)
from endpointsctl.subsetting.plugins import (
    ActivatorReady,
    LeastLoaded,
    NodeEligible,
    Stickiness,
    ZoneSpread,
    scheduling_key,
)
from endpointsctl.subsetting.registry import (
    DEFAULT_WEIGHTS,
    ENTRY_POINT_GROUP,
    SubsettingConfig,
    UnknownAlgorithmError,
    default_algorithm,
    load_algorithm,
)

GPU_TAINT = {"key": "gpu", "value": "yes", "effect": "NoSchedule"}
TOLERATE_GPU = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}


def node(
    name: str,
    *,
    ready: bool = True,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"taints": list(taints)},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def activator(name: str, zone: str = "zone-a", *, ready: bool = True, node_name: str | None = None) -> Activator:
    return Activator(name, f"10.0.0.{len(name)}", node_name or f"node-{name}", zone, ready)


def snapshot(
    activators: Iterable[Activator],
    *,
    nodes: Mapping[str, dict[str, Any]] | None = None,
    load: Mapping[str, int] | None = None,
) -> Snapshot:
    by_name = {a.name: a for a in activators}
    all_nodes = {a.node: node(a.node) for a in by_name.values()}
    all_nodes.update(nodes or {})
    return Snapshot(by_name, all_nodes, dict(load or {}))


def request(
    key: str = "ns/rev", *, current: Iterable[str] = (), pod_spec: Mapping[str, Any] | None = None
) -> RevisionRequest:
    return RevisionRequest(key, dict(pod_spec or {}), frozenset(current))


def three_zones(per_zone: int = 2) -> list[Activator]:
    return [activator(f"{zone}-{i}", f"zone-{zone}") for zone in "abc" for i in range(per_zone)]


DEFAULT = default_algorithm(SubsettingConfig())


# -- filters ------------------------------------------------------------------------------------------------------


def test_activator_ready_accepts_a_ready_activator_on_a_ready_node() -> None:
    a = activator("a")

    assert ActivatorReady()(snapshot([a]), request(), a) is None


def test_activator_ready_rejects_an_activator_that_is_not_ready() -> None:
    a = activator("a", ready=False)

    assert ActivatorReady()(snapshot([a]), request(), a) == "ActivatorNotReady"


def test_activator_ready_rejects_an_activator_whose_node_is_not_ready() -> None:
    a = activator("a")

    assert ActivatorReady()(snapshot([a], nodes={a.node: node(a.node, ready=False)}), request(), a) == "NodeNotReady"


def test_activator_ready_rejects_an_activator_whose_node_is_unknown() -> None:
    a = activator("a")
    snap = Snapshot({"a": a}, {}, {})

    assert ActivatorReady()(snap, request(), a) == "NodeNotFound"


def test_node_eligible_rejects_a_node_whose_taint_the_revision_does_not_tolerate() -> None:
    a = activator("a")
    snap = snapshot([a], nodes={a.node: node(a.node, taints=[GPU_TAINT])})

    assert NodeEligible()(snap, request(), a) == "TaintNotTolerated"
    assert NodeEligible()(snap, request(pod_spec={"tolerations": [TOLERATE_GPU]}), a) is None


def test_node_eligible_rejects_a_node_outside_the_revisions_node_selector() -> None:
    a = activator("a")
    snap = snapshot([a], nodes={a.node: node(a.node, labels={"disktype": "hdd"})})

    assert NodeEligible()(snap, request(pod_spec={"nodeSelector": {"disktype": "ssd"}}), a) == "NodeSelectorMismatch"
    assert NodeEligible()(snap, request(pod_spec={"nodeSelector": {"disktype": "hdd"}}), a) is None


def test_selection_reports_each_rejected_activator_with_the_first_failing_reason() -> None:
    ok, tainted, down = activator("ok"), activator("tainted"), activator("down", ready=False)
    snap = snapshot([ok, tainted, down], nodes={tainted.node: node(tainted.node, taints=[GPU_TAINT])})

    selection = DEFAULT.select(snap, request(), 3)

    assert selection.chosen == ("ok",)
    assert selection.eligible == 1
    assert dict(selection.rejected) == {"tainted": "TaintNotTolerated", "down": "ActivatorNotReady"}


def test_scheduling_key_ignores_everything_but_the_scheduling_constraints() -> None:
    one = {"containers": [{"image": "a"}], "nodeSelector": {"x": "1"}, "tolerations": [TOLERATE_GPU]}
    other = {"containers": [{"image": "b"}], "tolerations": [TOLERATE_GPU], "nodeSelector": {"x": "1"}}

    assert scheduling_key(one) == scheduling_key(other)
    assert scheduling_key(one) != scheduling_key({"nodeSelector": {"x": "2"}})
    assert scheduling_key({}) != scheduling_key({"affinity": {"nodeAffinity": {"x": 1}}})


@dataclass(frozen=True)
class CountingFilter:
    calls: list[str] = field(default_factory=list, compare=False)
    with_key: bool = True

    def __call__(self, snapshot: Snapshot, request: RevisionRequest, activator: Activator) -> str | None:
        self.calls.append(activator.name)
        return None

    def cache_key(self, request: RevisionRequest) -> Hashable:
        return scheduling_key(request.pod_spec)


def test_filter_verdicts_are_computed_once_per_snapshot_and_scheduling_shape() -> None:
    counting = CountingFilter()
    profile = Profile([counting], [])
    snap = snapshot(three_zones())

    select(snap, request("ns/one", pod_spec={"containers": [{"image": "one"}]}), 2, profile)
    select(snap, request("ns/two", pod_spec={"containers": [{"image": "two"}]}), 2, profile)
    assert len(counting.calls) == 6
    select(snap, request("ns/three", pod_spec={"nodeSelector": {"x": "y"}}), 2, profile)
    assert len(counting.calls) == 12
    select(snapshot(three_zones()), request("ns/one"), 2, profile)
    assert len(counting.calls) == 18


def test_a_filter_without_a_cache_key_is_asked_every_time() -> None:
    calls: list[str] = []

    def no_key(snapshot: Snapshot, request: RevisionRequest, activator: Activator) -> str | None:
        calls.append(activator.name)
        return "Odd" if activator.name.endswith("1") else None

    snap = snapshot(three_zones())
    first = select(snap, request(), 6, Profile([ActivatorReady(), no_key], []))
    select(snap, request(), 6, Profile([ActivatorReady(), no_key], []))

    assert len(calls) == 12
    assert set(first.rejected) == {"a-1", "b-1", "c-1"}
    assert first.eligible == 3


# -- scorers ------------------------------------------------------------------------------------------------------


def test_least_loaded_normalizes_against_the_busiest_candidate() -> None:
    assert LeastLoaded().normalize({"a": 0, "b": 5, "c": 10}) == {"a": 100, "b": 50, "c": 0}
    assert LeastLoaded().normalize({"a": 30, "b": 31}) == {"a": 3, "b": 0}
    assert LeastLoaded().normalize({"a": 0, "b": 0}) == {"a": 100, "b": 100}


def test_least_loaded_does_not_count_the_revisions_own_slot() -> None:
    a = activator("a")
    snap = snapshot([a], load={"a": 4})

    assert LeastLoaded().score(snap, request(), a, ()) == 4
    assert LeastLoaded().score(snap, request(current=["a"]), a, ()) == 3


def test_selection_prefers_the_least_loaded_activators() -> None:
    activators = [activator(name) for name in "abcd"]
    snap = snapshot(activators, load={"a": 9, "b": 1, "c": 5, "d": 0})

    assert DEFAULT.select(snap, request(), 2).chosen == ("d", "b")


def test_zone_spread_scores_zones_by_how_little_the_selection_uses_them() -> None:
    a1, a2, b1, c1 = activator("a1", "a"), activator("a2", "a"), activator("b1", "b"), activator("c1", "c")
    snap = snapshot([a1, a2, b1, c1])
    spread = ZoneSpread()

    assert spread.score(snap, request(), a1, ()) == 100
    assert [spread.score(snap, request(), x, (a1,)) for x in (a2, b1)] == [0, 100]
    assert [spread.score(snap, request(), x, (a1, a2, b1)) for x in (a1, b1, c1)] == [33, 66, 100]


def test_selection_spreads_over_zones_before_reusing_one() -> None:
    snap = snapshot(three_zones(per_zone=3))

    chosen = DEFAULT.select(snap, request(), 3).chosen

    assert {snap.activators[name].zone for name in chosen} == {"zone-a", "zone-b", "zone-c"}


def test_zone_spread_outweighs_a_small_load_difference() -> None:
    activators = [activator("a1", "a"), activator("a2", "a"), activator("b1", "b")]
    snap = snapshot(activators, load={"a1": 10, "a2": 10, "b1": 11})

    assert set(DEFAULT.select(snap, request(), 2).chosen) == {"a1", "b1"}


def test_stickiness_scores_the_current_activators_100_and_others_0() -> None:
    a, b = activator("a"), activator("b")
    snap = snapshot([a, b])

    assert Stickiness().score(snap, request(current=["a"]), a, ()) == 100
    assert Stickiness().score(snap, request(current=["a"]), b, ()) == 0


def test_unchanged_snapshot_keeps_the_current_assignment_even_when_others_are_idle() -> None:
    activators = three_zones(per_zone=3)
    current = ["a-0", "a-1"]  # same zone, busiest: every other scorer prefers a change
    snap = snapshot(activators, load={"a-0": 50, "a-1": 50})

    assert set(DEFAULT.select(snap, request(current=current), 2).chosen) == set(current)


def test_a_lost_activator_is_replaced_and_the_others_are_kept() -> None:
    activators = three_zones(per_zone=3)
    before = DEFAULT.select(snapshot(activators), request(), 3).chosen
    lost = before[0]
    survivors = [a if a.name != lost else activator(lost, a.zone, ready=False) for a in activators]

    after = DEFAULT.select(snapshot(survivors), request(current=before), 3).chosen

    assert set(before) - set(after) == {lost}
    assert len(after) == 3
    assert {snapshot(survivors).activators[name].zone for name in after} == {"zone-a", "zone-b", "zone-c"}


def test_shrinking_n_keeps_a_subset_of_the_current_assignment() -> None:
    snap = snapshot(three_zones(per_zone=3))
    current = DEFAULT.select(snap, request(), 4).chosen

    assert set(DEFAULT.select(snap, request(current=current), 2).chosen) <= set(current)


def test_ties_are_broken_by_name_and_selection_is_deterministic() -> None:
    activators = [activator(name) for name in ("d", "b", "a", "c")]

    results = {DEFAULT.select(snapshot(activators), request(), 2).chosen for _ in range(3)}

    assert results == {("a", "b")}


def test_selection_returns_no_more_than_n_nor_more_than_eligible() -> None:
    snap = snapshot(three_zones())

    assert len(DEFAULT.select(snap, request(), 4).chosen) == 4
    assert len(DEFAULT.select(snap, request(), 40).chosen) == 6
    zero = DEFAULT.select(snap, request(), 0)
    assert zero.chosen == ()
    assert zero.eligible == 6


def test_nothing_eligible_selects_nothing() -> None:
    snap = snapshot([activator("a", ready=False)])

    selection = DEFAULT.select(snap, request(), 3)

    assert selection.chosen == ()
    assert selection.eligible == 0


@dataclass(frozen=True)
class Constant:
    value: int
    uses_chosen: bool = False

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        return self.value


@pytest.mark.parametrize("uses_chosen", [pytest.param(False, id="static"), pytest.param(True, id="per-pick")])
def test_a_score_outside_0_to_100_is_a_plugin_error(uses_chosen: bool) -> None:
    profile = Profile([], [(Constant(101, uses_chosen), 1)])

    with pytest.raises(PluginError, match="Constant returned 101"):
        select(snapshot(three_zones()), request(), 2, profile)


@dataclass(frozen=True)
class PreferOtherZonesNormalized:
    """A chosen-dependent scorer with normalize: raw = activators chosen in other zones."""

    uses_chosen = True

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        return sum(1 for c in chosen_so_far if c.zone != activator.zone)

    def normalize(self, scores: dict[str, int]) -> dict[str, int]:
        top = max(scores.values(), default=0)
        return {k: 100 * v // top if top else 0 for k, v in scores.items()}


def test_a_chosen_dependent_scorer_with_normalize_sees_each_pick() -> None:
    profile = Profile([ActivatorReady()], [(PreferOtherZonesNormalized(), 1)])
    snap = snapshot(three_zones(per_zone=2))

    chosen = select(snap, request(), 3, profile).chosen

    assert chosen == ("a-0", "b-0", "c-0")


def test_weight_zero_disables_a_scorer() -> None:
    snap = snapshot([activator("a"), activator("b")], load={"a": 5})
    config = SubsettingConfig(weights={"LeastLoaded": 0, "Stickiness": 1})

    assert default_algorithm(config).select(snap, request(), 1).chosen == ("a",)


def test_default_weights_let_stickiness_outweigh_every_other_scorer_together() -> None:
    others = sum(weight for name, weight in DEFAULT_WEIGHTS.items() if name != "Stickiness")

    assert DEFAULT_WEIGHTS["Stickiness"] > others


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"weights": {"Nope": 1}}, "unknown score plugin 'Nope'", id="unknown-scorer"),
        pytest.param({"weights": {"LeastLoaded": -1}}, "weights.LeastLoaded", id="negative-weight"),
        pytest.param({"filters": ("Nope",)}, "unknown filter 'Nope'; available: ActivatorReady", id="unknown-filter"),
    ],
)
def test_config_rejects_unknown_plugins_and_bad_weights_naming_the_key(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SubsettingConfig(**kwargs)


# -- algorithms through entry points ------------------------------------------------------------------------------


def test_the_built_in_algorithm_loads_through_its_entry_point() -> None:
    algorithm = load_algorithm(SubsettingConfig())

    assert isinstance(algorithm, ProfileAlgorithm)
    assert algorithm.select(snapshot(three_zones()), request(), 3).chosen == ("a-0", "b-0", "c-0")


def test_the_entry_point_passes_the_config_to_the_algorithm() -> None:
    algorithm = load_algorithm(SubsettingConfig(filters=("ActivatorReady",)))

    assert isinstance(algorithm, ProfileAlgorithm)
    assert [type(f).__name__ for f in algorithm.profile.filters] == ["ActivatorReady"]


def test_an_unknown_algorithm_names_the_available_ones() -> None:
    with pytest.raises(UnknownAlgorithmError, match=r"unknown algorithm 'random'.*available.*least-loaded"):
        load_algorithm(SubsettingConfig(algorithm="random"))


def test_a_third_party_algorithm_is_found_by_its_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    third_party = importlib.metadata.EntryPoint(
        name="third-party", value="endpointsctl.subsetting.registry:default_algorithm", group=ENTRY_POINT_GROUP
    )
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        found = list(real(**params))
        return [*found, third_party] if params.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    assert isinstance(load_algorithm(SubsettingConfig(algorithm="third-party")), ProfileAlgorithm)


def test_an_entry_point_that_builds_no_algorithm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint(name="broken", value="builtins:repr", group=ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        found = list(real(**params))
        return [*found, broken] if params.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    with pytest.raises(TypeError, match=r"'broken' \(builtins:repr\) has no select\(\) method"):
        load_algorithm(SubsettingConfig(algorithm="broken"))


def test_the_framework_does_not_import_its_plugins() -> None:
    code = (
        "import sys, endpointsctl.subsetting.framework;"
        "print(sorted(m for m in sys.modules if m.startswith('endpointsctl.subsetting.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "['endpointsctl.subsetting.framework']"


@dataclass(frozen=True)
class Table:
    """Scores from a table by activator name."""

    scores: tuple[tuple[str, int], ...]
    uses_chosen: bool

    def score(
        self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen_so_far: tuple[Activator, ...]
    ) -> int:
        return dict(self.scores)[activator.name]


def test_a_candidate_that_can_only_tie_the_best_is_still_examined_and_wins_by_name() -> None:
    # "b" leads on the static score, "a" makes up for it exactly with the per-pick score: a tie, won by name.
    static = Table((("a", 0), ("b", 50), ("c", 0)), uses_chosen=False)
    per_pick = Table((("a", 100), ("b", 50), ("c", 90)), uses_chosen=True)
    snap = snapshot([activator(name) for name in "abc"])

    assert select(snap, request(), 1, Profile([], [(static, 1), (per_pick, 1)])).chosen == ("a",)


def test_a_candidate_that_cannot_reach_the_best_is_not_scored_per_pick() -> None:
    calls: list[str] = []

    @dataclass(frozen=True)
    class Recording:
        uses_chosen = True

        def score(
            self, snapshot: Snapshot, request: RevisionRequest, activator: Activator, chosen: tuple[Activator, ...]
        ) -> int:
            calls.append(activator.name)
            return 100

    static = Table((("a", 100), ("b", 0), ("c", 0)), uses_chosen=False)
    snap = snapshot([activator(name) for name in "abc"])

    assert select(snap, request(), 1, Profile([], [(static, 2), (Recording(), 1)])).chosen == ("a",)
    assert calls == ["a"]
