"""The Knative Serving contract, read from the API's JSON and never invented: names, revisions, config-autoscaler.

Everything here is parsed from ``serving.knative.dev/v1`` Revision objects and the ``config-autoscaler``
ConfigMap exactly as the API server returns them (plain dicts, camelCase keys). Invalid values fail fast with an
error naming the key and the value, the way Knative's own webhook would reject them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

# API and object names.
SERVING_GROUP = "serving.knative.dev"
REVISION_API_VERSION = "serving.knative.dev/v1"
REVISION_KIND = "Revision"
AUTOSCALER_CONFIGMAP = "config-autoscaler"

# Labels Knative puts on a revision's pods (and Deployment).
REVISION_LABEL = "serving.knative.dev/revision"
REVISION_UID_LABEL = "serving.knative.dev/revisionUID"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
SERVICE_LABEL = "serving.knative.dev/service"
# On a revision's private Service (and, copied by the EndpointSlice controller, on its EndpointSlices).
SERVICE_TYPE_LABEL = "networking.internal.knative.dev/serviceType"
PRIVATE_SERVICE_SELECTOR = f"{SERVICE_TYPE_LABEL}=Private"

# localsched's own: "false" keeps a revision off local scheduling (the standard path on every activator).
LOCAL_SCHEDULING_ANNOTATION = "localsched.dev/local-scheduling"
# Autoscaling annotations: the current spelling first, the legacy camelCase one second.
MAX_SCALE_ANNOTATION = "autoscaling.knative.dev/max-scale"
MAX_SCALE_ANNOTATION_LEGACY = "autoscaling.knative.dev/maxScale"
MIN_SCALE_ANNOTATION = "autoscaling.knative.dev/min-scale"
MIN_SCALE_ANNOTATION_LEGACY = "autoscaling.knative.dev/minScale"
INITIAL_SCALE_ANNOTATION = "autoscaling.knative.dev/initial-scale"
INITIAL_SCALE_ANNOTATION_LEGACY = "autoscaling.knative.dev/initialScale"
TARGET_ANNOTATION = "autoscaling.knative.dev/target"
TARGET_BURST_CAPACITY_ANNOTATION = "autoscaling.knative.dev/target-burst-capacity"
TARGET_BURST_CAPACITY_ANNOTATION_LEGACY = "autoscaling.knative.dev/targetBurstCapacity"
# The KPA's own annotations (knative/serving pkg/apis/autoscaling/register.go), read by the devcluster's autoscaler
# stand-in; the window and the retention period have no legacy spelling.
WINDOW_ANNOTATION = "autoscaling.knative.dev/window"
TARGET_UTILIZATION_ANNOTATION = "autoscaling.knative.dev/target-utilization-percentage"
TARGET_UTILIZATION_ANNOTATION_LEGACY = "autoscaling.knative.dev/targetUtilizationPercentage"
PANIC_WINDOW_PERCENTAGE_ANNOTATION = "autoscaling.knative.dev/panic-window-percentage"
PANIC_WINDOW_PERCENTAGE_ANNOTATION_LEGACY = "autoscaling.knative.dev/panicWindowPercentage"
PANIC_THRESHOLD_PERCENTAGE_ANNOTATION = "autoscaling.knative.dev/panic-threshold-percentage"
PANIC_THRESHOLD_PERCENTAGE_ANNOTATION_LEGACY = "autoscaling.knative.dev/panicThresholdPercentage"
SCALE_TO_ZERO_POD_RETENTION_ANNOTATION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"

# Request headers.
NAMESPACE_HEADER = "Knative-Serving-Namespace"
REVISION_HEADER = "Knative-Serving-Revision"
PROXY_HEADER = "K-Proxy-Request"
PROBE_HEADER = "K-Network-Probe"
ACTIVATOR_HEADER_VALUE = "activator"

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_CONTAINER_PORT = 8080
MAX_CONTAINER_CONCURRENCY = 1000
UNLIMITED_BURST_CAPACITY = -1.0

# The KPA's bounds (knative/serving pkg/apis/autoscaling/register.go): its windows, the smallest target, and the
# panic window and threshold as percentages.
WINDOW_MIN_SECONDS = 6.0
WINDOW_MAX_SECONDS = 3600.0
TARGET_MIN = 0.01
PANIC_WINDOW_PERCENTAGE_MIN = 1.0
PANIC_WINDOW_PERCENTAGE_MAX = 100.0
PANIC_THRESHOLD_PERCENTAGE_MIN = 110.0
PANIC_THRESHOLD_PERCENTAGE_MAX = 1000.0

# RevisionSpec fields that are not PodSpec fields (``template`` only appears in template-shaped objects).
_NON_POD_SPEC_FIELDS = frozenset(
    {"containerConcurrency", "timeoutSeconds", "idleTimeoutSeconds", "responseStartTimeoutSeconds", "template"}
)
_WHOLE_NUMBER = re.compile(r"\+?[0-9]+")
_DECIMAL_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_T = TypeVar("_T")


def deployment_name(rev: str) -> str:
    """The Deployment Knative creates for a revision."""
    return f"{rev}-deployment"


_PRIVATE_SUFFIX = "-private"


def private_service_name(rev: str) -> str:
    """The private Service selecting a revision's ready pods."""
    return f"{rev}{_PRIVATE_SUFFIX}"


