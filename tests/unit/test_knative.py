"""The Knative revision model reads Revisions and config-autoscaler as Knative does, and names what it rejects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localsched import knative
from localsched.knative import (
    AutoscalerConfig,
    AutoscalerConfigError,
    Revision,
    RevisionSpecError,
)

MAX_SCALE = "autoscaling.knative.dev/max-scale"
MAX_SCALE_LEGACY = "autoscaling.knative.dev/maxScale"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MIN_SCALE_LEGACY = "autoscaling.knative.dev/minScale"
INITIAL_SCALE = "autoscaling.knative.dev/initial-scale"
INITIAL_SCALE_LEGACY = "autoscaling.knative.dev/initialScale"
TARGET = "autoscaling.knative.dev/target"
TBC = "autoscaling.knative.dev/target-burst-capacity"
TBC_LEGACY = "autoscaling.knative.dev/targetBurstCapacity"

ALL_KEYS = [MAX_SCALE, MAX_SCALE_LEGACY, MIN_SCALE, MIN_SCALE_LEGACY, INITIAL_SCALE, INITIAL_SCALE_LEGACY]
ALL_KEYS += [TARGET, TBC, TBC_LEGACY]


def revision_object(
    annotations: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Revision as the API server returns it."""
    obj: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "namespace": "default",
            "name": "hello-00001",
            "uid": "0b7e-uid",
            "resourceVersion": "4711",
            "generation": 1,
            "labels": {"serving.knative.dev/configuration": "hello", "serving.knative.dev/service": "hello"},
            "annotations": annotations or {},
        },
        "spec": {
            "containerConcurrency": 0,
            "timeoutSeconds": 300,
            "containers": [{"name": "user-container", "image": "hello", "ports": [{"containerPort": 8080}]}],
            **spec,
        },
    }
    if template_annotations is not None:
        obj["spec"]["template"] = {"metadata": {"annotations": template_annotations}}
    return obj


def test_names_follow_the_knative_contract() -> None:
    assert knative.REVISION_LABEL == "serving.knative.dev/revision"
    assert knative.deployment_name("hello-00001") == "hello-00001-deployment"
    assert knative.private_service_name("hello-00001") == "hello-00001-private"
    assert knative.activation_endpoints_name("hello-00001") == "hello-00001-activationendpoints"
    assert knative.PRIVATE_SERVICE_SELECTOR == "networking.internal.knative.dev/serviceType=Private"


@pytest.mark.parametrize(
    ("service", "revision"),
    [
        pytest.param("hello-00001-private", "hello-00001", id="private-service"),
        pytest.param("hello-00001", None, id="public-service"),
        pytest.param("hello-00001-activationendpoints", None, id="our-output"),
    ],
)
def test_a_private_service_name_gives_back_its_revision(service: str, revision: str | None) -> None:
    assert knative.revision_of_private_service(service) == revision
    if revision is not None:
        assert knative.private_service_name(revision) == service


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({knative.REVISION_LABEL: "r-1"}, ["ns/r-1"], id="revision-label"),
        pytest.param({}, [], id="no-label"),
        pytest.param({knative.REVISION_LABEL: ""}, [], id="empty-label"),
        pytest.param({"other": "r-2"}, [], id="other-label-not-asked-for"),
    ],
)
def test_the_revision_index_keys_objects_by_namespace_and_revision_label(
    labels: dict[str, str], expected: list[str]
) -> None:
    assert knative.revision_key_of({"metadata": {"namespace": "ns", "name": "x", "labels": labels}}) == expected


def test_the_revision_index_takes_the_first_label_present() -> None:
    obj = {"metadata": {"namespace": "ns", "name": "x", "labels": {"other": "r-2"}}}

    assert knative.revision_key_of(obj, (knative.REVISION_LABEL, "other")) == ["ns/r-2"]


def test_annotation_constants_have_both_spellings() -> None:
    assert knative.MAX_SCALE_ANNOTATION == MAX_SCALE
    assert knative.MAX_SCALE_ANNOTATION_LEGACY == MAX_SCALE_LEGACY
    assert knative.MIN_SCALE_ANNOTATION == MIN_SCALE
    assert knative.MIN_SCALE_ANNOTATION_LEGACY == MIN_SCALE_LEGACY
    assert knative.INITIAL_SCALE_ANNOTATION == INITIAL_SCALE
    assert knative.INITIAL_SCALE_ANNOTATION_LEGACY == INITIAL_SCALE_LEGACY
    assert knative.TARGET_ANNOTATION == TARGET
    assert knative.TARGET_BURST_CAPACITY_ANNOTATION == TBC
    assert knative.TARGET_BURST_CAPACITY_ANNOTATION_LEGACY == TBC_LEGACY


