"""The node-bound ValidatingAdmissionPolicy (manifests/policy/), its CEL evaluated as the API server would.

The devcluster's 1.20 API server has no ValidatingAdmissionPolicy (GA in 1.30), so the expressions run here on
cel-python, a CEL implementation, with admission requests shaped as the API server builds them: a regression in
an expression (a pod on another node let through, the activator's own writes refused) fails this test.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
import yaml

from devcluster.applying import REPO

POLICY_FILE = REPO / "manifests/policy/activator-node-bound.yaml"
ACTIVATOR = "system:serviceaccount:localsched-system:activator"
NODE_KEY = "authentication.kubernetes.io/node-name"


def _policy() -> dict[str, Any]:
    [policy] = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d["kind"] == "ValidatingAdmissionPolicy"]
    return dict(policy["spec"])


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(activation)


def admit(operation: str, *, user: str = ACTIVATOR, node: str | None = "node-a", pod: dict[str, Any]) -> str:
    """``allowed``, ``not-matched`` or the first failing validation's message."""
    spec = _policy()
    extra = {NODE_KEY: [node]} if node is not None else {}
    request = {"operation": operation, "userInfo": {"username": user, "extra": extra}}
    activation = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(None if operation == "DELETE" else pod),
        "oldObject": celpy.json_to_cel(pod if operation != "CREATE" else None),
    }
    if not all(_evaluate(c["expression"], activation) for c in spec["matchConditions"]):
        return "not-matched"
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        variables[variable["name"]] = _evaluate(variable["expression"], {**activation, "variables": variables})
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    for validation in spec["validations"]:
        if not _evaluate(validation["expression"], activation):
            return str(validation.get("message") or _evaluate(validation["messageExpression"], activation))
    return "allowed"


def pod(node: str | None = "node-a", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec = {"containers": [{"name": "user-container", "image": "app"}]}
    if node is not None:
        spec["nodeName"] = node  # type: ignore[assignment]
    labels = {"serving.knative.dev/revision": "hello-00001"} if labels is None else labels
    return {"metadata": {"name": "p", "namespace": "demo", "labels": labels}, "spec": spec}


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_an_activator_writes_pods_on_its_own_node(operation: str) -> None:
    assert admit(operation, pod=pod("node-a")) == "allowed"


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_an_activator_may_not_write_pods_on_another_node(operation: str) -> None:
    assert "only pods bound to its own node, node-a" in admit(operation, pod=pod("node-b"))


def test_an_unbound_pod_is_refused() -> None:
    assert "own node" in admit("CREATE", pod=pod(node=None))


def test_only_revision_pods_are_created() -> None:
    assert "revision's pods" in admit("CREATE", pod=pod(labels={"app": "x"}))
    assert admit("UPDATE", pod=pod(labels={"app": "x"})) == "allowed"  # adoption patches another controller's labels


def test_a_token_that_names_no_node_is_refused() -> None:
    assert "names no node" in admit("CREATE", node=None, pod=pod())


def test_other_users_are_not_matched() -> None:
    assert admit("CREATE", user="system:serviceaccount:kube-system:replicaset-controller", pod=pod("node-b")) == (
        "not-matched"
    )


def test_the_binding_denies_on_the_policy() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(POLICY_FILE.read_text())}
    binding = docs["ValidatingAdmissionPolicyBinding"]["spec"]
    assert binding["policyName"] == docs["ValidatingAdmissionPolicy"]["metadata"]["name"]
    assert binding["validationActions"] == ["Deny"]
