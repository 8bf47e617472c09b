from typing import Any

from endpointsctl.observing import ClusterView
from localsched.kube.watching import Event

Obj = dict[str, Any]
SERVES = {"activator-a": frozenset({"ns/r1", "ns/r2"}), "activator-b": frozenset({"ns/r3"})}


def revisions_of(name: str) -> frozenset[str]:
    return SERVES.get(name, frozenset())


def node(name: str, *, zone: str = "zone-a", heartbeat: str = "t0", taints: list[Obj] | None = None) -> Obj:
    ready = {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}
    return {"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"taints": taints or []}, "status": {"conditions": [ready]}}  # fmt: skip


def pod(name: str, node_name: str, *, ready: bool = True) -> Obj:
    return {"metadata": {"name": name, "namespace": "localsched-system", "uid": f"uid-{name}"},
            "spec": {"nodeName": node_name},
            "status": {"phase": "Running", "podIP": f"10.0.0.{name[-1]}",
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}  # fmt: skip


def view_with_two_activators() -> ClusterView:
    view = ClusterView()
    view.node_event(Event("ADDED", node("node-1")), revisions_of)
    view.activator_event(Event("ADDED", pod("activator-a", "node-1")), revisions_of)
    view.activator_event(Event("ADDED", pod("activator-b", "node-1")), revisions_of)
    return view


def test_activators_take_the_zone_of_their_node() -> None:
    view = view_with_two_activators()
    assert view.activators["activator-a"].activator.zone == "zone-a"
    assert view.ready_activators() == ["activator-a", "activator-b"]


def test_a_heartbeat_changes_nothing_and_keeps_the_snapshot() -> None:
    view = view_with_two_activators()
    load: dict[str, int] = {}
    snapshot = view.snapshot(load)
    assert view.node_event(Event("MODIFIED", node("node-1", heartbeat="t1")), revisions_of) == []
    assert view.snapshot(load) is snapshot


def test_a_taint_reports_the_revisions_of_every_activator_on_the_node_and_renews_the_snapshot() -> None:
    view = view_with_two_activators()
    load: dict[str, int] = {}
    snapshot = view.snapshot(load)
    taint = {"key": "k", "effect": "NoSchedule"}
    [(change, activator)] = view.node_event(Event("MODIFIED", node("node-1", taints=[taint])), revisions_of)
    assert activator is None
    assert change.revisions == {"ns/r1", "ns/r2", "ns/r3"}
    assert view.snapshot(load) is not snapshot
    assert view.snapshot(load).nodes["node-1"]["spec"]["taints"] == [taint]


def test_a_zone_relabel_moves_the_activators_on_the_node() -> None:
    view = view_with_two_activators()
    changes = view.node_event(Event("MODIFIED", node("node-1", zone="zone-b")), revisions_of)
    assert [activator for _, activator in changes] == [None, "activator-a", "activator-b"]
    assert view.activators["activator-b"].activator.zone == "zone-b"


def test_an_activator_going_unready_reports_its_revisions_once() -> None:
    view = view_with_two_activators()
    change = view.activator_event(Event("MODIFIED", pod("activator-a", "node-1", ready=False)), revisions_of)
    assert change is not None
    assert change.revisions == {"ns/r1", "ns/r2"}
    assert view.activator_event(Event("MODIFIED", pod("activator-a", "node-1", ready=False)), revisions_of) is None
    assert view.ready_activators() == ["activator-b"]


def test_a_new_load_view_gets_a_new_snapshot() -> None:
    view = view_with_two_activators()
    first: dict[str, int] = {}
    assert view.snapshot(first) is view.snapshot(first)
    assert view.snapshot({}) is not view.snapshot(first)


def test_an_invalid_config_autoscaler_keeps_the_last_valid_configuration_and_reports_it() -> None:
    view = ClusterView()

    def configmap(data: dict[str, str]) -> Event:
        return Event("MODIFIED", {"metadata": {"name": "config-autoscaler"}, "data": data})

    assert view.autoscaler_event(configmap({"activator-capacity": "200"}))
    assert view.autoscaler.activator_capacity == 200
    assert not view.autoscaler_event(configmap({"activator-capacity": "200"}))
    assert view.autoscaler_event(configmap({"activator-capacity": "zero"}))
    assert view.autoscaler.activator_capacity == 200
    assert "activator-capacity" in (view.autoscaler_error or "")
    assert view.autoscaler_event(Event("DELETED", {"metadata": {"name": "config-autoscaler"}}))
    assert (view.autoscaler.activator_capacity, view.autoscaler_error) == (100, None)