def test_revision_without_annotations_takes_knative_defaults() -> None:
    rev = Revision.from_object(revision_object())
    assert rev.namespace == "default"
    assert rev.name == "hello-00001"
    assert rev.uid == "0b7e-uid"
    assert rev.resource_version == "4711"
    assert rev.generation == 1
    assert rev.labels["serving.knative.dev/service"] == "hello"
    assert rev.container_concurrency == 0
    assert rev.timeout_seconds == 300
    assert (rev.max_scale, rev.min_scale, rev.initial_scale) == (0, 0, None)
    assert rev.target is None
    assert rev.target_burst_capacity is None
    assert rev.container_port == 8080


def test_revision_names_derive_from_its_name() -> None:
    rev = Revision.from_object(revision_object())
    assert rev.key == "default/hello-00001"
    assert rev.deployment_name == "hello-00001-deployment"
    assert rev.private_service_name == "hello-00001-private"
    assert rev.activation_endpoints_name == "hello-00001-activationendpoints"


@pytest.mark.parametrize(
    ("key", "raw", "field", "expected"),
    [
        pytest.param(MAX_SCALE, "5", "max_scale", 5, id="max-scale"),
        pytest.param(MAX_SCALE_LEGACY, "5", "max_scale", 5, id="maxScale"),
        pytest.param(MIN_SCALE, "2", "min_scale", 2, id="min-scale"),
        pytest.param(MIN_SCALE_LEGACY, "2", "min_scale", 2, id="minScale"),
        pytest.param(INITIAL_SCALE, "0", "initial_scale", 0, id="initial-scale"),
        pytest.param(INITIAL_SCALE_LEGACY, "3", "initial_scale", 3, id="initialScale"),
        pytest.param(TARGET, "2.5", "target", 2.5, id="target"),
        pytest.param(TBC, "50", "target_burst_capacity", 50.0, id="target-burst-capacity"),
        pytest.param(TBC_LEGACY, "50", "target_burst_capacity", 50.0, id="targetBurstCapacity"),
        pytest.param(TBC, "-1", "target_burst_capacity", -1.0, id="target-burst-capacity-unlimited"),
        pytest.param(TBC_LEGACY, "-1", "target_burst_capacity", -1.0, id="targetBurstCapacity-unlimited"),
        pytest.param(TBC, "0", "target_burst_capacity", 0.0, id="target-burst-capacity-zero"),
        pytest.param(MAX_SCALE, "0", "max_scale", 0, id="max-scale-zero-is-unlimited"),
    ],
)
def test_each_annotation_is_read_in_either_spelling(key: str, raw: str, field: str, expected: object) -> None:
    rev = Revision.from_object(revision_object({key: raw}))
    assert getattr(rev, field) == expected


@pytest.mark.parametrize("key", [pytest.param(key, id=key.rsplit("/", 1)[1]) for key in ALL_KEYS])
@pytest.mark.parametrize("raw", [pytest.param("-3", id="negative"), pytest.param("abc", id="not-a-number")])
def test_every_annotation_rejects_bad_value_naming_key_and_value(key: str, raw: str) -> None:
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(revision_object({key: raw}))
    assert caught.value.key == key
    assert caught.value.value == raw
    assert f'{key}: "{raw}" is invalid' in str(caught.value)


def test_max_scale_rejects_negative_value_naming_key() -> None:
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(revision_object({MAX_SCALE: "-3"}))
    assert str(caught.value) == 'autoscaling.knative.dev/max-scale: "-3" is invalid: must be a whole number >= 0'


@pytest.mark.parametrize(
    "key",
    [pytest.param(key, id=key.rsplit("/", 1)[1]) for key in ALL_KEYS if "Scale" in key or "scale" in key],
)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("1.5", id="fraction"),
        pytest.param("", id="empty"),
        pytest.param(" 3", id="leading-space"),
        pytest.param("1e3", id="exponent"),
    ],
)
def test_scale_annotations_reject_anything_but_whole_numbers(key: str, raw: str) -> None:
    with pytest.raises(RevisionSpecError, match=key):
        Revision.from_object(revision_object({key: raw}))


