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
        r.REVISIONS, r.SECRETS,
    )
}  # fmt: skip


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


async def apply(client: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    resource = KINDS.get(obj["kind"])
    if resource is None:
        raise ValueError(f"devcluster cannot apply kind {obj['kind']!r}; known: {', '.join(sorted(KINDS))}")
    meta = obj["metadata"]
    try:
        return await client.create(resource, obj, meta.get("namespace"))
    except AlreadyExists:
        return await client.patch(resource, meta["name"], obj, meta.get("namespace"))
