"""Everything that depends on the control plane's Kubernetes version, in one place.

The devcluster drives Debian's v1.20.2 build by default, and any newer release given through ``KUBEBUILDER_ASSETS``
(envtest's binaries). Flags come and go between releases; each entry below says when, from the release notes:

- ``--port`` (the insecure serving port, which we turn off with ``--port=0``): kube-scheduler's was a no-op from
  1.20 and removed in 1.23; kube-controller-manager's removed in 1.24 (CHANGELOG-1.23/1.24, kubernetes#96345).
  Without the flag both serve only securely, which is what ``--port=0`` asked for.
- ``--pod-eviction-timeout`` (kube-controller-manager): deprecated in 1.26, removed in 1.27 with
  ``--enable-taint-manager`` (kubernetes#113710, kubernetes#115840). Taint-based eviction, on since 1.13, is what
  evicts pods from a dead node on every version: ``--default-unreachable-toleration-seconds`` on the API server.
- EndpointSlice ``discovery.k8s.io/v1`` arrives in 1.21 and ``v1beta1`` leaves in 1.25: not a flag, the daemons
  ask the server what it serves (``localsched.kube.client``).
- Service-account tokens: from 1.21 (BoundServiceAccountTokenVolume beta) pods mount a token from the
  TokenRequest API, and from 1.24 token secrets are no longer made; before 1.21 a pod is admitted only once its
  account's token secret exists. The devcluster's kubelets and the tests' daemons use TokenRequest on every version.
- Loopback pod addresses: accepted in ``discovery.k8s.io/v1beta1`` slices (1.20), rejected in ``v1`` slices and in
  core/v1 Endpoints, which is why the ``loopback`` network needs 1.20 and turns off the Endpoints controllers and
  the API server's endpoint reconciler (``devcluster/network.py``).
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

SCHEDULER_PORT_REMOVED = (1, 23)
CONTROLLER_MANAGER_PORT_REMOVED = (1, 24)
POD_EVICTION_TIMEOUT_REMOVED = (1, 27)
LOOPBACK_PODS_REJECTED = (1, 21)  # v1 EndpointSlices, the only version served from 1.25
PROJECTED_TOKENS = (1, 21)  # pods mount a TokenRequest token; before, admission waits for the token secret


class VersionError(RuntimeError):
    pass


@cache
def of_binary(path: Path) -> tuple[int, int]:
    """(major, minor) of a Kubernetes binary, from ``--version`` ("Kubernetes v1.20.2")."""
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    return parse(result.stdout + result.stderr, what=str(path))


def parse(text: str, what: str = "the output") -> tuple[int, int]:
    found = re.search(r"\bv(\d+)\.(\d+)\.\d+", text)
    if found is None:
        raise VersionError(f"no Kubernetes version in {what}: {text.strip()[:200]!r}")
    return int(found.group(1)), int(found.group(2))


def from_server(info: dict[str, object]) -> tuple[int, int]:
    """(major, minor) from a server's ``/version`` (``minor`` may carry a suffix: "20+")."""
    return parse(str(info.get("gitVersion", "")), what="the server's /version")


def describe(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def apiserver_flags(version: tuple[int, int], *, loopback_pods: bool) -> list[str]:
    # Loopback pods: the Endpoints of the ``kubernetes`` Service would hold 127.0.0.1, which the server rejects.
    return ["--endpoint-reconciler-type", "none"] if loopback_pods else []


def controller_manager_flags(version: tuple[int, int], *, loopback_pods: bool) -> list[str]:
    flags = []
    if version < CONTROLLER_MANAGER_PORT_REMOVED:
        flags.append("--port=0")
    if version < POD_EVICTION_TIMEOUT_REMOVED:
        flags.append("--pod-eviction-timeout=30s")
    # Loopback pods: the Endpoints controller's every write would fail, with a Warning event, and be retried
    # (some 13 failed writes and events per pod start); EndpointSlices carry the endpoints there.
    off = ",-endpoint,-endpointslicemirroring" if loopback_pods else ""
    flags.append(f"--controllers=*,-nodeipam,-csrsigning,-csrapproving,-bootstrapsigner,-tokencleaner{off}")
    return flags


def scheduler_flags(version: tuple[int, int]) -> list[str]:
    return ["--port=0"] if version < SCHEDULER_PORT_REMOVED else []


def check_network(version: tuple[int, int], network_mode: str) -> None:
    """The loopback network only works where the API server accepts loopback pod addresses."""
    if network_mode == "loopback" and version >= LOOPBACK_PODS_REJECTED:
        raise VersionError(
            f"Kubernetes {describe(version)} rejects loopback pod addresses in EndpointSlices (from "
            f"{describe(LOOPBACK_PODS_REJECTED)} on): use --network netns (root), or the default v1.20 binaries"
        )