@pytest.mark.parametrize(
    "raw",
    [pytest.param("0", id="zero"), pytest.param("nan", id="nan"), pytest.param("inf", id="infinity")],
)
def test_target_must_be_a_positive_finite_number(raw: str) -> None:
    with pytest.raises(RevisionSpecError, match=f'{TARGET}: "{raw}"'):
        Revision.from_object(revision_object({TARGET: raw}))


@pytest.mark.parametrize("raw", [pytest.param("-0.5", id="fraction-below-zero"), pytest.param("-2", id="minus-two")])
def test_target_burst_capacity_allows_only_minus_one_below_zero(raw: str) -> None:
    with pytest.raises(RevisionSpecError, match="or -1 for unlimited"):
        Revision.from_object(revision_object({TBC: raw}))


@pytest.mark.parametrize(
    ("current", "legacy"),
    [
        pytest.param(MAX_SCALE, MAX_SCALE_LEGACY, id="max-scale"),
        pytest.param(MIN_SCALE, MIN_SCALE_LEGACY, id="min-scale"),
        pytest.param(INITIAL_SCALE, INITIAL_SCALE_LEGACY, id="initial-scale"),
        pytest.param(TBC, TBC_LEGACY, id="target-burst-capacity"),
    ],
)
def test_both_spellings_with_different_values_are_rejected_naming_both_keys(current: str, legacy: str) -> None:
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(revision_object({current: "1", legacy: "2"}))
    assert caught.value.key == current
    assert current in str(caught.value)
    assert legacy in str(caught.value)


def test_both_spellings_with_the_same_value_are_accepted() -> None:
    rev = Revision.from_object(revision_object({MAX_SCALE: "4", MAX_SCALE_LEGACY: "04", TBC: "10", TBC_LEGACY: "10"}))
    assert rev.max_scale == 4
    assert rev.target_burst_capacity == 10


def test_annotations_fall_back_to_the_template() -> None:
    rev = Revision.from_object(revision_object({}, {MAX_SCALE_LEGACY: "7", TARGET: "20"}))
    assert rev.max_scale == 7
    assert rev.target == 20
    assert rev.annotations[MAX_SCALE_LEGACY] == "7"


def test_revision_annotations_win_over_the_template_per_setting() -> None:
    rev = Revision.from_object(revision_object({MAX_SCALE: "3"}, {MAX_SCALE_LEGACY: "9", MIN_SCALE: "1"}))
    assert rev.max_scale == 3
    assert rev.min_scale == 1


def test_template_annotations_are_validated_too() -> None:
    with pytest.raises(RevisionSpecError, match=f'{MIN_SCALE_LEGACY}: "abc"'):
        Revision.from_object(revision_object({}, {MIN_SCALE_LEGACY: "abc"}))


def test_min_scale_above_max_scale_is_rejected_naming_both() -> None:
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(revision_object({MIN_SCALE_LEGACY: "5", MAX_SCALE: "3"}))
    assert caught.value.key == MIN_SCALE_LEGACY
    assert caught.value.value == "5"
    assert MAX_SCALE in str(caught.value)


def test_min_scale_is_free_when_max_scale_is_unlimited() -> None:
    rev = Revision.from_object(revision_object({MIN_SCALE: "5", MAX_SCALE: "0"}))
    assert (rev.min_scale, rev.max_scale) == (5, 0)


@pytest.mark.parametrize(
    ("spec", "concurrency", "timeout"),
    [
        pytest.param({"containerConcurrency": 10, "timeoutSeconds": 60}, 10, 60, id="explicit"),
        pytest.param({"containerConcurrency": 1000}, 1000, 300, id="concurrency-at-the-limit"),
        pytest.param({"containerConcurrency": None, "timeoutSeconds": None}, 0, 300, id="nulls-are-defaults"),
        pytest.param({"timeoutSeconds": 0}, 0, 300, id="zero-timeout-is-the-default"),
    ],
)
def test_spec_concurrency_and_timeout_are_read(spec: dict[str, Any], concurrency: int, timeout: int) -> None:
    rev = Revision.from_object(revision_object(**spec))
    assert (rev.container_concurrency, rev.timeout_seconds) == (concurrency, timeout)