def revision_of_private_service(service: str) -> str | None:
    """The revision whose private Service is named ``service`` (:func:`private_service_name` reversed), or None
    when ``service`` is not a private Service's name."""
    return service.removesuffix(_PRIVATE_SUFFIX) if service.endswith(_PRIVATE_SUFFIX) else None


def activation_endpoints_name(rev: str) -> str:
    """The EndpointSlice/Service endpointsctl publishes with a revision's chosen activators."""
    return f"{rev}-activationendpoints"


def revision_key_of(obj: Mapping[str, Any], labels: Sequence[str] = (REVISION_LABEL,)) -> list[str]:
    """``["namespace/revision"]`` from the first of ``labels`` that ``obj`` carries (by default Knative's revision
    label, which its pods, ReplicaSets and Deployments have), else ``[]``: the ``revision`` index of a watch cache."""
    meta = obj["metadata"]
    found = meta.get("labels") or {}
    name = next((found[label] for label in labels if found.get(label)), None)
    return [f"{meta['namespace']}/{name}"] if name else []


def _show(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


class KnativeValueError(ValueError):
    """A Knative setting with an invalid value; ``key`` and ``value`` say which, the message says why."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}: {_show(value)} is invalid: {reason}")


class RevisionSpecError(KnativeValueError):
    """A Revision annotation or spec field Knative would reject."""


class AutoscalerConfigError(KnativeValueError):
    """A ``config-autoscaler`` key Knative would reject."""


def _whole(key: str, value: object, error: type[KnativeValueError]) -> int:
    """A whole number >= 0 given as an int or a decimal string (``"3"``), as Knative's ``strconv.Atoi`` reads it."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        return int(value)
    raise error(key, value, "must be a whole number >= 0")


def _number(key: str, value: object, error: type[KnativeValueError], reason: str) -> float:
    """A finite decimal number given as an int, float or string; ``reason`` describes the allowed range."""
    if isinstance(value, str):
        if _DECIMAL_NUMBER.fullmatch(value) is None:
            raise error(key, value, reason)
        number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        number = float(value)
    else:
        raise error(key, value, reason)
    if not math.isfinite(number):  # "1e999" is well-formed but overflows
        raise error(key, value, reason)
    return number


def _scale(key: str, value: object) -> int:
    return _whole(key, value, RevisionSpecError)


def _target(key: str, value: object) -> float:
    target = _number(key, value, RevisionSpecError, "must be a number > 0")
    if target <= 0:
        raise RevisionSpecError(key, value, "must be a number > 0")
    return target


def _burst_capacity(key: str, value: object, error: type[KnativeValueError] = RevisionSpecError) -> float:
    reason = "must be a number >= 0, or -1 for unlimited"
    tbc = _number(key, value, error, reason)
    if tbc < 0 and tbc != UNLIMITED_BURST_CAPACITY:
        raise error(key, value, reason)
    return tbc


class _Setting(NamedTuple, Generic[_T]):
    key: str  # the spelling that was found
    raw: object
    value: _T


def _annotation(
    sources: Sequence[Mapping[str, Any]], keys: Sequence[str], parse: Callable[[str, object], _T]
) -> _Setting[_T] | None:
    """The first source holding any spelling of a setting wins; spellings there must agree once parsed."""
    for source in sources:
        found = [(key, source[key]) for key in keys if key in source]
        if not found:
            continue
        (key, raw), *others = found
        value = parse(key, raw)
        for other_key, other_raw in others:
            if parse(other_key, other_raw) != value:
                raise RevisionSpecError(
                    key, raw, f"conflicts with {other_key}: {_show(other_raw)}; set only one spelling"
                )
        return _Setting(key, raw, value)
    return None


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def _spec_int(spec: Mapping[str, Any], field: str, low: int, high: int | None = None) -> int | None:
    value = spec.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise RevisionSpecError(f"spec.{field}", value, f"must be an integer {bound}")
    return value


def _generation(metadata: Mapping[str, Any]) -> int:
    generation = metadata.get("generation") or 0
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise RevisionSpecError("metadata.generation", generation, "must be an integer")
    return generation


def _container_port(spec: Mapping[str, Any]) -> int:
    """The serving port: the first port of the first container declaring one (Knative allows only one)."""
    containers = spec.get("containers") or []
    for i, container in enumerate(containers):
        ports = (container.get("ports") or []) if isinstance(container, Mapping) else []
        if ports and isinstance(ports[0], Mapping) and "containerPort" in ports[0]:
            port = ports[0]["containerPort"]
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise RevisionSpecError(f"spec.containers[{i}].ports[0].containerPort", port, "must be 1..65535")
            return port
    return DEFAULT_CONTAINER_PORT


def _activator_capacity(key: str, value: object) -> float:
    capacity = _number(key, value, AutoscalerConfigError, "must be a number >= 1")
    if capacity < 1:
        raise AutoscalerConfigError(key, value, "must be a number >= 1")
    return capacity


def _target_default(key: str, value: object) -> float:
    target = _number(key, value, AutoscalerConfigError, "must be a number > 0")
    if target <= 0:
        raise AutoscalerConfigError(key, value, "must be a number > 0")
    return target


def _config_burst_capacity(key: str, value: object) -> float:
    return _burst_capacity(key, value, AutoscalerConfigError)


# AutoscalerConfig field -> (config-autoscaler key, parser).
_AUTOSCALER_KEYS: dict[str, tuple[str, Callable[[str, object], float]]] = {
    "target_burst_capacity": ("target-burst-capacity", _config_burst_capacity),
    "activator_capacity": ("activator-capacity", _activator_capacity),
    "container_concurrency_target_default": ("container-concurrency-target-default", _target_default),
}


@dataclass(frozen=True)
class AutoscalerConfig:
    """The ``config-autoscaler`` settings local scheduling and subsetting depend on, with Knative's defaults.

    Validated on construction: TBC >= 0 or -1 (unlimited), activator-capacity >= 1, the target default > 0.
    """

    target_burst_capacity: float = 211
    activator_capacity: float = 100
    container_concurrency_target_default: float = 100

    def __post_init__(self) -> None:
        for name, (key, parse) in _AUTOSCALER_KEYS.items():
            parse(key, getattr(self, name))

    @classmethod
    def from_configmap(cls, data: Mapping[str, str] | None) -> AutoscalerConfig:
        """Read the ConfigMap's ``data``; a missing map or key keeps the default, a bad value raises
        :class:`AutoscalerConfigError` naming the key and the value."""
        data = data or {}
        values = {name: parse(key, data[key]) for name, (key, parse) in _AUTOSCALER_KEYS.items() if key in data}
        return cls(**values)


@dataclass(frozen=True)
class Revision:
    """A ``serving.knative.dev/v1`` Revision, as much of it as the activator and endpointsctl need.

    ``pod_spec`` is the RevisionSpec without its Knative-only fields, i.e. the user's PodSpec (a private deep
    copy). ``max_scale`` 0 means unlimited, ``container_concurrency`` 0 means unbounded, and
    ``target_burst_capacity`` None means "use config-autoscaler" while -1 means unlimited (always proxy).
    Build it with :meth:`from_object`, which validates; the constructor trusts its arguments.
    """

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    max_scale: int = 0
    min_scale: int = 0
    initial_scale: int | None = None
    target: float | None = None
    target_burst_capacity: float | None = None
    pod_spec: dict[str, Any] = field(default_factory=dict)
    container_port: int = DEFAULT_CONTAINER_PORT
    local_scheduling: bool = True  # LOCAL_SCHEDULING_ANNOTATION "false": the activators never schedule it locally

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Revision:
        """Parse a Revision object; raise :class:`RevisionSpecError` naming the first invalid key and value.

        Autoscaling annotations come from ``metadata.annotations``; a setting absent there (in both spellings) is
        read from ``spec.template.metadata.annotations`` when the object has a template. For such
        template-shaped objects without ``spec.containers``, the revision spec is ``spec.template.spec``.
        """
        kind = obj.get("kind")
        if kind is not None and kind != REVISION_KIND:
            raise RevisionSpecError("kind", kind, f"must be {REVISION_KIND}")
        api_version = obj.get("apiVersion")
        if api_version is not None and api_version != REVISION_API_VERSION:
            raise RevisionSpecError("apiVersion", api_version, f"must be {REVISION_API_VERSION}")

        metadata = _mapping(obj, "metadata")
        for required in ("namespace", "name"):
            if not isinstance(metadata.get(required), str) or not metadata[required]:
                raise RevisionSpecError(f"metadata.{required}", metadata.get(required), "must be a non-empty string")
        spec = _mapping(obj, "spec")
        template = _mapping(spec, "template")
        if template and "containers" not in spec:
            spec = _mapping(template, "spec")
        annotations = dict(_mapping(metadata, "annotations"))
        template_annotations = dict(_mapping(_mapping(template, "metadata"), "annotations"))
        sources = (annotations, template_annotations)

        max_scale = _annotation(sources, (MAX_SCALE_ANNOTATION, MAX_SCALE_ANNOTATION_LEGACY), _scale)
        min_scale = _annotation(sources, (MIN_SCALE_ANNOTATION, MIN_SCALE_ANNOTATION_LEGACY), _scale)
        initial_scale = _annotation(sources, (INITIAL_SCALE_ANNOTATION, INITIAL_SCALE_ANNOTATION_LEGACY), _scale)
        target = _annotation(sources, (TARGET_ANNOTATION,), _target)
        tbc = _annotation(
            sources, (TARGET_BURST_CAPACITY_ANNOTATION, TARGET_BURST_CAPACITY_ANNOTATION_LEGACY), _burst_capacity
        )
        local = annotations.get(LOCAL_SCHEDULING_ANNOTATION, template_annotations.get(LOCAL_SCHEDULING_ANNOTATION))
        if local is not None and str(local).lower() not in ("true", "false"):
            raise RevisionSpecError(LOCAL_SCHEDULING_ANNOTATION, local, 'must be "true" or "false"')
        if min_scale and max_scale and 0 < max_scale.value < min_scale.value:
            raise RevisionSpecError(min_scale.key, min_scale.raw, f"must be <= {max_scale.key} ({max_scale.value})")

        return cls(
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=str(metadata.get("uid") or ""),
            resource_version=str(metadata.get("resourceVersion") or ""),
            generation=_generation(metadata),
            labels=dict(_mapping(metadata, "labels")),
            annotations={**template_annotations, **annotations},
            container_concurrency=_spec_int(spec, "containerConcurrency", 0, MAX_CONTAINER_CONCURRENCY) or 0,
            timeout_seconds=_spec_int(spec, "timeoutSeconds", 0) or DEFAULT_TIMEOUT_SECONDS,
            max_scale=max_scale.value if max_scale else 0,
            min_scale=min_scale.value if min_scale else 0,
            initial_scale=initial_scale.value if initial_scale else None,
            target=target.value if target else None,
            target_burst_capacity=tbc.value if tbc else None,
            pod_spec={k: copy.deepcopy(v) for k, v in spec.items() if k not in _NON_POD_SPEC_FIELDS},
            container_port=_container_port(spec),
            local_scheduling=local is None or str(local).lower() == "true",
        )

    @property
    def key(self) -> str:
        """``namespace/name``, the cache and queue key."""
        return f"{self.namespace}/{self.name}"

    @property
    def deployment_name(self) -> str:
        return deployment_name(self.name)

    @property
    def private_service_name(self) -> str:
        return private_service_name(self.name)

    @property
    def activation_endpoints_name(self) -> str:
        return activation_endpoints_name(self.name)

    def effective_target_burst_capacity(self, config: AutoscalerConfig) -> float:
        """The revision's TBC annotation, else config-autoscaler's; -1 means unlimited."""
        return config.target_burst_capacity if self.target_burst_capacity is None else self.target_burst_capacity

    def per_pod_capacity(self, config: AutoscalerConfig) -> float:
        """Requests one pod takes: containerConcurrency, else the target annotation, else the configured default."""
        if self.container_concurrency > 0:
            return float(self.container_concurrency)
        if self.target is not None:
            return self.target
        return config.container_concurrency_target_default


# -- KPA settings: the parsers the devcluster's autoscaler stand-in (devcluster/kpa.py) builds on --------------------

# Go's time.ParseDuration: a sign, then one or more decimal numbers each with a unit ("1m30s", "1.5h", ".5s").
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
                   "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}  # fmt: skip
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION = re.compile(rf"[+-]?(?:{_DURATION_PART.pattern})+")
# Go's strconv.ParseBool, which knative.dev/pkg's configmap.AsBool uses.
_BOOLEANS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
             "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}  # fmt: skip


def parse_duration(key: str, value: object, error: type[KnativeValueError] = AutoscalerConfigError) -> float:
    """A Go duration string (``"60s"``, ``"1m30s"``, ``"0"``) in seconds, as Knative reads config-autoscaler's
    windows and periods; ranges are the caller's to check. Anything else raises ``error`` naming ``key``."""
    if isinstance(value, str):
        if value in ("0", "+0", "-0"):
            return 0.0
        if _DURATION.fullmatch(value):
            seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value))
            return -seconds if value.startswith("-") else seconds
    raise error(key, value, 'must be a duration such as "60s" or "1m30s"')


