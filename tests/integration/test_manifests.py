"""The CRDs and manifests, proved against the real API server: server-side dry runs and RBAC checks."""

from __future__ import annotations

import pytest

from devcluster.applying import Server, for_server, project_objects, resource_of
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import Invalid
from tests.rbac_matrix import CLUSTER, DENIED, SYSTEM, USES, Grant


def _sar(
    sa: str, verb: str, group: str, resource: str, namespace: str = "", subresource: str = "", name: str = ""
) -> dict[str, object]:
    attributes = {"verb": verb, "group": group, "resource": resource, "namespace": namespace,
                  "subresource": subresource, "name": name}  # fmt: skip
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": f"system:serviceaccount:{SYSTEM}:{sa}",
                     "groups": ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}"],
                     "resourceAttributes": attributes}}  # fmt: skip


async def allowed(kube: KubeClient, sa: str, verb: str, group: str, resource: str, **kw: str) -> bool:
    review = await kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                body=_sar(sa, verb, group, resource, **kw))  # fmt: skip
    return bool(review["status"].get("allowed"))


async def test_every_project_object_passes_a_server_side_apply_dry_run(kube: KubeClient) -> None:
    """What ``kubectl apply --server-side --dry-run=server -k manifests/`` checks, object by object, on this
    server: the devcluster's 1.20 takes two objects as ``for_server`` adapts them (devcluster/applying.py)."""
    server = await Server.of(kube)
    checked = []
    for original in project_objects():
        obj = for_server(original, server)
        resource = resource_of(obj)
        meta = obj["metadata"]
        await kube.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            params={"dryRun": "All", "fieldManager": "localsched-manifest-test", "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        checked.append(f"{obj['kind']}/{meta['name']}")
    assert {"CustomResourceDefinition/activationendpoints.activation.localsched.dev", "DaemonSet/activator",
            "Deployment/endpointsctl", "ClusterRole/localsched-activator", "PodDisruptionBudget/endpointsctl",
            "NetworkPolicy/endpointsctl", "Service/activator-metrics",
            "ConfigMap/activator-config"} <= set(checked)  # fmt: skip


async def test_crd_rejects_an_activation_endpoints_with_an_invalid_spec(kube: KubeClient, namespace: str) -> None:
    crd = await kube.get(r.CRDS, "activationendpoints.activation.localsched.dev")
    assert crd["spec"]["names"]["shortNames"] == ["ae"]
    assert "status" in crd["spec"]["versions"][0]["subresources"]
    body = {"metadata": {"name": "bad"}, "spec": {"activators": 0}}
    with pytest.raises(Invalid) as rejected:
        await kube.create(r.ACTIVATION_ENDPOINTS, body, namespace)
    assert "spec.activators" in str(rejected.value)


def _namespace(scope: str) -> str:
    return "default" if scope == CLUSTER else scope


@pytest.mark.parametrize("account", sorted(USES))
async def test_each_daemon_may_make_every_call_its_code_makes(kube: KubeClient, account: str) -> None:
    """The API server's own answer for each use in tests/rbac_matrix.py (the unit test checks no rule grants more)."""
    refused = []
    for use in sorted(USES[account]):
        resource, _, subresource = use.resource.partition("/")
        if not await allowed(kube, account, use.verb, use.group, resource, namespace=_namespace(use.scope),
                             subresource=subresource, name=use.name):  # fmt: skip
            refused.append(use)
    assert refused == []


@pytest.mark.parametrize("account", sorted(USES))
async def test_each_daemon_is_denied_what_no_call_needs(kube: KubeClient, account: str) -> None:
    """Secrets, node deletion, RBAC escalation, other workloads; and what it does in its own namespace only, or on
    one named object only, elsewhere."""
    checks = [(verb, group, resource, ns, "") for verb, group, resource, ns in DENIED]
    for use in USES[account]:
        if use.scope == SYSTEM and Grant(use.verb, use.group, use.resource, CLUSTER) not in USES[account]:
            checks.append((use.verb, use.group, use.resource, "default", ""))
        if use.name:
            checks.append((use.verb, use.group, use.resource, _namespace(use.scope), "someone-else"))
    let_through = []
    for verb, group, full, ns, name in checks:
        resource, _, subresource = full.partition("/")
        if await allowed(kube, account, verb, group, resource, namespace=ns, subresource=subresource, name=name):
            let_through.append((verb, group, full, ns, name))
    assert let_through == []
