"""manifests/monitoring/ agrees with the code and the base manifests.

The Grafana dashboard queries only metrics the daemons' registries export (built as in test_metrics_reference),
with labels they carry (or that Prometheus adds as target labels) and, where docs/metrics.md lists a label's values,
values from that list. The PodMonitors select the pods of the base's DaemonSet and Deployment, on a port their
container names. The kustomization lists only files that exist, and every file there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_metrics_reference import ROOT, Family, Row, daemon_families, documented, family_of

MONITORING = ROOT / "manifests" / "monitoring"
DASHBOARD = MONITORING / "localsched-dashboard.json"
NAMESPACE = "localsched-system"
NAME_LABEL = "app.kubernetes.io/name"
WORKLOADS = {  # daemon -> (its file in the base, kind)
    "activator": ("activator-daemonset.yaml", "DaemonSet"),
    "endpointsctl": ("endpointsctl-deployment.yaml", "Deployment"),
}
# The target labels prometheus-operator gives every series a PodMonitor scrapes (the PodMonitors' own relabelings
# add more: target_labels()).
OPERATOR_TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod", "container", "endpoint"})
# What the dashboard must show (the cold-start latency is checked on its own below).
REQUIRED = {
    "activator_queue_depth", "activator_refusals_total", "activator_forward_retries_total",
    "activator_ready_endpoints", "activator_stat_reports_total", "activator_stat_destination_connected",
    "endpointsctl_reconciles_total", "endpointsctl_reconcile_duration_seconds", "endpointsctl_writes_total",
    "endpointsctl_leader",
}  # fmt: skip

METRIC = re.compile(r"\b(?:activator|endpointsctl)_[a-z_]+")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b((?:activator|endpointsctl)_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-z_]+)\s*(?:\{[^}]*\})?\s*,\s*(\w+)\s*\)")


def load_yaml(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml(MONITORING / "kustomization.yaml")
    return doc


def pod_monitors() -> dict[str, dict[str, Any]]:
    """The PodMonitors the kustomization lists, by the daemon (app.kubernetes.io/name) they select."""
    monitors: dict[str, dict[str, Any]] = {}
    for resource in kustomization()["resources"]:
        for doc in load_yaml(MONITORING / resource):
            if doc["kind"] == "PodMonitor":
                daemon = doc["spec"]["selector"]["matchLabels"][NAME_LABEL]
                assert daemon not in monitors, f"two PodMonitors for {daemon}"
                monitors[daemon] = doc
    return monitors


def target_labels(daemon: str) -> frozenset[str]:
    relabelings = [r for e in pod_monitors()[daemon]["spec"]["podMetricsEndpoints"] for r in e.get("relabelings", [])]
    return OPERATOR_TARGET_LABELS | {r["targetLabel"] for r in relabelings if "targetLabel" in r}


def dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, expr, legendFormat) of every target."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")


class Checker:
    """Finds what in a PromQL expression the daemons do not export (a metric, a label, a documented value)."""

    def __init__(self, families: dict[str, dict[str, Family]], doc: dict[str, dict[str, Row]]) -> None:
        self.families = families
        self.doc = doc
        self.targets = {daemon: target_labels(daemon) for daemon in families}

    def family(self, series: str) -> Family | None:
        return family_of(series, self.families.get(series.split("_", 1)[0], {}))

    def labels(self, series: str) -> frozenset[str]:
        """What a series may be filtered and grouped by: its own labels, `le` on buckets, the target labels."""
        family = self.family(series)
        assert family is not None
        daemon = series.split("_", 1)[0]
        return family.labels | self.targets[daemon] | ({"le"} if series.endswith("_bucket") else set())

    def problems(self, expr: str, legend: str = "") -> list[str]:
        series = set(METRIC.findall(expr))
        found = [f"{name}: not exported" for name in sorted(series) if self.family(name) is None]
        if found or not series:
            return found or [f"no activator_/endpointsctl_ metric in {expr!r}"]
        any_labels = frozenset().union(*(self.labels(name) for name in series))
        for keyword, names in GROUPING.findall(expr):
            for label in filter(None, (name.strip() for name in names.split(","))):
                need_all = keyword in ("on", "ignoring")  # a join's labels must be on both sides
                owners = [name for name in series if label in self.labels(name)]
                if (need_all and len(owners) < len(series)) or not owners:
                    found.append(f"{keyword} ({label}): not a label of {sorted(series)}")
        for label in LEGEND.findall(legend):
            if label not in any_labels:
                found.append(f"legend {{{{{label}}}}}: not a label of {sorted(series)}")
        for name, matchers in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(matchers):
                if label not in self.labels(name):
                    found.append(f"{name}{{{label}}}: no such label")
                elif op in ("=", "=~") and "$" not in value:
                    found.extend(self._values(name, label, value.split("|") if op == "=~" else [value]))
        return found

    def _values(self, series: str, label: str, values: list[str]) -> list[str]:
        family = self.family(series)
        assert family is not None
        row = self.doc[series.split("_", 1)[0]].get(family.name)
        listed = row.labels.get(label) if row is not None else None
        if listed is None:  # a target label, or a label whose values docs/metrics.md does not enumerate
            return []
        return [f"{series}{{{label}={value!r}}}: not one of {listed}" for value in values
                if re.fullmatch(r"[\w-]+", value) and value not in listed]  # fmt: skip


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker(daemon_families(), documented())


# -- the dashboard ---------------------------------------------------------------------------------------------------


def test_every_dashboard_query_uses_exported_metrics_labels_and_values(checker: Checker) -> None:
    found = [f"{title}: {problem}" for title, expr, legend in queries(dashboard())
             for problem in checker.problems(expr, legend)]  # fmt: skip
    assert not found, "\n".join(found)


def test_the_dashboard_variables_query_exported_labels(checker: Checker) -> None:
    variables = [v for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    assert variables
    for variable in variables:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = LABEL_VALUES.search(query)
        assert match is not None, f"${variable['name']}: {query!r}"
        assert not checker.problems(query), f"${variable['name']}: {checker.problems(query)}"
        assert match[2] in checker.labels(match[1]), f"${variable['name']}: {match[1]} has no label {match[2]}"


def test_the_checker_reports_unknown_metrics_labels_and_values(checker: Checker) -> None:
    assert checker.problems("rate(activator_requests_total[5m])") == []
    assert checker.problems("sum(activator_cold_start_duration_seconds)") == [
        "activator_cold_start_duration_seconds: not exported"  # a histogram's bare name is no series
    ]
    assert checker.problems("rate(activator_request_totals[5m])") == ["activator_request_totals: not exported"]
    assert checker.problems("sum by (node, pod) (activator_queue_depth)") == []  # target labels
    assert checker.problems("sum by (node) (endpointsctl_leader)") == [
        "by (node): not a label of ['endpointsctl_leader']"
    ]
    [typo] = checker.problems('activator_refusals_total{reason="queue_ful"}')
    assert typo.startswith("activator_refusals_total{reason='queue_ful'}: not one of (")
    assert "'queue_full'" in typo
    assert checker.problems('activator_refusals_total{code="503"}') == ["activator_refusals_total{code}: no such label"]
    assert checker.problems("x", legend="{{path}}") == ["no activator_/endpointsctl_ metric in 'x'"]
    assert checker.problems("activator_queue_depth", legend="{{path}}") == [
        "legend {{path}}: not a label of ['activator_queue_depth']"
    ]


def test_the_dashboard_shows_cold_start_latency_by_path_and_the_required_metrics(checker: Checker) -> None:
    exprs = [expr for _, expr, _ in queries(dashboard())]
    for quantile in ("0.5", "0.99"):
        assert any(
            expr.startswith(f"histogram_quantile({quantile},")
            and "activator_cold_start_duration_seconds_bucket" in expr
            and re.search(r"by \([^)]*\bpath\b", expr)
            for expr in exprs
        ), f"no p{quantile} cold-start latency by path"
    used = {family.name for expr in exprs for name in METRIC.findall(expr) if (family := checker.family(name))}
    assert used >= REQUIRED, f"not on the dashboard: {sorted(REQUIRED - used)}"


def test_the_dashboard_takes_its_data_source_from_a_variable() -> None:
    board = dashboard()
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        sources = [panel["datasource"], *(target["datasource"] for target in panel["targets"])]
        assert all(source["uid"] == "${datasource}" for source in sources), panel["title"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels(board))


# -- the PodMonitors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("daemon", WORKLOADS)
def test_each_pod_monitor_selects_its_daemons_pods_on_a_named_metrics_port(daemon: str) -> None:
    filename, kind = WORKLOADS[daemon]
    (workload,) = [doc for doc in load_yaml(ROOT / "manifests" / filename) if doc["kind"] == kind]
    template = workload["spec"]["template"]
    monitor = pod_monitors()[daemon]["spec"]
    selector = monitor["selector"]
    assert set(selector) == {"matchLabels"}, "matchExpressions are not checked here"
    assert selector["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {port["name"] for container in template["spec"]["containers"] for port in container.get("ports", [])}
    assert monitor["podMetricsEndpoints"]
    for endpoint in monitor["podMetricsEndpoints"]:
        assert endpoint["port"] in ports, f"{daemon}: no container port named {endpoint['port']!r} in {filename}"
        assert endpoint.get("path", "/metrics") == "/metrics"
        # The series' `namespace` label is the revision's; without this Prometheus renames it exported_namespace.
        assert endpoint.get("honorLabels") is True
    assert "namespaceSelector" not in monitor, "a PodMonitor selects pods in its own namespace (kustomize sets it)"


def test_the_pod_monitors_select_only_their_own_daemon() -> None:
    templates = {
        daemon: next(d for d in load_yaml(ROOT / "manifests" / f) if d["kind"] == k)["spec"]["template"]
        for daemon, (f, k) in WORKLOADS.items()
    }
    for daemon, monitor in pod_monitors().items():
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        selected = {other for other, t in templates.items() if wanted <= t["metadata"]["labels"].items()}
        assert selected == {daemon}


# -- the kustomization ---------------------------------------------------------------------------------------------


def test_the_monitoring_kustomization_lists_every_file_there_and_only_existing_ones() -> None:
    doc = kustomization()
    assert doc["namespace"] == NAMESPACE
    listed = list(doc.get("resources", []))
    for generator in doc.get("configMapGenerator", []):
        listed += [entry.split("=", 1)[-1] for entry in generator.get("files", [])]
    missing = [name for name in listed if not (MONITORING / name).is_file()]
    assert not missing, f"listed in manifests/monitoring/kustomization.yaml but missing: {missing}"
    present = {p.name for p in MONITORING.iterdir() if p.suffix in (".yaml", ".yml", ".json")} - {"kustomization.yaml"}
    assert present == set(listed), f"not listed: {sorted(present - set(listed))}"
    assert len(listed) == len(set(listed))


def test_the_dashboard_ships_as_a_configmap_the_grafana_sidecar_picks_up() -> None:
    doc = kustomization()
    (generator,) = [g for g in doc["configMapGenerator"] if DASHBOARD.name in g.get("files", [])]
    labels = {**doc.get("generatorOptions", {}).get("labels", {}), **generator.get("options", {}).get("labels", {})}
    assert labels.get("grafana_dashboard") == "1"
    assert doc["generatorOptions"]["disableNameSuffixHash"] is True


def test_monitoring_is_optional_and_every_file_says_what_it_needs() -> None:
    (base,) = load_yaml(ROOT / "manifests" / "kustomization.yaml")
    assert not any("monitoring" in str(resource) for resource in base.get("resources", []))
    for path in MONITORING.glob("*.yaml"):
        head = path.read_text().splitlines()[0]
        assert head.startswith("# "), f"{path.name}: start with a comment saying what it is and what it needs"
        assert "prometheus-operator" in path.read_text(), f"{path.name}: name the prerequisite"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl")
def test_kubectl_renders_the_monitoring_kustomization() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in docs} == {
        ("ConfigMap", "localsched-dashboard"), ("PodMonitor", "activator"), ("PodMonitor", "endpointsctl"),
    }  # fmt: skip
    assert all(doc["metadata"]["namespace"] == NAMESPACE for doc in docs)
    (configmap,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"][DASHBOARD.name]) == dashboard()
