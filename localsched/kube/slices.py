"""EndpointSlices in both shapes a cluster may serve: discovery.k8s.io/v1 and v1beta1.

v1beta1 (the only version of a 1.20 server) carries the node in ``topology["kubernetes.io/hostname"]`` (and
``nodeName`` from 1.20 on) and the zone in ``topology["topology.kubernetes.io/zone"]``; v1 has ``nodeName`` and
``zone`` fields and no ``topology``. Readers see one normalized shape; writers build the right one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
ZONE_TOPOLOGY = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class SliceEndpoint:
    address: str
    ready: bool
    node: str
    zone: str
    pod: str  # targetRef name when it points at a Pod, else ""
    terminating: bool = False


def endpoints_of(slice_obj: Mapping[str, Any]) -> list[SliceEndpoint]:
    """Every address of a slice, one entry each, in the normalized shape."""
    result: list[SliceEndpoint] = []
    for ep in slice_obj.get("endpoints") or ():
        conditions = ep.get("conditions") or {}
        topology = ep.get("topology") or ep.get("deprecatedTopology") or {}
        node = ep.get("nodeName") or topology.get(HOSTNAME_TOPOLOGY, "")
        zone = ep.get("zone") or topology.get(ZONE_TOPOLOGY, "")
        ref = ep.get("targetRef") or {}
        pod = ref.get("name", "") if ref.get("kind") == "Pod" else ""
        # "ready" unset means ready (API convention for unknown state is to treat it as ready).
        ready = conditions.get("ready") is not False
        terminating = conditions.get("terminating") is True
        for address in ep.get("addresses") or ():
            result.append(SliceEndpoint(address, ready and not terminating, node, zone, pod, terminating))
    return result


def port_of(slice_obj: Mapping[str, Any], name: str | None = None) -> int | None:
    """The slice's port (by name when given, else the first)."""
    for port in slice_obj.get("ports") or ():
        if name is None or port.get("name") == name:
            value = port.get("port")
            return int(value) if value is not None else None
    return None


@dataclass(frozen=True)
class EndpointSpec:
    address: str
    node: str
    zone: str
    ready: bool = True
    target_pod: tuple[str, str, str] | None = None  # (namespace, name, uid)


def build_endpoints(version: str, endpoints: Iterable[EndpointSpec]) -> list[dict[str, Any]]:
    """Slice ``endpoints`` entries in the shape of ``version`` (``v1`` or ``v1beta1``)."""
    out: list[dict[str, Any]] = []
    for spec in endpoints:
        ep: dict[str, Any] = {"addresses": [spec.address], "conditions": {"ready": spec.ready}}
        if version == "v1":
            ep["nodeName"] = spec.node
            if spec.zone:
                ep["zone"] = spec.zone
        else:
            topology = {HOSTNAME_TOPOLOGY: spec.node}
            if spec.zone:
                topology[ZONE_TOPOLOGY] = spec.zone
            ep["topology"] = topology
        if spec.target_pod is not None:
            namespace, name, uid = spec.target_pod
            ep["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": name, "uid": uid}
        out.append(ep)
    return out
