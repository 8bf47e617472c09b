"""What the devcluster installs, and create-or-update for the handful of kinds it installs itself.

:func:`project_objects` renders the kustomize base as ``kubectl kustomize manifests/`` would (the subset the base
uses: ``resources`` as files or directories, ``namespace`` and ``images``), so the devcluster installs exactly what
a user's ``kubectl apply -k manifests/`` does. :func:`for_server` is the one place that bends an object for an API
server older than the base supports (the devcluster's 1.20), each change named in :data:`ADAPTATIONS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import AlreadyExists, NotFound

Obj = dict[str, Any]

PDBS = r.Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
NETWORK_POLICIES = r.Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
KINDS: dict[str, r.Resource] = {
    res.kind: res
    for res in (
        r.NAMESPACES, r.CRDS, r.CONFIGMAPS, r.SERVICES, r.DEPLOYMENTS, r.DAEMONSETS, r.SERVICEACCOUNTS,
        r.REVISIONS, r.SECRETS, r.CLUSTERROLES, r.CLUSTERROLEBINDINGS, r.ROLES, r.ROLEBINDINGS, r.LEASES,
        PDBS, NETWORK_POLICIES,
    )
}  # fmt: skip
REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "manifests"

# What for_server changes on a server that lacks the API the base uses, and from which version it is not needed.
ADAPTATIONS = {
    "PodDisruptionBudget policy/v1 -> policy/v1beta1 (same fields)": "1.21",
    "DaemonSet rollingUpdate maxSurge 1, maxUnavailable 0 -> maxUnavailable 1": "1.22",
}


def load_yaml(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(directory: Path) -> Obj:
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(config) - {"apiVersion", "kind", "namespace", "resources", "images"}
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unsupported)}, which project_objects does "
                         "not render: extend devcluster/applying.py or keep the base to plain resources")  # fmt: skip
    return dict(config)


def _set_image(container: Obj, images: list[Obj]) -> None:
    name, _, _ = container["image"].partition("@")
    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    for image in images:
        if image["name"] == name:
            new = image.get("newName", name)
            if image.get("digest"):
                container["image"] = f"{new}@{image['digest']}"
            elif image.get("newTag"):
                container["image"] = f"{new}:{image['newTag']}"


def render(directory: Path) -> list[Obj]:
    """The objects a kustomization renders, in its ``resources`` order (directories: their own kustomization)."""
    config = _kustomization(directory)
    objects: list[Obj] = []
    for entry in config.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_yaml(path))
    namespace = config.get("namespace")
    images = config.get("images", [])
    for obj in objects:
        if namespace and KINDS.get(obj["kind"], r.NAMESPACES).namespaced:
            obj["metadata"]["namespace"] = namespace
        template = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*template.get("initContainers", []), *template.get("containers", [])]:
            _set_image(container, images)
    return objects


def project_objects() -> list[Obj]:
    """What ``kubectl apply -k manifests/`` creates (the CRD first), in order."""
    return render(BASE)


@dataclass(frozen=True)
class Server:
    """What :func:`for_server` needs to know about an API server."""

    minor: int
    policy_versions: tuple[str, ...]

    @classmethod
    async def of(cls, client: KubeClient) -> Server:
        version = await client.server_version()
        minor = int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)
        return cls(minor, tuple(await client.served_versions("policy")))


def for_server(obj: Obj, server: Server) -> Obj:
    """``obj`` as this server can take it: unchanged on the Kubernetes versions the base supports (1.22+)."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "PodDisruptionBudget" and "v1" not in server.policy_versions:
        obj["apiVersion"] = "policy/v1beta1"
    if obj["kind"] == "DaemonSet" and server.minor < 22:
        rolling = obj["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
        if rolling.pop("maxSurge", None) is not None:
            rolling["maxUnavailable"] = 1
    return obj


def resource_of(obj: Obj) -> r.Resource:
    resource = KINDS.get(obj["kind"])
    if resource is None:
        raise ValueError(f"devcluster cannot apply kind {obj['kind']!r}; known: {', '.join(sorted(KINDS))}")
    group, _, version = obj.get("apiVersion", resource.api_version).rpartition("/")
    return r.Resource(group, version, resource.plural, resource.kind, resource.namespaced)


async def apply(client: KubeClient, obj: Obj) -> Obj:
    resource = resource_of(obj)
    meta = obj["metadata"]
    try:
        return await client.create(resource, obj, meta.get("namespace"))
    except AlreadyExists:
        return await client.patch(resource, meta["name"], obj, meta.get("namespace"))


async def install(client: KubeClient) -> list[str]:
    """``kubectl apply -k manifests/`` on this server (create, else merge-patch, each object as for_server adapts
    it). Returns what was applied, as ``Kind/name``."""
    server = await Server.of(client)
    applied = []
    for obj in project_objects():
        await apply(client, for_server(obj, server))
        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return applied


async def uninstall(client: KubeClient) -> list[str]:
    """``kubectl delete -k manifests/`` on this server: every object of the base, the last first. Returns what was
    deleted (objects already gone are skipped)."""
    server = await Server.of(client)
    deleted = []
    for original in reversed(project_objects()):
        obj = for_server(original, server)
        try:
            await client.delete(resource_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace"))
        except NotFound:
            continue
        deleted.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return deleted
