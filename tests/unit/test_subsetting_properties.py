"""Invariants of activator selection over random snapshots (hypothesis)."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from endpointsctl.subsetting.framework import (
    Activator,
    Normalizer,
    Profile,
    RevisionRequest,
    Selection,
    Snapshot,
    select,
    uses_chosen,
)
from endpointsctl.subsetting.registry import SubsettingConfig
from localsched.predicates import node_eligible, node_is_ready

ZONES = ["zone-a", "zone-b", "zone-c", ""]
TAINTS = [
    {"key": "gpu", "value": "yes", "effect": "NoSchedule"},
    {"key": "spot", "effect": "NoExecute"},
    {"key": "soft", "effect": "PreferNoSchedule"},
]
TOLERATIONS = [
    {"key": "gpu", "operator": "Exists"},
    {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
    {"operator": "Exists"},
]
LABELS = {"disktype": ["ssd", "hdd"], "pool": ["gpu", "general"]}
PROFILE = SubsettingConfig().profile()


@st.composite
def nodes(draw: st.DrawFn, name: str) -> dict[str, Any]:
    labels = {key: draw(st.sampled_from(values)) for key, values in LABELS.items() if draw(st.booleans())}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "taints": draw(st.lists(st.sampled_from(TAINTS), max_size=2, unique_by=lambda t: t["key"])),
            "unschedulable": draw(st.booleans()) and draw(st.booleans()),
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if draw(st.integers(0, 5)) else "False"}]},
    }


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, RevisionRequest, int]:
    count = draw(st.integers(0, 14))
    node_names = [f"node-{i}" for i in range(draw(st.integers(1, 8)))]
    node_map = {name: draw(nodes(name)) for name in node_names}
    activators = {}
    for i in range(count):
        name = f"act-{i:02d}"
        node = draw(st.sampled_from([*node_names, "node-missing"]))
        activators[name] = Activator(name, f"10.0.0.{i}", node, draw(st.sampled_from(ZONES)), draw(st.booleans()))
    load = {name: draw(st.integers(0, 30)) for name in activators if draw(st.booleans())}
    current = draw(st.frozensets(st.sampled_from([*activators, "act-gone"]), max_size=5))
    pod_spec: dict[str, Any] = {}
    if draw(st.booleans()):
        pod_spec["nodeSelector"] = {key: draw(st.sampled_from(values)) for key, values in list(LABELS.items())[:1]}
    if draw(st.booleans()):
        pod_spec["tolerations"] = draw(st.lists(st.sampled_from(TOLERATIONS), max_size=2))
    n = draw(st.integers(0, 16))
    return Snapshot(activators, node_map, load), RevisionRequest("ns/rev", pod_spec, current), n


def eligible(snapshot: Snapshot, request: RevisionRequest) -> set[str]:
    """Straight from the predicates, without the framework."""
    result = set()
    for a in snapshot.activators.values():
        node = snapshot.nodes.get(a.node)
        if a.ready and node is not None and node_is_ready(node) and node_eligible(node, request.pod_spec) is None:
            result.add(a.name)
    return result


def reference_select(snapshot: Snapshot, request: RevisionRequest, n: int, profile: Profile) -> tuple[str, ...]:
    """The greedy definition, without pruning or caching: every plugin scores every remaining candidate per pick,
    normalized over the remaining candidates for chosen-dependent plugins and over all feasible ones otherwise."""
    feasible = sorted((snapshot.activators[name] for name in eligible(snapshot, request)), key=lambda a: a.name)

    def scores(plugin: Any, candidates: list[Activator], so_far: tuple[Activator, ...]) -> dict[str, int]:
        raw = {a.name: plugin.score(snapshot, request, a, so_far) for a in candidates}
        return plugin.normalize(raw) if isinstance(plugin, Normalizer) else raw

    static = {a.name: 0 for a in feasible}
    for plugin, weight in profile.scorers:
        if not uses_chosen(plugin):
            for name, value in scores(plugin, feasible, ()).items():
                static[name] += weight * value
    chosen: list[Activator] = []
    while len(chosen) < min(n, len(feasible)):
        remaining = [a for a in feasible if a not in chosen]
        totals = dict(static)
        for plugin, weight in profile.scorers:
            if uses_chosen(plugin):
                for name, value in scores(plugin, remaining, tuple(chosen)).items():
                    totals[name] += weight * value
        chosen.append(min(remaining, key=lambda a: (-totals[a.name], a.name)))
    return tuple(a.name for a in chosen)


def copy_of(snapshot: Snapshot) -> Snapshot:
    return Snapshot(dict(snapshot.activators), dict(snapshot.nodes), dict(snapshot.load))


@settings(max_examples=200)
@given(scenarios())
def test_selection_returns_only_eligible_activators_at_most_n_and_no_duplicates(
    scenario: tuple[Snapshot, RevisionRequest, int],
) -> None:
    snapshot, request, n = scenario
    expected = eligible(snapshot, request)

    selection = select(snapshot, request, n, PROFILE)

    assert set(selection.chosen) <= expected
    assert len(selection.chosen) == min(n, len(expected))
    assert len(set(selection.chosen)) == len(selection.chosen)
    assert selection.eligible == len(expected)
    assert set(selection.rejected) == set(snapshot.activators) - expected


@settings(max_examples=200)
@given(scenarios())
def test_selection_is_deterministic_for_the_same_snapshot(scenario: tuple[Snapshot, RevisionRequest, int]) -> None:
    snapshot, request, n = scenario

    first: Selection = select(snapshot, request, n, PROFILE)

    assert select(snapshot, request, n, PROFILE) == first  # from the filter cache
    assert select(copy_of(snapshot), request, n, PROFILE) == first  # from scratch


@settings(max_examples=200)
@given(scenarios())
def test_selection_equals_the_unpruned_greedy_definition(scenario: tuple[Snapshot, RevisionRequest, int]) -> None:
    snapshot, request, n = scenario

    assert select(snapshot, request, n, PROFILE).chosen == reference_select(snapshot, request, n, PROFILE)


@settings(max_examples=200)
@given(scenarios(), st.sampled_from([{"LeastLoaded": 2, "ZoneSpread": 1}, {"ZoneSpread": 1}, {"LeastLoaded": 1}]))
def test_other_weights_also_equal_the_unpruned_greedy_definition(
    scenario: tuple[Snapshot, RevisionRequest, int], weights: dict[str, int]
) -> None:
    snapshot, request, n = scenario
    profile = SubsettingConfig(weights=weights).profile()

    assert select(snapshot, request, n, profile).chosen == reference_select(snapshot, request, n, profile)


@settings(max_examples=200)
@given(scenarios())
def test_current_activators_that_are_still_eligible_are_kept(scenario: tuple[Snapshot, RevisionRequest, int]) -> None:
    snapshot, request, n = scenario
    keep = request.current & eligible(snapshot, request)

    chosen = set(select(snapshot, request, n, PROFILE).chosen)

    if len(keep) <= n:
        assert keep <= chosen
    else:
        assert chosen <= keep
