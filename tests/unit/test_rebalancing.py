from typing import Any

from endpointsctl.assignments import Assignments
from endpointsctl.rebalancing import fair_share, rebalance_onto
from endpointsctl.subsetting.framework import Activator, RevisionRequest, Snapshot
from endpointsctl.subsetting.registry import SubsettingConfig, default_algorithm

ALGORITHM = default_algorithm(SubsettingConfig())
ZONES = ("zone-a", "zone-b", "zone-c")
POD_SPEC: dict[str, Any] = {"containers": [{"name": "c"}]}


def node(name: str, zone: str, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def cluster(count: int) -> tuple[dict[str, Activator], dict[str, dict[str, Any]]]:
    activators, nodes = {}, {}
    for i in range(count):
        zone = ZONES[i % 3]
        nodes[f"node-{i}"] = node(f"node-{i}", zone)
        activators[f"act-{i:02d}"] = Activator(f"act-{i:02d}", f"10.0.0.{i}", f"node-{i}", zone, True)
    return activators, nodes


def assign_all(assignments: Assignments, snapshot: Snapshot, revisions: int, n: int) -> None:
    for i in range(revisions):
        key = f"ns/rev-{i:03d}"
        request = RevisionRequest(key, POD_SPEC, frozenset(assignments.get(key)))
        assignments.set(key, ALGORITHM.select(snapshot, request, n).chosen)


def request_of(key: str) -> RevisionRequest:
    return RevisionRequest(key, POD_SPEC)


def test_a_new_activator_receives_single_slots_from_its_own_zone_until_the_zone_is_level() -> None:
    activators, nodes = cluster(9)
    assignments = Assignments()
    assign_all(assignments, Snapshot(activators, nodes, assignments.load()), 90, 3)
    activators["act-new"] = Activator("act-new", "10.0.1.1", "node-new", "zone-a", True)
    nodes["node-new"] = node("node-new", "zone-a")
    snapshot = Snapshot(activators, nodes, assignments.load())
    before = {key: frozenset(chosen) for key, chosen in assignments.items()}
    target = fair_share(assignments.load(), activators)

    result = rebalance_onto(assignments, ALGORITHM, snapshot, "act-new", target=target, request_of=request_of)

    assert target == 27  # 270 slots over 10 activators; but every revision has one slot per zone, so zone-a's
    assert assignments.load()["act-new"] == 22  # 90 slots level out over its 4 activators at 22-23 first
    assert len(result.moves) == 22  # churn: one slot of one revision per move, nothing else
    for move in result.moves:
        assert move.added == {"act-new"}
        (donor,) = move.removed
        assert activators[donor].zone == "zone-a"
    unchanged = [key for key, chosen in assignments.items() if frozenset(chosen) == before[key]]
    assert len(unchanged) == 90 - 22
    loads = [assignments.load().get(name, 0) for name in activators if activators[name].zone == "zone-a"]
    assert max(loads) - min(loads) <= 1


def test_after_a_rebalance_a_resync_moves_nothing() -> None:
    activators, nodes = cluster(6)
    assignments = Assignments()
    assign_all(assignments, Snapshot(activators, nodes, assignments.load()), 30, 2)
    activators["act-new"] = Activator("act-new", "10.0.1.1", "node-new", "zone-b", True)
    nodes["node-new"] = node("node-new", "zone-b")
    snapshot = Snapshot(activators, nodes, assignments.load())
    rebalance_onto(assignments, ALGORITHM, snapshot, "act-new", target=fair_share(assignments.load(), activators),
                   request_of=request_of)  # fmt: skip
    settled = dict(assignments.items())
    assign_all(assignments, snapshot, 30, 2)
    assert {k: frozenset(v) for k, v in assignments.items()} == {k: frozenset(v) for k, v in settled.items()}


def test_an_activator_the_revisions_cannot_use_receives_nothing() -> None:
    activators, nodes = cluster(6)
    assignments = Assignments()
    assign_all(assignments, Snapshot(activators, nodes, assignments.load()), 30, 2)
    activators["act-gpu"] = Activator("act-gpu", "10.0.1.1", "node-gpu", "zone-a", True)
    nodes["node-gpu"] = node("node-gpu", "zone-a", [{"key": "gpu", "effect": "NoSchedule"}])
    snapshot = Snapshot(activators, nodes, assignments.load())
    before = dict(assignments.items())
    result = rebalance_onto(assignments, ALGORITHM, snapshot, "act-gpu", target=8, request_of=request_of)
    assert result.moves == ()
    assert result.attempts > 0
    assert dict(assignments.items()) == before


def test_an_unknown_or_unready_newcomer_is_left_alone() -> None:
    activators, nodes = cluster(3)
    assignments = Assignments()
    snapshot = Snapshot(activators, nodes, assignments.load())
    assert rebalance_onto(assignments, ALGORITHM, snapshot, "nobody", target=5, request_of=request_of).attempts == 0


def test_fair_share_is_the_mean_load_rounded_down() -> None:
    assert fair_share({"a": 3, "b": 4}, ["a", "b", "c"]) == 2
    assert fair_share({}, []) == 0


def test_with_one_activator_per_zone_slots_come_from_other_zones_without_losing_zone_spread() -> None:
    activators, nodes = cluster(3)  # one activator per zone, like the devcluster
    assignments = Assignments()
    returning = "act-02"  # zone-c; it was away while the revisions were assigned
    away = {name: a for name, a in activators.items() if name != returning}
    assign_all(assignments, Snapshot(away, nodes, assignments.load()), 12, 2)
    snapshot = Snapshot(activators, nodes, assignments.load())
    before = {key: frozenset(chosen) for key, chosen in assignments.items()}

    result = rebalance_onto(assignments, ALGORITHM, snapshot, returning, target=8, request_of=request_of)

    assert assignments.load()[returning] == len(result.moves) == 8  # 24 slots over 3 activators
    for move in result.moves:
        assert move.added == {returning}
        assert len(move.removed) == 1
        assert len({activators[n].zone for n in move.after}) == 2  # still two zones
    assert sum(frozenset(c) != before[k] for k, c in assignments.items()) == 8


def test_a_move_that_would_shrink_a_revisions_zones_is_not_made() -> None:
    activators, nodes = cluster(3)
    assignments = Assignments()
    assign_all(assignments, Snapshot(activators, nodes, assignments.load()), 6, 3)  # every revision in all 3 zones
    activators["act-new"] = Activator("act-new", "10.0.1.1", "node-new", "zone-a", True)
    nodes["node-new"] = node("node-new", "zone-a")
    snapshot = Snapshot(activators, nodes, assignments.load())
    result = rebalance_onto(assignments, ALGORITHM, snapshot, "act-new", target=4, request_of=request_of)
    for move in result.moves:
        (donor,) = move.removed
        assert activators[donor].zone == "zone-a"  # only zone-a's slot can move to a zone-a activator
    assert len(result.moves) == 3  # zone-a's 6 slots level out over its two activators
