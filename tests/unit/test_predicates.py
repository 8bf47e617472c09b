"""Scheduling predicates decide like kube-scheduler's filter stage and say why a node is filtered out."""

from __future__ import annotations

from typing import Any

import pytest

from localsched.predicates import (
    Reason,
    Resources,
    filter_local,
    matches_node_selector,
    matches_required_node_affinity,
    node_allocatable,
    node_eligible,
    node_is_ready,
    pod_requests,
    resources_fit,
    tolerates,
    unsupported_constraint,
    untolerated_taint,
)

GI = 2**30
MI = 2**20


def make_node(
    name: str = "node-a",
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    ready: str = "True",
    unschedulable: bool = False,
    allocatable: dict[str, str] | None = None,
    capacity: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
            "allocatable": allocatable if allocatable is not None else {"cpu": "2", "memory": "4Gi", "pods": "10"},
            "capacity": capacity or {},
        },
    }


def container(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "image": "app", "resources": {"requests": requests}, **extra}


def make_pod_spec(cpu: str | None = "250m", memory: str | None = "1Gi", **extra: Any) -> dict[str, Any]:
    return {"containers": [container(cpu, memory)], **extra}


def running_pod(cpu: str | None = "250m", memory: str | None = "1Gi", phase: str = "Running") -> dict[str, Any]:
    return {"spec": make_pod_spec(cpu, memory), "status": {"phase": phase}}


# -- readiness ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "ready"),
    [
        pytest.param(make_node(ready="True"), True, id="ready"),
        pytest.param(make_node(ready="False"), False, id="not-ready"),
        pytest.param(make_node(ready="Unknown"), False, id="unknown"),
        pytest.param({"metadata": {"name": "n"}, "status": {"conditions": None}}, False, id="no-conditions"),
        pytest.param({}, False, id="empty-object"),
    ],
)
def test_node_is_ready_only_when_ready_condition_is_true(node: dict[str, Any], ready: bool) -> None:
    assert node_is_ready(node) is ready


# -- taints and tolerations ---------------------------------------------------------------------------------------

TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        pytest.param({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}, True, id="eq"),
        pytest.param({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, True, id="default-operator-equal"),
        pytest.param({"key": "dedicated", "operator": "Equal", "value": "cpu"}, False, id="equal-other-value"),
        pytest.param({"key": "dedicated", "operator": "Equal"}, False, id="equal-without-value"),
        pytest.param({"key": "dedicated", "operator": "Exists"}, True, id="exists-any-value"),
        pytest.param({"key": "other", "operator": "Exists"}, False, id="exists-other-key"),
        pytest.param({"operator": "Exists"}, True, id="empty-key-exists-tolerates-everything"),
        pytest.param({"key": "", "operator": "Exists", "effect": "NoExecute"}, False, id="empty-key-other-effect"),
        pytest.param({"key": "dedicated", "operator": "Exists", "effect": ""}, True, id="empty-effect-matches-all"),
        pytest.param({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, False, id="other-effect"),
        pytest.param({"key": "dedicated", "operator": "Gt", "value": "gpu"}, False, id="unknown-operator"),
    ],
)
def test_tolerates_follows_kube_operator_and_effect_rules(toleration: dict[str, Any], expected: bool) -> None:
    assert tolerates(toleration, TAINT) is expected


def test_equal_toleration_without_value_tolerates_taint_without_value() -> None:
    assert tolerates({"key": "k", "operator": "Equal"}, {"key": "k", "effect": "NoExecute"})


@pytest.mark.parametrize(
    ("taints", "tolerations", "untolerated"),
    [
        pytest.param([], [], None, id="no-taints"),
        pytest.param([TAINT], [], TAINT, id="no-schedule-untolerated"),
        pytest.param([{"key": "k", "effect": "NoExecute"}], [], {"key": "k", "effect": "NoExecute"}, id="no-execute"),
        pytest.param([{"key": "k", "effect": "PreferNoSchedule"}], [], None, id="prefer-no-schedule-ignored"),
        pytest.param([TAINT], [{"key": "dedicated", "operator": "Exists"}], None, id="tolerated"),
        pytest.param(
            [{"key": "a", "effect": "PreferNoSchedule"}, TAINT, {"key": "b", "effect": "NoExecute"}],
            [{"key": "b", "operator": "Exists"}],
            TAINT,
            id="first-untolerated-is-reported",
        ),
    ],
)
def test_untolerated_taint_considers_only_no_schedule_and_no_execute(
    taints: list[dict[str, Any]], tolerations: list[dict[str, Any]], untolerated: dict[str, Any] | None
) -> None:
    assert untolerated_taint(make_node(taints=taints), {"tolerations": tolerations}) == untolerated


