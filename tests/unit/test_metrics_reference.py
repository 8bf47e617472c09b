"""docs/metrics.md lists exactly the metric families each daemon exports, with their types and labels.

The registries are built as the daemons build them: ``daemon_registry()`` with the daemon's metric classes on it
(activator/app.py: ``create_app`` and ``_runtime``; endpointsctl/app.py: ``create_app``). A metric added without
a row in the doc, a row left for a metric that is gone, or a label added or dropped on one side fails here. So
does a metric defined anywhere in the daemons' packages that these registries do not carry: then the builders
below (and the doc) need it too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from activator.metrics import Metrics as ActivatorMetrics
from activator.metrics import ThrottlerCollector
from activator.reporting import ReporterMetrics
from activator.throttling import Throttler
from endpointsctl.metrics import Metrics as EndpointsctlMetrics
from localsched.metrics import daemon_registry

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
STANDARD_SECTION = "Both daemons: process and runtime"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


# -- what the daemons export -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str  # as on the `# TYPE` line of a scrape: counters with `_total`
    type: str
    labels: frozenset[str]  # without a histogram's `le`


def _materialize(groups: Iterable[object]) -> None:
    """One child for each labelled metric, so that every family has samples to read its label names from."""
    for group in groups:
        for field in dataclasses.fields(group):  # type: ignore[arg-type]
            metric = getattr(group, field.name)
            names = metric._labelnames  # prometheus_client keeps them only here before a child exists
            if names:
                metric.labels(*(f"<{name}>" for name in names))


def activator_registry() -> CollectorRegistry:
    """As activator/app.py builds it: ``Metrics`` in ``create_app``; ``ReporterMetrics`` and the
    ``ThrottlerCollector`` (with one revision, so that it yields samples) in ``_runtime``."""
    registry = daemon_registry()
    metrics = ActivatorMetrics.create(registry)
    reporter = ReporterMetrics.create(registry)
    throttler = Throttler(container_concurrency=0, queue_limit=1)
    registry.register(ThrottlerCollector(lambda: [("demo/hello-00001", throttler)]))
    _materialize([metrics, reporter])
    return registry


def endpointsctl_registry() -> CollectorRegistry:
    """As endpointsctl/app.py's ``create_app`` builds it."""
    registry = daemon_registry()
    _materialize([EndpointsctlMetrics.create(registry)])
    return registry


REGISTRIES: dict[str, Callable[[], CollectorRegistry]] = {
    "activator": activator_registry,
    "endpointsctl": endpointsctl_registry,
}


