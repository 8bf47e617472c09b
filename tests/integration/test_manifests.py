"""The CRDs and manifests, proved against the real API server: server-side dry runs and RBAC checks."""

from __future__ import annotations

import pytest

from devcluster.applying import KINDS, project_objects
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import Invalid

SYSTEM = "localsched-system"


def _sar(
    sa: str, verb: str, group: str, resource: str, namespace: str = "", subresource: str = ""
) -> dict[str, object]:
    attributes = {"verb": verb, "group": group, "resource": resource, "namespace": namespace,
                  "subresource": subresource}  # fmt: skip
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": f"system:serviceaccount:{SYSTEM}:{sa}",
                     "groups": ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}"],
                     "resourceAttributes": attributes}}  # fmt: skip


async def allowed(kube: KubeClient, sa: str, verb: str, group: str, resource: str, **kw: str) -> bool:
    review = await kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                body=_sar(sa, verb, group, resource, **kw))  # fmt: skip
    return bool(review["status"].get("allowed"))


async def test_every_project_object_passes_a_server_side_apply_dry_run(kube: KubeClient) -> None:
    """What ``kubectl apply --server-side --dry-run=server -f crds/ -k manifests/`` checks, object by object."""
    checked = []
    for obj in project_objects():
        resource = KINDS[obj["kind"]]
        meta = obj["metadata"]
        body = {"apiVersion": resource.api_version, **obj}
        await kube.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            params={"dryRun": "All", "fieldManager": "localsched-manifest-test", "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        checked.append(f"{obj['kind']}/{meta['name']}")
    assert {"CustomResourceDefinition/activationendpoints.activation.localsched.dev", "DaemonSet/activator",
            "Deployment/endpointsctl", "ClusterRole/localsched-activator"} <= set(checked)  # fmt: skip


async def test_crd_rejects_an_activation_endpoints_with_an_invalid_spec(kube: KubeClient, namespace: str) -> None:
    crd = await kube.get(r.CRDS, "activationendpoints.activation.localsched.dev")
    assert crd["spec"]["names"]["shortNames"] == ["ae"]
    assert "status" in crd["spec"]["versions"][0]["subresources"]
    body = {"metadata": {"name": "bad"}, "spec": {"activators": 0}}
    with pytest.raises(Invalid) as rejected:
        await kube.create(r.ACTIVATION_ENDPOINTS, body, namespace)
    assert "spec.activators" in str(rejected.value)


@pytest.mark.parametrize(
    ("sa", "verb", "group", "resource", "subresource", "expected"),
    [
        pytest.param(
            "activator", "watch", "serving.knative.dev", "revisions", "", True, id="activator-watches-revisions"
        ),
        pytest.param(
            "activator", "watch", "discovery.k8s.io", "endpointslices", "", True, id="activator-watches-slices"
        ),
        pytest.param("activator", "list", "", "nodes", "", True, id="activator-lists-nodes"),
        pytest.param("activator", "update", "apps", "deployments", "scale", True, id="activator-scales-deployments"),
        pytest.param("activator", "create", "", "pods", "", True, id="activator-creates-pods"),
        pytest.param("activator", "patch", "", "pods", "", True, id="activator-adopts-pods"),
        pytest.param("activator", "patch", "", "pods", "status", True, id="activator-opens-its-readiness-gate"),
        pytest.param("activator", "update", "apps", "replicasets", "scale", True, id="activator-scales-replicasets"),
        pytest.param("activator", "update", "apps", "deployments", "", False, id="activator-cannot-edit-deployments"),
        pytest.param("activator", "get", "", "secrets", "", False, id="activator-cannot-read-secrets"),
        pytest.param("activator", "delete", "", "nodes", "", False, id="activator-cannot-delete-nodes"),
        pytest.param("endpointsctl", "get", "", "secrets", "", False, id="endpointsctl-cannot-read-secrets"),
        pytest.param("endpointsctl", "create", "", "pods", "", False, id="endpointsctl-cannot-create-pods"),
    ],
)
async def test_service_accounts_get_exactly_what_the_daemons_need(
    kube: KubeClient, sa: str, verb: str, group: str, resource: str, subresource: str, expected: bool
) -> None:
    assert await allowed(kube, sa, verb, group, resource, namespace="default", subresource=subresource) is expected