def test_absent_spec_fields_take_defaults() -> None:
    obj = revision_object()
    del obj["spec"]["containerConcurrency"], obj["spec"]["timeoutSeconds"]
    rev = Revision.from_object(obj)
    assert (rev.container_concurrency, rev.timeout_seconds) == (0, 300)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("containerConcurrency", -1, id="negative-concurrency"),
        pytest.param("containerConcurrency", 1001, id="concurrency-over-1000"),
        pytest.param("containerConcurrency", "10", id="concurrency-as-string"),
        pytest.param("containerConcurrency", True, id="concurrency-as-boolean"),
        pytest.param("timeoutSeconds", -1, id="negative-timeout"),
        pytest.param("timeoutSeconds", 1.5, id="fractional-timeout"),
    ],
)
def test_bad_spec_fields_are_rejected_naming_the_field(field: str, value: object) -> None:
    obj = revision_object()
    obj["spec"][field] = value
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(obj)
    assert caught.value.key == f"spec.{field}"
    assert caught.value.value == value


def test_pod_spec_is_the_spec_without_knative_fields_and_is_a_private_copy() -> None:
    obj = revision_object(idleTimeoutSeconds=0, responseStartTimeoutSeconds=10, serviceAccountName="sa")
    rev = Revision.from_object(obj)
    assert rev.pod_spec == {"containers": copy.deepcopy(obj["spec"]["containers"]), "serviceAccountName": "sa"}
    obj["spec"]["containers"][0]["image"] = "changed"
    assert rev.pod_spec["containers"][0]["image"] == "hello"


def test_template_shaped_object_takes_its_pod_spec_from_the_template() -> None:
    obj = revision_object()
    spec = obj["spec"]
    obj["spec"] = {"template": {"metadata": {"annotations": {MAX_SCALE: "2"}}, "spec": spec}}
    rev = Revision.from_object(obj)
    assert rev.max_scale == 2
    assert rev.pod_spec == {"containers": spec["containers"]}
    assert "template" not in rev.pod_spec


@pytest.mark.parametrize(
    ("containers", "port"),
    [
        pytest.param([{"name": "app", "ports": [{"containerPort": 9000}, {"containerPort": 9001}]}], 9000, id="first"),
        pytest.param([{"name": "app"}], 8080, id="no-port-is-8080"),
        pytest.param([{"name": "app", "ports": []}], 8080, id="empty-ports-is-8080"),
        pytest.param([{"name": "side"}, {"name": "app", "ports": [{"containerPort": 7000}]}], 7000, id="sidecar-first"),
    ],
)
def test_container_port_is_the_serving_containers_first_port(containers: list[dict[str, Any]], port: int) -> None:
    assert Revision.from_object(revision_object(containers=containers)).container_port == port


def test_invalid_container_port_is_rejected_naming_the_path() -> None:
    with pytest.raises(RevisionSpecError, match=r"spec\.containers\[0\]\.ports\[0\]\.containerPort: \"80\""):
        Revision.from_object(revision_object(containers=[{"ports": [{"containerPort": "80"}]}]))


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        pytest.param(("kind",), "Service", "kind", id="wrong-kind"),
        pytest.param(("apiVersion",), "serving.knative.dev/v1alpha1", "apiVersion", id="wrong-version"),
        pytest.param(("metadata", "name"), "", "metadata.name", id="empty-name"),
        pytest.param(("metadata", "namespace"), None, "metadata.namespace", id="missing-namespace"),
        pytest.param(("metadata", "generation"), "1", "metadata.generation", id="string-generation"),
    ],
)
def test_objects_that_are_not_valid_revisions_are_rejected(path: tuple[str, ...], value: object, key: str) -> None:
    obj = revision_object()
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(RevisionSpecError) as caught:
        Revision.from_object(obj)
    assert caught.value.key == key


def test_list_items_without_kind_and_api_version_are_accepted() -> None:
    obj = revision_object()
    del obj["kind"], obj["apiVersion"]
    assert Revision.from_object(obj).name == "hello-00001"


def test_revision_spec_error_is_a_value_error() -> None:
    assert issubclass(RevisionSpecError, ValueError)
    assert issubclass(AutoscalerConfigError, ValueError)