def exported(registry: CollectorRegistry) -> dict[str, Family]:
    """The families a scrape of ``registry`` shows, by name; without the ``NAME_created`` gauges the text format
    adds beside each counter and histogram (docs/metrics.md mentions them once)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", generate_latest(registry).decode(), re.MULTILINE))
    families: dict[str, Family] = {}
    for metric in registry.collect():
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        assert name in types, f"{name}: not on a # TYPE line of the scrape"
        assert metric.samples, f"{name}: no samples to read its labels from (materialize it in the builder)"
        labels = {label for sample in metric.samples for label in sample.labels} - {"le"}
        families[name] = Family(name, types[name], frozenset(labels))
        if metric.type in ("counter", "histogram"):
            types.pop(f"{metric.name}_created", None)
    assert families.keys() == types.keys()
    return families


def daemon_families() -> dict[str, dict[str, Family]]:
    return {daemon: exported(build()) for daemon, build in REGISTRIES.items()}


def family_of(series: str, families: dict[str, Family]) -> Family | None:
    """The family a series name in a query belongs to (a histogram's ``_bucket``/``_sum``/``_count``, a counter's or
    histogram's ``_created``), or None. A histogram's bare name is no series, so it belongs to none."""
    family = families.get(series)
    if family is not None:
        return None if family.type == "histogram" else family
    for suffix in HISTOGRAM_SERIES:
        family = families.get(series.removesuffix(suffix)) if series.endswith(suffix) else None
        if family is not None and family.type == "histogram":
            return family
    if series.endswith("_created"):
        base = series.removesuffix("_created")
        family = families.get(base) or families.get(f"{base}_total")
        if family is not None and family.type in ("counter", "histogram"):
            return family
    return None


# -- what the doc says ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str  # the first backticked name of the first cell (a glob such as `process_*` for the standard groups)
    type: str
    labels: dict[str, tuple[str, ...] | None]  # label -> its listed values, None when the list is not exhaustive
    line: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _labels(cell: str) -> dict[str, tuple[str, ...] | None]:
    labels: dict[str, tuple[str, ...] | None] = {}
    for part in cell.split("<br>"):
        match = re.match(r"\s*`([A-Za-z_][A-Za-z0-9_]*)`:(.*)", part)
        if match is None:
            assert part.strip() in ("", "—"), f"labels cell part {part!r}: write `label`: values"
            continue
        name, rest = match.groups()
        values = tuple(re.findall(r"`([^`]+)`", rest))
        exhaustive = bool(values) and "..." not in rest and "e.g." not in rest
        labels[name] = values if exhaustive else None
    return labels


def documented(text: str | None = None) -> dict[str, dict[str, Row]]:
    """The metric tables of docs/metrics.md: ``{section heading: {metric name: row}}`` (``## `` headings)."""
    sections: dict[str, dict[str, Row]] = {}
    rows: dict[str, Row] | None = None
    in_metric_table = False
    for line in (DOC.read_text() if text is None else text).splitlines():
        if line.startswith("## "):
            rows = sections.setdefault(line[3:].strip(), {})
            in_metric_table = False
        elif not line.startswith("|"):
            in_metric_table = False
        elif rows is not None:
            cells = _cells(line)
            if cells[0] == "metric":
                in_metric_table = True
                assert cells[1:3] == ["type", "labels"], f"metric table header: {line}"
            elif in_metric_table and not set(cells[0]) <= set("-: "):
                name = re.search(r"`([a-z_*]+)`", cells[0])
                assert name is not None, f"row without a metric name in backticks: {line}"
                assert name[1] not in rows, f"{name[1]} documented twice"
                rows[name[1]] = Row(name[1], cells[1].split()[0].rstrip(","), _labels(cells[2]), line)
    return sections


def standard_rows() -> dict[str, Row]:
    return documented()[STANDARD_SECTION]


def is_standard(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# -- the tests -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def families() -> dict[str, dict[str, Family]]:
    return daemon_families()


@pytest.fixture(scope="module")
def doc() -> dict[str, dict[str, Row]]:
    return documented()


@pytest.mark.parametrize("daemon", REGISTRIES)
def test_each_daemon_section_documents_exactly_the_families_its_registry_exports(
    daemon: str, families: dict[str, dict[str, Family]], doc: dict[str, dict[str, Row]]
) -> None:
    own = {name for name in families[daemon] if not is_standard(name, doc[STANDARD_SECTION])}
    rows = set(doc[daemon])
    assert not own - rows, f"exported by {daemon} but not in docs/metrics.md: {sorted(own - rows)}"
    assert not rows - own, f"in docs/metrics.md under {daemon} but not exported: {sorted(rows - own)}"


@pytest.mark.parametrize("daemon", REGISTRIES)
def test_documented_types_and_labels_are_the_exported_ones(
    daemon: str, families: dict[str, dict[str, Family]], doc: dict[str, dict[str, Row]]
) -> None:
    for name, row in doc[daemon].items():
        family = families[daemon][name]
        assert row.type == family.type, f"{name}: documented as {row.type}, exported as {family.type}"
        assert set(row.labels) == family.labels, f"{name}: documented labels {sorted(row.labels)}"
        if family.type == "histogram":
            assert all(f"`{suffix}`" in row.line for suffix in HISTOGRAM_SERIES), f"{name}: name its series"


@pytest.mark.parametrize("daemon", REGISTRIES)
def test_the_standard_collector_groups_cover_the_rest_and_name_their_labels(
    daemon: str, families: dict[str, dict[str, Family]], doc: dict[str, dict[str, Row]]
) -> None:
    for pattern, row in doc[STANDARD_SECTION].items():
        matching = [family for name, family in families[daemon].items() if fnmatch.fnmatchcase(name, pattern)]
        assert matching, f"{pattern}: no family of {daemon} matches"
        assert set(row.labels) == set().union(*(family.labels for family in matching)), pattern
        assert all(family.name not in doc[daemon] for family in matching), f"{pattern}: also in the {daemon} table"


def test_the_doc_parser_reads_labels_values_and_both_daemons() -> None:
    text = "\n".join([
        "## activator",
        "| metric | type | labels | what |",
        "|---|---|---|---|",
        "| `activator_x_total` | counter | `reason`: `a`, `b`<br>`namespace`: the namespace | x |",
        "## endpointsctl",
        "| metric | type | labels | what |",
        "|---|---|---|---|",
        "| `endpointsctl_y` | histogram (`_bucket`) | — | y |",
    ])  # fmt: skip
    sections = documented(text)
    assert sections["activator"]["activator_x_total"].labels == {"reason": ("a", "b"), "namespace": None}
    assert sections["endpointsctl"]["endpointsctl_y"] == Row("endpointsctl_y", "histogram", {}, text.splitlines()[-1])


def test_a_family_missing_from_the_doc_or_gone_from_the_code_is_noticed(
    families: dict[str, dict[str, Family]],
) -> None:
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `activator_queue_depth`"))
    without = documented(text.replace(row + "\n", ""))
    assert "activator_queue_depth" in set(families["activator"]) - set(without["activator"])
    renamed = documented(text.replace("`activator_queue_depth`", "`activator_queue_length`"))
    assert "activator_queue_length" in set(renamed["activator"]) - set(families["activator"])


def test_every_metric_the_doc_mentions_is_exported(families: dict[str, dict[str, Family]]) -> None:
    everything = {name: family for daemon in families.values() for name, family in daemon.items()}
    named = set(re.findall(r"\b(?:activator|endpointsctl)_[a-z0-9_]*[a-z0-9]", DOC.read_text()))
    unknown = {name for name in named if name not in everything and family_of(name, everything) is None}
    assert not unknown, f"docs/metrics.md names metrics no daemon exports: {sorted(unknown)}"


METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum|\w*MetricFamily)\(\s*\"([a-zA-Z_:][\w:]*)\""
)


def test_the_source_scan_reads_definitions_across_lines() -> None:
    source = 'x = Counter("a_total", "help")\ny = GaugeMetricFamily(\n    "b", "help")\nz = Counter("c", "")'
    found = [_scraped_name(kind, name) for kind, name in METRIC_DEFINITION.findall(source)]
    assert found == ["a_total", "b", "c_total"]


def _scraped_name(kind: str, name: str) -> str:
    if kind in ("Counter", "CounterMetricFamily"):
        return name if name.endswith("_total") else f"{name}_total"
    if kind in ("Info", "InfoMetricFamily"):
        return f"{name}_info"
    return name


@pytest.mark.parametrize(("package", "daemons"), [
    pytest.param("activator", ["activator"], id="activator"),
    pytest.param("endpointsctl", ["endpointsctl"], id="endpointsctl"),
    pytest.param("localsched", ["activator", "endpointsctl"], id="localsched"),
])  # fmt: skip
def test_every_metric_defined_in_the_source_is_on_the_registries_built_here(
    package: str, daemons: list[str], families: dict[str, dict[str, Family]]
) -> None:
    defined = {
        (str(path.relative_to(ROOT)), _scraped_name(kind, name))
        for path in (ROOT / package).rglob("*.py")
        if "generated" not in path.parts
        for kind, name in METRIC_DEFINITION.findall(path.read_text())
    }
    if package != "localsched":  # the scan sees what the registries carry: it would see a new definition too
        own = {name for name in families[package] if name.startswith(f"{package}_")}
        assert own <= {name for _, name in defined}, f"the source scan missed {sorted(own - {n for _, n in defined})}"
    for daemon in daemons:
        missing = sorted(f"{name} ({where})" for where, name in defined if name not in families[daemon])
        assert not missing, f"defined but not on the {daemon} registry built here: {missing}"