# -- node selector and affinity -----------------------------------------------------------------------------------

ZONED = make_node(labels={"zone": "a", "disk": "ssd", "cores": "8"})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param(None, True, id="no-selector"),
        pytest.param({}, True, id="empty-selector"),
        pytest.param({"zone": "a"}, True, id="subset"),
        pytest.param({"zone": "a", "disk": "ssd"}, True, id="all-match"),
        pytest.param({"zone": "b"}, False, id="other-value"),
        pytest.param({"zone": "a", "gpu": "yes"}, False, id="missing-label"),
    ],
)
def test_node_selector_must_be_a_subset_of_node_labels(selector: dict[str, str] | None, expected: bool) -> None:
    assert matches_node_selector(ZONED, {"nodeSelector": selector}) is expected


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": list(terms)}
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}}


def req(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def expr(*requirements: dict[str, Any]) -> dict[str, Any]:
    """A node selector term whose requirements are ANDed."""
    return {"matchExpressions": list(requirements)}


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        pytest.param({}, True, id="no-affinity"),
        pytest.param({"affinity": {"nodeAffinity": {}}}, True, id="no-required-affinity"),
        pytest.param(affinity(expr(req("zone", "In", "a", "b"))), True, id="in"),
        pytest.param(affinity(expr(req("zone", "In", "b", "c"))), False, id="in-other-values"),
        pytest.param(affinity(expr(req("rack", "In", "a"))), False, id="in-missing-label"),
        pytest.param(affinity(expr(req("zone", "NotIn", "b"))), True, id="not-in"),
        pytest.param(affinity(expr(req("zone", "NotIn", "a"))), False, id="not-in-listed"),
        pytest.param(affinity(expr(req("rack", "NotIn", "a"))), True, id="not-in-missing-label-matches"),
        pytest.param(affinity(expr(req("disk", "Exists"))), True, id="exists"),
        pytest.param(affinity(expr(req("gpu", "Exists"))), False, id="exists-missing"),
        pytest.param(affinity(expr(req("gpu", "DoesNotExist"))), True, id="does-not-exist"),
        pytest.param(affinity(expr(req("disk", "DoesNotExist"))), False, id="does-not-exist-present"),
        pytest.param(affinity(expr(req("cores", "Gt", "4"))), True, id="gt"),
        pytest.param(affinity(expr(req("cores", "Gt", "8"))), False, id="gt-equal-is-false"),
        pytest.param(affinity(expr(req("cores", "Lt", "16"))), True, id="lt"),
        pytest.param(affinity(expr(req("cores", "Lt", "8"))), False, id="lt-equal-is-false"),
        pytest.param(affinity(expr(req("zone", "Gt", "1"))), False, id="gt-non-integer-label"),
        pytest.param(affinity(expr(req("cores", "Gt", "x"))), False, id="gt-non-integer-value"),
        pytest.param(affinity(expr(req("cores", "Gt", "1", "2"))), False, id="gt-two-values"),
        pytest.param(affinity(expr(req("gpu", "Lt", "1"))), False, id="lt-missing-label"),
        pytest.param(affinity(expr(req("zone", "Near", "a"))), False, id="unknown-operator"),
        pytest.param(affinity(expr(req("zone", "In", "b")), expr(req("disk", "In", "ssd"))), True, id="terms-are-ored"),
        pytest.param(affinity(expr(req("zone", "In", "a"), req("disk", "Exists"))), True, id="all-expressions-match"),
        pytest.param(
            affinity(expr(req("zone", "In", "a"), req("gpu", "Exists"))),
            False,
            id="expressions-are-anded",
        ),
        pytest.param(affinity(), False, id="empty-term-list-matches-nothing"),
        pytest.param(affinity({}), False, id="empty-term-matches-nothing"),
        pytest.param(
            affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}),
            True,
            id="match-fields-node-name",
        ),
        pytest.param(
            affinity({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-a"]}]}),
            False,
            id="match-fields-excludes-node-name",
        ),
        pytest.param(
            affinity(
                {
                    "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}],
                }
            ),
            False,
            id="fields-and-expressions-are-anded",
        ),
    ],
)
def test_required_node_affinity_evaluates_terms_like_kube(pod_spec: dict[str, Any], expected: bool) -> None:
    assert matches_required_node_affinity(ZONED, pod_spec) is expected


