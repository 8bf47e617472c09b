from typing import Any

import pytest

from endpointsctl.inventory import (
    ActivatorPod,
    NodeFacts,
    activator_change,
    activator_of,
    node_change,
    ready_pods,
    zone_of,
)
from endpointsctl.subsetting.framework import Activator

Obj = dict[str, Any]


def pod(name: str = "activator-a", *, node: str = "node-1", ip: str = "10.0.0.1", ready: bool = True,
        phase: str = "Running", deleting: bool = False) -> Obj:  # fmt: skip
    meta: Obj = {"name": name, "namespace": "localsched-system", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def node(name: str = "node-1", *, zone: str = "zone-a", ready: bool = True, heartbeat: str = "t0", **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone} if zone else {}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": str(ready), "lastHeartbeatTime": heartbeat}]},
    }


ZONES = {"node-1": "zone-a"}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(pod(), Activator("activator-a", "10.0.0.1", "node-1", "zone-a", True), id="ready"),
        pytest.param(pod(ready=False), Activator("activator-a", "10.0.0.1", "node-1", "zone-a", False),
                     id="not-ready"),
        pytest.param(pod(ip=""), Activator("activator-a", "", "node-1", "zone-a", False), id="no-ip-yet"),
        pytest.param(pod(deleting=True), Activator("activator-a", "10.0.0.1", "node-1", "zone-a", False),
                     id="being-deleted"),
        pytest.param(pod(node=""), None, id="not-scheduled"),
        pytest.param(pod(phase="Failed"), None, id="terminated"),
    ],
)  # fmt: skip
def test_an_activator_pod_is_its_ip_node_zone_and_readiness(obj: Obj, expected: Activator | None) -> None:
    found = activator_of(obj, lambda name: ZONES.get(name, ""))
    assert (found.activator if found else None) == expected


def test_the_zone_falls_back_to_the_beta_label() -> None:
    beta = {"metadata": {"labels": {"failure-domain.beta.kubernetes.io/zone": "old"}}}
    assert zone_of(beta) == "old"
    assert zone_of(None) == ""


def test_a_heartbeat_is_no_change_but_a_taint_readiness_or_label_is() -> None:
    base = NodeFacts.of(node())
    assert NodeFacts.of(node(heartbeat="t1")) == base
    assert NodeFacts.of(node(taints=[{"key": "k", "effect": "NoSchedule"}])) != base
    assert NodeFacts.of(node(ready=False)) != base
    assert NodeFacts.of(node(zone="zone-b")) != base
    assert NodeFacts.of(node(unschedulable=True)) != base


def test_ready_pods_counts_distinct_ready_addresses_over_all_slices() -> None:
    def ep(address: str, ready: bool) -> Obj:
        return {"addresses": [address], "conditions": {"ready": ready}}

    slices = [
        {"endpoints": [ep("10.1.0.1", True), ep("10.1.0.2", False)]},
        {"endpoints": [ep("10.1.0.1", True), ep("10.1.0.3", True)]},  # .1 in two slices during a move
    ]
    assert ready_pods(slices) == 2
    assert ready_pods([]) == 0


SERVES = {"activator-a": frozenset({"ns/r1", "ns/r2"}), "activator-b": frozenset({"ns/r3"})}


def revisions_of(name: str) -> frozenset[str]:
    return SERVES.get(name, frozenset())


def record(name: str = "activator-a", *, ready: bool = True, ip: str = "10.0.0.1") -> ActivatorPod:
    return ActivatorPod(Activator(name, ip, "node-1", "zone-a", ready), "localsched-system", "uid")


@pytest.mark.parametrize(
    ("old", "new", "revisions", "grew"),
    [
        pytest.param(record(), record(), set(), False, id="unchanged"),
        pytest.param(record(), record(ready=False), {"ns/r1", "ns/r2"}, False, id="not-ready-its-revisions"),
        pytest.param(record(), None, {"ns/r1", "ns/r2"}, False, id="deleted-its-revisions"),
        pytest.param(record(), record(ip="10.0.0.9"), {"ns/r1", "ns/r2"}, False, id="new-ip-its-revisions"),
        pytest.param(None, record(), set(), True, id="new-and-ready-capacity-grew"),
        pytest.param(None, record(ready=False), set(), False, id="new-but-not-ready"),
        pytest.param(record(ready=False), record(), {"ns/r1", "ns/r2"}, True, id="ready-again"),
    ],
)
def test_an_activator_change_recomputes_only_what_it_served(
    old: ActivatorPod | None, new: ActivatorPod | None, revisions: set[str], grew: bool
) -> None:
    change = activator_change(old, new, revisions_of)
    assert change.revisions == revisions
    assert change.capacity_grew is grew


def test_a_node_change_recomputes_the_revisions_of_every_activator_on_it() -> None:
    old, new = NodeFacts.of(node()), NodeFacts.of(node(taints=[{"key": "k", "effect": "NoSchedule"}]))
    change = node_change(old, new, ["activator-a", "activator-b"], revisions_of)
    assert change.revisions == {"ns/r1", "ns/r2", "ns/r3"}
    assert not change.node_set_changed
    assert node_change(old, old, ["activator-a"], revisions_of).revisions == frozenset()


def test_a_node_appearing_or_going_changes_the_node_set() -> None:
    facts = NodeFacts.of(node())
    assert node_change(None, facts, [], revisions_of).node_set_changed
    gone = node_change(facts, None, ["activator-b"], revisions_of)
    assert gone.node_set_changed
    assert gone.revisions == {"ns/r3"}
    assert not gone.capacity_grew
