"""What endpointsctl publishes for a revision, built as plain API objects, and when a write is needed at all.

For revision ``rev`` (the ActivationEndpoints ``rev`` owns all three, and the Revision owns the ActivationEndpoints,
so deleting the Revision garbage-collects everything):

* the EndpointSlice ``rev-activationendpoints`` (``discovery.k8s.io`` v1 or v1beta1), labelled
  ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by: endpointsctl.localsched.dev``;
* the Endpoints ``rev-activationendpoints``, where the server accepts the addresses, labelled to skip
  EndpointSlice mirroring (the slice above is already the mirror);
* the selectorless Service ``rev-activationendpoints`` (port ``http`` 80 -> the activators' 8012).

Addresses are listed in activator-name order, so that a mere reordering of the chosen activators writes nothing.
:func:`covers` decides whether an existing object already says what we would write (server-filled fields such as
``clusterIP`` are ignored); :func:`overlay` merges our fields into the existing object for an update.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from endpointsctl.inventory import ActivatorPod
from localsched import knative
from localsched.kube.slices import MANAGED_BY_LABEL, SERVICE_NAME_LABEL, EndpointSpec, build_endpoints

Obj = dict[str, Any]

GROUP = "activation.localsched.dev"
API_VERSION = f"{GROUP}/v1alpha1"
KIND = "ActivationEndpoints"
SLICE_MANAGER = "endpointsctl.localsched.dev"
APP_MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_MANAGED_BY = "endpointsctl"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
PORT_NAME = "http"
SERVICE_PORT = 80


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def output_labels(revision: str) -> dict[str, str]:
    return {knative.REVISION_LABEL: revision, APP_MANAGED_BY_LABEL: APP_MANAGED_BY}


def activation_endpoints(revision: Mapping[str, Any]) -> Obj:
    """A new ActivationEndpoints for a Revision: same name, owned by it, empty spec (N is computed)."""
    meta = revision["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": output_labels(meta["name"]),
            "ownerReferences": [
                owner_reference({"apiVersion": knative.REVISION_API_VERSION, "kind": "Revision", "metadata": meta})
            ],
        },
        "spec": {},
    }


def spec_override(ae: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """``spec.activators`` as (value, None), or (None, message) when it is not a whole number. Values below 1 are
    returned as they are: sizing reports them as InvalidSpec (the CRD refuses them, but objects stored before a
    schema change, or a CRD installed without validation, must not crash the controller)."""
    spec = ae.get("spec")
    if spec is None:
        return None, None
    if not isinstance(spec, Mapping):
        return None, f"spec must be an object, got {spec!r}"
    raw = spec.get("activators")
    if raw is None:
        return None, None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw, None
    return None, f"spec.activators must be a whole number >= 1, got {raw!r}; using the computed value"


def _meta(ae: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> Obj:
    meta = ae["metadata"]
    labels = {**output_labels(meta["name"]), **(extra_labels or {})}
    return {
        "name": knative.activation_endpoints_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(ae)],
    }


def _by_name(chosen: Iterable[ActivatorPod]) -> list[ActivatorPod]:
    return sorted(chosen, key=lambda a: a.name)


def endpoint_slice(ae: Mapping[str, Any], version: str, chosen: Iterable[ActivatorPod], port: int) -> Obj:
    name = knative.activation_endpoints_name(ae["metadata"]["name"])
    specs = [
        EndpointSpec(
            address=a.activator.ip,
            node=a.activator.node,
            zone=a.activator.zone,
            ready=a.activator.ready,
            target_pod=(a.namespace, a.name, a.uid),
        )
        for a in _by_name(chosen)
        if a.activator.ip
    ]
    return {
        "apiVersion": f"discovery.k8s.io/{version}",
        "kind": "EndpointSlice",
        "metadata": _meta(ae, {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: SLICE_MANAGER}),
        "addressType": "IPv4",
        "endpoints": build_endpoints(version, specs),
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
    }


def endpoints(ae: Mapping[str, Any], chosen: Iterable[ActivatorPod], port: int) -> Obj:
    addresses = [
        {
            "ip": a.activator.ip,
            "nodeName": a.activator.node,
            "targetRef": {"kind": "Pod", "namespace": a.namespace, "name": a.name, "uid": a.uid},
        }
        for a in _by_name(chosen)
        if a.activator.ip and a.activator.ready
    ]
    subsets = [{"addresses": addresses, "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]}]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _meta(ae, {SKIP_MIRROR_LABEL: "true"}),
        "subsets": subsets if addresses else [],
    }


def service(ae: Mapping[str, Any], port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ae),
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": port, "protocol": "TCP"}],
        },
    }


def addresses_key(chosen: Iterable[ActivatorPod]) -> tuple[str, ...]:
    """What an Endpoints object says, for remembering that the server refused it."""
    return tuple(f"{a.name}@{a.activator.ip}" for a in _by_name(chosen) if a.activator.ip and a.activator.ready)


# -- comparing and merging ------------------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict | str) and not value)


def covers(desired: Any, actual: Any) -> bool:
    """``actual`` already says everything ``desired`` says: mappings recursively (extra keys in ``actual`` are the
    server's and are ignored), lists element by element and of equal length, scalars equal. An absent or null
    field equals an empty one (the server omits empty lists)."""
    if isinstance(desired, Mapping):
        return _covers_mapping(desired, actual)
    if isinstance(desired, list):
        return _covers_list(desired, actual)
    return (_empty(desired) and _empty(actual)) or bool(desired == actual)


def _covers_mapping(desired: Mapping[str, Any], actual: Any) -> bool:
    if _empty(desired) and _empty(actual):
        return True
    if not isinstance(actual, Mapping):
        return False
    return all(covers(value, actual.get(key)) if key in actual else _empty(value) for key, value in desired.items())


def _covers_list(desired: list[Any], actual: Any) -> bool:
    if not desired:
        return _empty(actual)
    if not isinstance(actual, list) or len(actual) != len(desired):
        return False
    return all(covers(d, a) for d, a in zip(desired, actual, strict=True))


def overlay(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj:
    """``actual`` with ``desired`` written over it: mappings merge recursively, everything else is replaced."""
    result: Obj = copy.deepcopy(dict(actual))
    for key, value in desired.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping) and value:
            result[key] = overlay(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def is_ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(APP_MANAGED_BY_LABEL) == APP_MANAGED_BY


def activators_in_status(ae: Mapping[str, Any]) -> Sequence[str]:
    """The activator names a previous leader published (to resume its assignment without churn)."""
    status = ae.get("status") or {}
    items = status.get("activators") if isinstance(status, Mapping) else None
    if not isinstance(items, list):
        return []
    names = [str(item["name"]) for item in items if isinstance(item, Mapping) and item.get("name")]
    return list(dict.fromkeys(names))


def refusal_in_status(ae: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """A refusal of the Endpoints object that a previous leader reported, as ``(addresses_key, message)``: a new
    leader does not try the same addresses again."""
    status = ae.get("status")
    if not isinstance(status, Mapping):
        return None
    for condition in status.get("conditions") or ():
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "EndpointsPublished"
            and condition.get("status") == "False"
            and condition.get("reason") == "AddressesRejected"
        ):
            items = [a for a in status.get("activators") or () if isinstance(a, Mapping)]
            key = tuple(
                f"{a.get('name')}@{a.get('ip')}"
                for a in sorted(items, key=lambda a: str(a.get("name")))
                if a.get("ip") and a.get("ready")
            )
            return key, str(condition.get("message") or "")
    return None