# -- resources ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        pytest.param(make_pod_spec("250m", "1Gi"), Resources(250, GI, 1), id="one-container"),
        pytest.param(make_pod_spec(None, None), Resources(0, 0, 1), id="no-requests"),
        pytest.param({"containers": []}, Resources(0, 0, 1), id="no-containers"),
        pytest.param(
            {"containers": [container("250m", "1Gi"), container("0.5", "512Mi")]},
            Resources(750, GI + 512 * MI, 1),
            id="containers-are-summed",
        ),
        pytest.param(
            {"containers": [container("250m", "1Gi")], "initContainers": [container("1", "100Mi")]},
            Resources(1000, GI, 1),
            id="init-container-raises-cpu-only",
        ),
        pytest.param(
            {"containers": [container("1", "1Gi")], "initContainers": [container("2", None), container(None, "2Gi")]},
            Resources(2000, 2 * GI, 1),
            id="max-over-each-init-container",
        ),
        pytest.param(
            {
                "containers": [container("250m", "1Gi")],
                "initContainers": [container("100m", "64Mi", restartPolicy="Always"), container("1", None)],
            },
            Resources(1100, GI + 64 * MI, 1),
            id="sidecar-init-container-adds-and-stays-during-later-inits",
        ),
        pytest.param(
            make_pod_spec("250m", "1Gi", overhead={"cpu": "100m", "memory": "64Mi"}),
            Resources(350, GI + 64 * MI, 1),
            id="overhead-is-added",
        ),
        pytest.param(
            {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            Resources(1000, GI, 1),
            id="limits-without-requests-default-requests",
        ),
        pytest.param(
            {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]},
            Resources(100, 0, 1),
            id="requests-win-over-limits",
        ),
    ],
)
def test_pod_requests_add_containers_max_init_containers_and_overhead(
    pod_spec: dict[str, Any], expected: Resources
) -> None:
    assert pod_requests(pod_spec) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({"allocatable": {"cpu": "1900m", "memory": "3Gi", "pods": "110"}}, Resources(1900, 3 * GI, 110)),
        pytest.param(
            {"allocatable": {"cpu": "1"}, "capacity": {"cpu": "2", "memory": "1Gi", "pods": "5"}},
            Resources(1000, GI, 5),
            id="capacity-fills-missing-allocatable",
        ),
        pytest.param({}, Resources(0, 0, 0), id="nothing-reported-is-nothing"),
    ],
)
def test_node_allocatable_prefers_allocatable_over_capacity(status: dict[str, Any], expected: Resources) -> None:
    assert node_allocatable({"status": status}) == expected


SMALL = make_node(allocatable={"cpu": "1", "memory": "2Gi", "pods": "3"})


