"""Create-or-update for the handful of kinds the devcluster installs itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import AlreadyExists

KINDS: dict[str, r.Resource] = {
    res.kind: res
    for res in (
        r.NAMESPACES, r.CRDS, r.CONFIGMAPS, r.SERVICES, r.DEPLOYMENTS, r.DAEMONSETS, r.SERVICEACCOUNTS,
        r.REVISIONS, r.SECRETS, r.CLUSTERROLES, r.CLUSTERROLEBINDINGS, r.ROLES, r.ROLEBINDINGS, r.LEASES,
        r.PDBS_V1BETA1,
    )
}  # fmt: skip
REPO = Path(__file__).resolve().parent.parent


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization_resources(directory: Path) -> list[Path]:
    """The files a kustomize base lists, in order (plain resources only: no patches or generators)."""
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [directory / name for name in config.get("resources", [])]


def project_objects() -> list[dict[str, Any]]:
    """What ``kubectl apply -f crds/ && kubectl apply -k manifests/`` would create, in that order."""
    objects: list[dict[str, Any]] = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        objects.extend(load_yaml(path))
    base = REPO / "manifests"
    namespace = yaml.safe_load((base / "kustomization.yaml").read_text()).get("namespace")
    for path in kustomization_resources(base):
        for obj in load_yaml(path):
            if namespace and KINDS.get(obj["kind"], r.NAMESPACES).namespaced:
                obj["metadata"]["namespace"] = namespace
            objects.append(obj)
    return objects


async def apply(client: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    resource = KINDS.get(obj["kind"])
    if resource is None:
        raise ValueError(f"devcluster cannot apply kind {obj['kind']!r}; known: {', '.join(sorted(KINDS))}")
    meta = obj["metadata"]
    try:
        return await client.create(resource, obj, meta.get("namespace"))
    except AlreadyExists:
        return await client.patch(resource, meta["name"], obj, meta.get("namespace"))
