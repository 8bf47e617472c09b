"""What each daemon calls on the Kubernetes API, and what its RBAC grants, in one comparable shape.

``USES`` is written from the code (each entry names the call); ``grants`` expands the rendered ClusterRoles and
Roles bound to a ServiceAccount. ``tests/unit/test_rbac.py`` asserts the two are equal (nothing granted that no call
needs, nothing called that is not granted); ``tests/integration/test_manifests.py`` asks the API server the same
through SubjectAccessReviews, with the denials an operator checks first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

SYSTEM = "localsched-system"
CLUSTER = "*"  # any namespace (a ClusterRole through a ClusterRoleBinding)


class Grant(NamedTuple):
    verb: str
    group: str
    resource: str  # "pods" or "pods/status"
    scope: str  # CLUSTER or one namespace
    name: str = ""  # a resourceName restriction, "" for any


def _each(scope: str, group: str, resource: str, verbs: str, name: str = "") -> set[Grant]:
    return {Grant(verb, group, resource, scope, name) for verb in verbs.split()}


USES: dict[str, set[Grant]] = {
    "activator": {
        *_each(CLUSTER, "serving.knative.dev", "revisions", "list watch"),  # tracking.py watch cache
        *_each(CLUSTER, "discovery.k8s.io", "endpointslices", "list watch"),  # private slices; endpointsctl-stats
        *_each(CLUSTER, "", "nodes", "list watch"),  # tracking.py watch cache
        *_each(CLUSTER, "", "pods", "list watch create patch delete"),  # local pods: cache, create, adopt, trim
        *_each(CLUSTER, "", "pods/status", "patch"),  # scheduling.py gate_patch
        *_each(CLUSTER, "apps", "replicasets", "list watch"),  # app.py replicasets cache
        *_each(CLUSTER, "apps", "replicasets/finalizers", "update"),  # adoption_patch: blockOwnerDeletion
        *_each(CLUSTER, "apps", "deployments/scale", "get update"),  # claiming.py claim_replica
        *_each(CLUSTER, "apps", "replicasets/scale", "get update"),  # claiming.py raise_replicaset
        *_each(CLUSTER, "", "events", "create"),  # scheduling.py _event
        *_each(SYSTEM, "", "pods", "get"),  # recovering.py: does the creating activator still exist
    },
    "endpointsctl": {
        *_each(CLUSTER, "serving.knative.dev", "revisions", "list watch"),  # controller.py caches
        # writing.py: cache, create, replace; get after a conflict. status.py: the status subresource.
        *_each(CLUSTER, "activation.localsched.dev", "activationendpoints", "get list watch create update"),
        *_each(CLUSTER, "activation.localsched.dev", "activationendpoints/status", "update"),
        *_each(CLUSTER, "discovery.k8s.io", "endpointslices", "get list watch create update"),
        *_each(CLUSTER, "", "services", "get list watch create update"),
        *_each(CLUSTER, "", "endpoints", "get list watch create update delete"),
        *_each(CLUSTER, "", "nodes", "list watch"),
        *_each(CLUSTER, "", "configmaps", "list watch", name="config-autoscaler"),  # by field selector
        *_each(CLUSTER, "", "events", "create"),
        *_each(SYSTEM, "", "pods", "list watch"),  # the activator pods
        *_each(SYSTEM, "coordination.k8s.io", "leases", "create"),
        *_each(SYSTEM, "coordination.k8s.io", "leases", "get update", name="endpointsctl"),
    },
}

# What an operator checks first that neither daemon may do, as (verb, group, resource, namespace).
DENIED: list[tuple[str, str, str, str]] = [
    ("get", "", "secrets", "default"),
    ("list", "", "secrets", SYSTEM),
    ("delete", "", "nodes", ""),
    ("patch", "", "nodes", ""),
    ("create", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "default"),
    ("create", "", "serviceaccounts/token", SYSTEM),
    ("create", "", "pods/exec", "default"),
    ("create", "", "pods/eviction", "default"),
    ("update", "apps", "deployments", "default"),
    ("patch", "apps", "daemonsets", SYSTEM),
    ("update", "serving.knative.dev", "revisions", "default"),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("update", "", "configmaps", "knative-serving"),
]


def grants(objects: list[dict[str, Any]], account: str) -> set[Grant]:
    """Every (verb, resource, scope, name) the rendered RBAC objects grant the ServiceAccount ``account``."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("ClusterRole", "Role")}  # fmt: skip
    granted: set[Grant] = set()
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account and s.get("namespace") == SYSTEM
                   for s in subjects):  # fmt: skip
            continue
        ref = binding["roleRef"]
        scope = CLUSTER if binding["kind"] == "ClusterRoleBinding" else binding["metadata"]["namespace"]
        role_namespace = "" if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
        role = roles[(ref["kind"], role_namespace, ref["name"])]
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            granted.add(Grant(verb, group, resource, scope, name))
    return granted