@pytest.mark.parametrize(
    ("pods_on_node", "pod_spec", "expected"),
    [
        pytest.param([], make_pod_spec("1", "2Gi"), None, id="exactly-fills-empty-node"),
        pytest.param([running_pod("500m", "1Gi")], make_pod_spec("500m", "1Gi"), None, id="exactly-fills"),
        pytest.param([running_pod("750m", "1Gi")], make_pod_spec("250m", "1Gi"), None, id="250m-fits"),
        pytest.param([running_pod("800m", "1Gi")], make_pod_spec("250m", "1Gi"), Reason.INSUFFICIENT_CPU, id="cpu"),
        pytest.param([running_pod("1m", "1Gi")], make_pod_spec("1m", "1025Mi"), Reason.INSUFFICIENT_MEMORY, id="mem"),
        pytest.param([running_pod("1", "2Gi")], make_pod_spec("1", "2Gi"), Reason.INSUFFICIENT_CPU, id="cpu-first"),
        pytest.param(
            [running_pod(None, None), running_pod(None, None), running_pod(None, None)],
            make_pod_spec(None, None),
            Reason.TOO_MANY_PODS,
            id="pod-count",
        ),
        pytest.param(
            [running_pod("1", "2Gi", phase="Succeeded"), running_pod("1", "2Gi", phase="Failed")],
            make_pod_spec("1", "2Gi"),
            None,
            id="terminal-pods-not-counted",
        ),
        pytest.param(
            [running_pod("1", "2Gi", phase="Succeeded")] * 3, make_pod_spec(), None, id="terminal-pods-free-pod-slots"
        ),
        pytest.param([running_pod("1", "1Gi", phase="Pending")], make_pod_spec(), Reason.INSUFFICIENT_CPU, id="pend"),
        pytest.param(
            [{"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, **running_pod("1", "1Gi")}],
            make_pod_spec(),
            Reason.INSUFFICIENT_CPU,
            id="terminating-pods-still-count",
        ),
        pytest.param(
            [running_pod("2", "4Gi")],
            make_pod_spec(None, None),
            None,
            id="best-effort-pod-fits-overcommitted-node",
        ),
        pytest.param(
            [running_pod("2", "1Gi")],
            make_pod_spec(None, "1Gi"),
            None,
            id="unrequested-resource-never-fails",
        ),
    ],
)
def test_resources_fit_counts_non_terminal_pods_against_allocatable(
    pods_on_node: list[dict[str, Any]], pod_spec: dict[str, Any], expected: Reason | None
) -> None:
    assert resources_fit(SMALL, pods_on_node, pod_spec) == expected


def test_resources_fit_accepts_a_generator_of_pods() -> None:
    assert resources_fit(SMALL, (running_pod("100m", "1Mi") for _ in range(2)), make_pod_spec()) is None


# -- unsupported constraints --------------------------------------------------------------------------------------

SPREAD = {"topologyKey": "zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}
POD_AFFINITY_TERM = {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}


@pytest.mark.parametrize(
    ("pod_spec", "fragment"),
    [
        pytest.param({}, None, id="plain-pod"),
        pytest.param(
            {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [POD_AFFINITY_TERM]}}},
            "required pod affinity",
            id="required-pod-affinity",
        ),
        pytest.param(
            {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [POD_AFFINITY_TERM]}}},
            "required pod anti-affinity",
            id="required-pod-anti-affinity",
        ),
        pytest.param(
            {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}}},
            None,
            id="preferred-pod-affinity-is-fine",
        ),
        pytest.param(
            {"topologySpreadConstraints": [SPREAD]},
            "topology spread",
            id="do-not-schedule-spread",
        ),
        pytest.param(
            {"topologySpreadConstraints": [{**SPREAD, "whenUnsatisfiable": "ScheduleAnyway"}]},
            None,
            id="schedule-anyway-spread-is-fine",
        ),
        pytest.param(
            {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]},
            "PersistentVolumeClaim",
            id="pvc-volume",
        ),
        pytest.param(
            {"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}}]},
            "PersistentVolumeClaim",
            id="generic-ephemeral-volume",
        ),
        pytest.param({"volumes": [{"name": "tmp", "emptyDir": {}}]}, None, id="empty-dir-is-fine"),
    ],
)
def test_unsupported_constraint_describes_what_local_scheduling_cannot_evaluate(
    pod_spec: dict[str, Any], fragment: str | None
) -> None:
    description = unsupported_constraint(pod_spec)
    if fragment is None:
        assert description is None
    else:
        assert description is not None
        assert fragment in description


# -- node_eligible and filter_local: each reason ------------------------------------------------------------------

TOLERATE_ALL = [{"operator": "Exists"}]


