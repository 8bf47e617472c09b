from typing import Any

import pytest

from endpointsctl import publishing
from endpointsctl.inventory import ActivatorPod
from endpointsctl.subsetting.framework import Activator
from localsched.kube.slices import endpoints_of

Obj = dict[str, Any]

REVISION = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "ns", "uid": "rev-uid"}}  # fmt: skip
AE = {**publishing.activation_endpoints(REVISION), "metadata": {
    **publishing.activation_endpoints(REVISION)["metadata"], "uid": "ae-uid"}}  # fmt: skip


def pod(name: str, ip: str, node: str, zone: str, ready: bool = True) -> ActivatorPod:
    return ActivatorPod(Activator(name, ip, node, zone, ready), "localsched-system", f"uid-{name}")


CHOSEN = [pod("activator-b", "10.0.0.2", "node-2", "zone-b"), pod("activator-a", "10.0.0.1", "node-1", "zone-a")]


def test_the_activation_endpoints_is_named_and_owned_like_its_revision() -> None:
    ae = publishing.activation_endpoints(REVISION)
    assert ae["metadata"]["name"] == "hello-00001"
    assert ae["metadata"]["ownerReferences"] == [
        {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": "hello-00001", "uid": "rev-uid",
         "controller": True}
    ]  # fmt: skip
    assert publishing.controller_uid(ae) == "rev-uid"


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_the_slice_lists_the_activators_by_name_in_the_servers_shape(version: str) -> None:
    slice_obj = publishing.endpoint_slice(AE, version, CHOSEN, 8012)
    labels = slice_obj["metadata"]["labels"]
    assert slice_obj["apiVersion"] == f"discovery.k8s.io/{version}"
    assert slice_obj["metadata"]["name"] == "hello-00001-activationendpoints"
    assert labels["kubernetes.io/service-name"] == "hello-00001-activationendpoints"
    assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointsctl.localsched.dev"
    assert slice_obj["metadata"]["ownerReferences"][0]["uid"] == "ae-uid"
    assert slice_obj["ports"] == [{"name": "http", "port": 8012, "protocol": "TCP"}]
    seen = [(e.address, e.node, e.zone, e.pod, e.ready) for e in endpoints_of(slice_obj)]
    assert seen == [("10.0.0.1", "node-1", "zone-a", "activator-a", True),
                    ("10.0.0.2", "node-2", "zone-b", "activator-b", True)]  # fmt: skip
    assert publishing.endpoint_slice(AE, version, list(reversed(CHOSEN)), 8012) == slice_obj


def test_endpoints_hold_only_ready_addresses_and_skip_slice_mirroring() -> None:
    chosen = [*CHOSEN, pod("activator-c", "10.0.0.3", "node-3", "zone-c", ready=False)]
    endpoints = publishing.endpoints(AE, chosen, 8012)
    assert endpoints["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["10.0.0.1", "10.0.0.2"]
    assert publishing.endpoints(AE, [], 8012)["subsets"] == []


def test_the_service_is_selectorless_and_targets_the_activator_port() -> None:
    service = publishing.service(AE, 8012)
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8012, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("desired", "actual", "covered"),
    [
        pytest.param({"a": 1}, {"a": 1, "server": "filled"}, True, id="server-fields-ignored"),
        pytest.param({"a": 1}, {"a": 2}, False, id="different-value"),
        pytest.param({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True, id="nested"),
        pytest.param({"l": [{"x": 1}]}, {"l": [{"x": 1, "y": 2}]}, True, id="list-elements-covered"),
        pytest.param({"l": [1, 2]}, {"l": [1]}, False, id="list-length-differs"),
        pytest.param({"l": [2, 1]}, {"l": [1, 2]}, False, id="list-order-matters"),
        pytest.param({"subsets": []}, {}, True, id="empty-list-equals-absent"),
        pytest.param({"labels": {}}, {"labels": None}, True, id="empty-map-equals-null"),
        pytest.param({"a": None}, {}, True, id="null-equals-absent"),
        pytest.param({"a": 1}, {}, False, id="missing-field"),
        pytest.param({"l": [1]}, None, False, id="missing-object"),
    ],
)
def test_covers_ignores_what_the_server_adds_and_nothing_else(desired: Obj, actual: Any, covered: bool) -> None:
    assert publishing.covers(desired, actual) is covered


def test_an_unchanged_published_object_is_covered_after_the_server_fills_it_in() -> None:
    desired = publishing.service(AE, 8012)
    stored = publishing.overlay({"metadata": {"resourceVersion": "7", "labels": {"extra": "x"}},
                                 "spec": {"clusterIP": "10.96.0.9", "sessionAffinity": "None"}}, desired)  # fmt: skip
    assert stored["spec"]["clusterIP"] == "10.96.0.9"
    assert stored["metadata"]["labels"]["extra"] == "x"
    assert stored["metadata"]["resourceVersion"] == "7"
    assert publishing.covers(desired, stored)
    assert not publishing.covers(publishing.service(AE, 9000), stored)


@pytest.mark.parametrize(
    ("spec", "value", "error"),
    [
        pytest.param(None, None, None, id="no-spec"),
        pytest.param({}, None, None, id="empty-spec"),
        pytest.param({"activators": 3}, 3, None, id="override"),
        pytest.param({"activators": 0}, 0, None, id="zero-left-to-sizing"),
        pytest.param({"activators": "3"}, None, "whole number", id="string"),
        pytest.param({"activators": True}, None, "whole number", id="boolean"),
        pytest.param({"activators": 2.5}, None, "whole number", id="fraction"),
        pytest.param("nonsense", None, "object", id="spec-not-an-object"),
    ],
)
def test_a_malformed_spec_is_reported_never_raised(spec: Any, value: int | None, error: str | None) -> None:
    found, message = publishing.spec_override({"spec": spec})
    assert found == value
    assert (message is None) if error is None else (error in (message or ""))


def test_a_new_leader_resumes_the_activators_and_the_refusal_it_finds_in_status() -> None:
    status = {
        "activators": [{"name": "activator-b", "ip": "10.0.0.2", "ready": True},
                       {"name": "activator-a", "ip": "10.0.0.1", "ready": True}],
        "conditions": [{"type": "EndpointsPublished", "status": "False", "reason": "AddressesRejected",
                        "message": "loopback"}],
    }  # fmt: skip
    ae = {"status": status}
    assert publishing.activators_in_status(ae) == ["activator-b", "activator-a"]
    assert publishing.refusal_in_status(ae) == (publishing.addresses_key(CHOSEN), "loopback")
    status["conditions"][0]["status"] = "True"
    assert publishing.refusal_in_status(ae) is None
    assert publishing.activators_in_status({"status": {"activators": "garbage"}}) == []
