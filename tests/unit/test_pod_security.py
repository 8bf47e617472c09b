"""The rendered workloads meet the restricted Pod Security Standard, as Pod Security Admission would judge them.

The rules are the Kubernetes Pod Security Standards ("restricted", which includes "baseline"), checked on the
pod templates of every workload in ``manifests/``: a regression fails here before any cluster refuses the pod.
The namespace enforces the same profile on clusters with Pod Security Admission (1.23+).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devcluster.applying import project_objects

WORKLOAD_KINDS = {"DaemonSet", "Deployment", "StatefulSet", "Job"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip


def violations(pod: dict[str, Any]) -> list[str]:
    """What the restricted profile refuses in a pod spec (empty: admitted), plus a read-only root filesystem."""
    pod_sc = pod.get("securityContext") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    return [*pod_violations(pod), *(found for c in containers for found in container_violations(c, pod_sc))]


def pod_violations(pod: dict[str, Any]) -> list[str]:
    """What the restricted profile refuses at the pod level."""
    found: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} is of type {sorted(kinds - RESTRICTED_VOLUMES)}")
    if (pod.get("securityContext") or {}).get("sysctls"):
        found.append("sysctls are set")
    return found


def container_violations(container: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    """What the restricted profile refuses in one container (``pod_sc``: the pod's securityContext, its defaults)."""
    found: list[str] = []
    name, sc = container["name"], container.get("securityContext") or {}
    if sc.get("privileged"):
        found.append(f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation is not false")
    if not (sc.get("runAsNonRoot") is True or (pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is None)):
        found.append(f"{name}: runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        found.append(f"{name}: runAsUser is 0")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault or Localhost")
    found.extend(f"{name}: {problem}" for problem in capability_violations(sc.get("capabilities") or {}))
    if sc.get("procMount", "Default") != "Default":
        found.append(f"{name}: procMount is {sc['procMount']}")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        found.append(f"{name}: hostPort is set")
    if sc.get("readOnlyRootFilesystem") is not True:
        found.append(f"{name}: the root filesystem is writable (the daemons write no file)")
    return found


def capability_violations(capabilities: dict[str, Any]) -> list[str]:
    found: list[str] = []
    if "ALL" not in (capabilities.get("drop") or []):
        found.append("capabilities do not drop ALL")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"capabilities add {sorted(set(capabilities['add']) - {'NET_BIND_SERVICE'})}")
    return found


def workloads() -> list[dict[str, Any]]:
    return [obj for obj in project_objects() if obj["kind"] in WORKLOAD_KINDS]


def test_the_manifests_have_the_two_daemons() -> None:
    assert {(w["kind"], w["metadata"]["name"]) for w in workloads()} == {
        ("DaemonSet", "activator"), ("Deployment", "endpointsctl")}  # fmt: skip


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}")
def test_every_workload_meets_the_restricted_profile(workload: dict[str, Any]) -> None:
    assert violations(workload["spec"]["template"]["spec"]) == []


def test_the_namespace_enforces_the_restricted_profile() -> None:
    [namespace] = [obj for obj in project_objects() if obj["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser is 0"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]), "NET_ADMIN"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p.update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "hostPath"),
        (lambda p: p["containers"][0]["ports"].append({"containerPort": 80, "hostPort": 80}), "hostPort"),
        (lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False), "writable"),
    ],
    ids=[
        "escalation",
        "root-allowed",
        "uid-0",
        "no-seccomp",
        "extra-capability",
        "host-network",
        "host-path",
        "host-port",
        "writable-root",
    ],
)
def test_each_rule_catches_its_regression(change: Any, expected: str) -> None:
    pod = copy.deepcopy(workloads()[0]["spec"]["template"]["spec"])
    change(pod)
    assert any(expected in v for v in violations(pod)), violations(pod)