@pytest.mark.parametrize(
    ("node", "pod_spec", "expected"),
    [
        pytest.param(make_node(), make_pod_spec(), None, id="eligible"),
        pytest.param(make_node(ready="False"), make_pod_spec(), Reason.NODE_NOT_READY, id="not-ready"),
        pytest.param(make_node(unschedulable=True), make_pod_spec(), Reason.NODE_UNSCHEDULABLE, id="cordoned"),
        pytest.param(
            make_node(unschedulable=True),
            make_pod_spec(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
            None,
            id="cordon-tolerated-like-kube",
        ),
        pytest.param(make_node(taints=[TAINT]), make_pod_spec(), Reason.TAINT_NOT_TOLERATED, id="taint"),
        pytest.param(make_node(taints=[TAINT]), make_pod_spec(tolerations=TOLERATE_ALL), None, id="taint-tolerated"),
        pytest.param(
            make_node(), make_pod_spec(nodeSelector={"zone": "b"}), Reason.NODE_SELECTOR_MISMATCH, id="node-selector"
        ),
        pytest.param(
            make_node(),
            make_pod_spec(**affinity(expr(req("zone", "Exists")))),
            Reason.NODE_AFFINITY_MISMATCH,
            id="affinity",
        ),
        pytest.param(
            make_node(ready="False", unschedulable=True, taints=[TAINT]),
            make_pod_spec(nodeSelector={"zone": "b"}),
            Reason.NODE_NOT_READY,
            id="first-failing-reason-wins",
        ),
        pytest.param(make_node(allocatable={}), make_pod_spec("64", "1Ti"), None, id="resources-are-not-considered"),
        pytest.param(make_node(), make_pod_spec(schedulerName="custom"), None, id="scheduler-is-not-considered"),
    ],
)
def test_node_eligible_checks_node_level_predicates_only(
    node: dict[str, Any], pod_spec: dict[str, Any], expected: Reason | None
) -> None:
    assert node_eligible(node, pod_spec) == expected


@pytest.mark.parametrize(
    ("node", "pod_spec", "pods_on_node", "expected"),
    [
        pytest.param(make_node(), make_pod_spec(), [], None, id="fits"),
        pytest.param(make_node(), make_pod_spec(schedulerName=""), [], None, id="empty-scheduler-name"),
        pytest.param(make_node(), make_pod_spec(schedulerName="default-scheduler"), [], None, id="default-scheduler"),
        pytest.param(make_node(), make_pod_spec(schedulerName="volcano"), [], Reason.CUSTOM_SCHEDULER, id="custom"),
        pytest.param(
            make_node(), make_pod_spec(topologySpreadConstraints=[SPREAD]), [], Reason.UNSUPPORTED_CONSTRAINT, id="tsc"
        ),
        pytest.param(make_node(ready="Unknown"), make_pod_spec(), [], Reason.NODE_NOT_READY, id="not-ready"),
        pytest.param(make_node(unschedulable=True), make_pod_spec(), [], Reason.NODE_UNSCHEDULABLE, id="cordoned"),
        pytest.param(make_node(taints=[TAINT]), make_pod_spec(), [], Reason.TAINT_NOT_TOLERATED, id="taint"),
        pytest.param(
            make_node(), make_pod_spec(nodeSelector={"a": "b"}), [], Reason.NODE_SELECTOR_MISMATCH, id="selector"
        ),
        pytest.param(
            make_node(),
            make_pod_spec(**affinity(expr(req("a", "Exists")))),
            [],
            Reason.NODE_AFFINITY_MISMATCH,
            id="aff",
        ),
        pytest.param(make_node(), make_pod_spec("2"), [running_pod("1m")], Reason.INSUFFICIENT_CPU, id="cpu"),
        pytest.param(make_node(), make_pod_spec("1", "4Gi"), [running_pod()], Reason.INSUFFICIENT_MEMORY, id="memory"),
        pytest.param(make_node(), make_pod_spec(), [running_pod(None, None)] * 10, Reason.TOO_MANY_PODS, id="pods"),
        pytest.param(
            make_node(ready="False"),
            make_pod_spec("64", schedulerName="volcano", topologySpreadConstraints=[SPREAD]),
            [],
            Reason.CUSTOM_SCHEDULER,
            id="scheduler-checked-first",
        ),
        pytest.param(
            make_node(ready="False"),
            make_pod_spec("64", topologySpreadConstraints=[SPREAD]),
            [],
            Reason.UNSUPPORTED_CONSTRAINT,
            id="constraints-before-node",
        ),
        pytest.param(make_node(taints=[TAINT]), make_pod_spec("64"), [], Reason.TAINT_NOT_TOLERATED, id="node-first"),
    ],
)
def test_filter_local_returns_the_first_failing_reason(
    node: dict[str, Any], pod_spec: dict[str, Any], pods_on_node: list[dict[str, Any]], expected: Reason | None
) -> None:
    assert filter_local(node, pod_spec, pods_on_node) == expected


def test_reasons_read_like_kube_scheduler_messages() -> None:
    assert str(Reason.INSUFFICIENT_CPU) == "InsufficientCPU"
    assert f"{Reason.TAINT_NOT_TOLERATED}" == "TaintNotTolerated"
    assert {reason.value for reason in Reason} == {
        "CustomScheduler",
        "NodeNotReady",
        "NodeUnschedulable",
        "TaintNotTolerated",
        "NodeSelectorMismatch",
        "NodeAffinityMismatch",
        "InsufficientCPU",
        "InsufficientMemory",
        "TooManyPods",
        "UnsupportedConstraint",
    }