def parse_bool(key: str, value: object, error: type[KnativeValueError] = AutoscalerConfigError) -> bool:
    """``"true"``/``"false"`` (and Go's other spellings: ``1``, ``t``, ``TRUE`` ...); anything else raises."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _BOOLEANS:
        return _BOOLEANS[value]
    raise error(key, value, 'must be "true" or "false"')


def parse_number(
    key: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_exclusive: bool = False,
    error: type[KnativeValueError] = AutoscalerConfigError,
) -> float:
    """A finite decimal number within ``[low, high]`` (``(low, high]`` when ``low_exclusive``); the error's reason
    states the range, so a user reading it knows what to write."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_exclusive else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    reason = "must be a number" + (" " + " and ".join(bounds) if bounds else "")
    number = _number(key, value, error, reason)
    too_low = low is not None and (number <= low if low_exclusive else number < low)
    if too_low or (high is not None and number > high):
        raise error(key, value, reason)
    return number


def parse_whole(key: str, value: object, error: type[KnativeValueError] = AutoscalerConfigError) -> int:
    """A whole number >= 0 (``"3"``), as Knative's ``strconv.Atoi`` reads scales."""
    return _whole(key, value, error)


def annotation_value(
    annotations: Mapping[str, Any], keys: Sequence[str], parse: Callable[[str, object], _T]
) -> _T | None:
    """The parsed value of the first spelling of an annotation present in ``annotations`` (None when none is);
    two spellings that disagree raise :class:`RevisionSpecError`, as :meth:`Revision.from_object` does."""
    setting = _annotation((annotations,), keys, parse)
    return None if setting is None else setting.value