@pytest.mark.parametrize(
    ("annotations", "config", "expected"),
    [
        pytest.param({}, AutoscalerConfig(), 211, id="default-from-config"),
        pytest.param({}, AutoscalerConfig(target_burst_capacity=-1), -1, id="config-unlimited"),
        pytest.param({TBC: "0"}, AutoscalerConfig(), 0, id="annotation-zero-wins"),
        pytest.param({TBC_LEGACY: "-1"}, AutoscalerConfig(target_burst_capacity=50), -1, id="annotation-unlimited"),
    ],
)
def test_effective_target_burst_capacity_prefers_the_annotation(
    annotations: dict[str, str], config: AutoscalerConfig, expected: float
) -> None:
    assert Revision.from_object(revision_object(annotations)).effective_target_burst_capacity(config) == expected


@pytest.mark.parametrize(
    ("annotations", "concurrency", "expected"),
    [
        pytest.param({TARGET: "7"}, 10, 10, id="container-concurrency-first"),
        pytest.param({TARGET: "7"}, 0, 7, id="then-target"),
        pytest.param({}, 0, 30, id="then-config-default"),
    ],
)
def test_per_pod_capacity_prefers_concurrency_then_target_then_default(
    annotations: dict[str, str], concurrency: int, expected: float
) -> None:
    rev = Revision.from_object(revision_object(annotations, containerConcurrency=concurrency))
    assert rev.per_pod_capacity(AutoscalerConfig(container_concurrency_target_default=30)) == expected


@pytest.mark.parametrize("data", [pytest.param(None, id="missing-map"), pytest.param({}, id="empty-map")])
def test_autoscaler_config_defaults_match_knative(data: dict[str, str] | None) -> None:
    config = AutoscalerConfig.from_configmap(data)
    assert config == AutoscalerConfig(211, 100, 100)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"target-burst-capacity": "50"}, AutoscalerConfig(target_burst_capacity=50), id="tbc"),
        pytest.param({"target-burst-capacity": "-1"}, AutoscalerConfig(target_burst_capacity=-1), id="tbc-unlimited"),
        pytest.param({"target-burst-capacity": "0"}, AutoscalerConfig(target_burst_capacity=0), id="tbc-zero"),
        pytest.param({"activator-capacity": "25.5"}, AutoscalerConfig(activator_capacity=25.5), id="activator"),
        pytest.param({"activator-capacity": "1"}, AutoscalerConfig(activator_capacity=1), id="activator-minimum"),
        pytest.param(
            {"container-concurrency-target-default": "10"},
            AutoscalerConfig(container_concurrency_target_default=10),
            id="target-default",
        ),
        pytest.param({"stable-window": "60s", "enable-scale-to-zero": "true"}, AutoscalerConfig(), id="other-keys"),
    ],
)
def test_autoscaler_config_reads_overrides(data: dict[str, str], expected: AutoscalerConfig) -> None:
    assert AutoscalerConfig.from_configmap(data) == expected


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        pytest.param("target-burst-capacity", "-3", id="tbc-negative"),
        pytest.param("target-burst-capacity", "abc", id="tbc-not-a-number"),
        pytest.param("activator-capacity", "0.5", id="activator-below-one"),
        pytest.param("activator-capacity", "abc", id="activator-not-a-number"),
        pytest.param("container-concurrency-target-default", "0", id="target-default-zero"),
        pytest.param("container-concurrency-target-default", "-3", id="target-default-negative"),
        pytest.param("container-concurrency-target-default", "", id="target-default-empty"),
    ],
)
def test_autoscaler_config_rejects_bad_value_naming_key_and_value(key: str, raw: str) -> None:
    with pytest.raises(AutoscalerConfigError) as caught:
        AutoscalerConfig.from_configmap({key: raw})
    assert (caught.value.key, caught.value.value) == (key, raw)
    assert f'{key}: "{raw}" is invalid' in str(caught.value)


def test_autoscaler_config_validates_direct_construction() -> None:
    with pytest.raises(AutoscalerConfigError, match="activator-capacity"):
        AutoscalerConfig(activator_capacity=0)


@pytest.mark.parametrize(("value", "local"), [(None, True), ("true", True), ("False", False), ("false", False)])
def test_the_local_scheduling_annotation_is_true_or_false(value: str | None, local: bool) -> None:
    annotations = {} if value is None else {knative.LOCAL_SCHEDULING_ANNOTATION: value}
    assert Revision.from_object(revision_object(annotations)).local_scheduling is local


@pytest.mark.parametrize("value", ["maybe", "0", "no", ""])
def test_any_other_local_scheduling_value_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(RevisionSpecError, match=r"localsched\.dev/local-scheduling"):
        Revision.from_object(revision_object({knative.LOCAL_SCHEDULING_ANNOTATION: value}))
