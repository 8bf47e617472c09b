"""docs/configuration.md and manifests/config.yaml list exactly the settings the daemons define, with their env
vars and defaults: adding, renaming or re-defaulting a setting without them fails here.

What the code defines is read from the daemons' parsers (every flag they accept) and their ``SETTINGS`` tables
(env var, default, choices); what the manifests set directly is read from the rendered workloads.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from activator import settings as activator_settings
from devcluster.applying import project_objects
from endpointsctl import settings as endpointsctl_settings
from localsched.settings import Setting, env_name

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
CONFIG = REPO / "manifests" / "config.yaml"


@dataclass(frozen=True)
class Daemon:
    name: str  # its section in the doc, and its container's command
    settings: tuple[Setting, ...]
    parser: Callable[[], argparse.ArgumentParser]


DAEMONS = [
    Daemon("activator", activator_settings.SETTINGS, activator_settings.parser),
    Daemon("endpointsctl", endpointsctl_settings.SETTINGS, endpointsctl_settings.parser),
]
BY_NAME = pytest.mark.parametrize("daemon", DAEMONS, ids=lambda d: d.name)


@dataclass(frozen=True)
class Row:
    flags: frozenset[str]
    env: str
    default: str
    allowed: str
    meaning: str


# -- what the code defines ------------------------------------------------------------------------------------------


def defined(daemon: Daemon) -> dict[str, tuple[frozenset[str], str]]:
    """env var -> (flags, default) for every flag the daemon's parser accepts, its default from the table."""
    table = {s.flag: s for s in daemon.settings}
    result: dict[str, tuple[frozenset[str], str]] = {}
    for action in daemon.parser()._actions:
        flags = frozenset(action.option_strings)
        if not flags or flags & {"--help", "--version"}:
            continue
        primary = next(f for f in action.option_strings if not f.startswith("--no-"))
        assert primary in table, f"{daemon.name} accepts {primary}, which its SETTINGS table does not list"
        result[env_name(primary)] = (flags, table[primary].shown_default)
    return result


# -- what the doc says ----------------------------------------------------------------------------------------------


def doc_rows(daemon: str) -> dict[str, Row]:
    """The rows of the settings table under ``## <daemon>``, by env var."""
    sections = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)
    [section] = [s for s in sections if s.splitlines()[0].strip() == daemon]
    lines = [line.strip() for line in section.splitlines() if line.startswith("|")]
    assert lines, f"no table under '## {daemon}' in {DOC.name}"
    assert lines[0].startswith("| Flag | Env var | Default |"), lines[0]
    rows: dict[str, Row] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 5, f"{daemon}: a row needs 5 cells (no '|' inside one): {line}"
        env = re.fullmatch(r"`(LOCALSCHED_[A-Z0-9_]+)`", cells[1])
        default = re.fullmatch(r"`([^`]*)`", cells[2])
        assert env, f"{daemon}: the env var is one `LOCALSCHED_...` code span: {line}"
        assert default, f'{daemon}: the default is one `code` span (`""` for empty): {line}'
        value = "" if default.group(1) == '""' else default.group(1)
        assert env.group(1) not in rows, f"{daemon}: {env.group(1)} is listed twice"
        flags = frozenset(re.findall(r"`(--[a-z0-9-]+)`", cells[0]))
        rows[env.group(1)] = Row(flags, env.group(1), value, cells[3], cells[4])
    return rows


# -- what the manifests say -----------------------------------------------------------------------------------------


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    return tuple(project_objects())


def container(daemon: Daemon) -> dict[str, Any]:
    """The daemon's container in the rendered base (the one whose command is the daemon)."""
    found = [c for obj in rendered() if obj["kind"] in ("DaemonSet", "Deployment")
             for c in obj["spec"]["template"]["spec"]["containers"]
             if (c.get("command") or [""])[0] == daemon.name]  # fmt: skip
    assert len(found) == 1, f"expected one container running {daemon.name}, found {len(found)}"
    return found[0]


def configmap_name(daemon: Daemon) -> str:
    [name] = [s["configMapRef"]["name"] for s in container(daemon).get("envFrom") or [] if "configMapRef" in s]
    return name


def set_directly(daemon: Daemon) -> set[str]:
    """The env vars the container sets itself: they win over envFrom, so a ConfigMap cannot change them."""
    return {var["name"] for var in container(daemon).get("env") or []}


COMMENTED = re.compile(r'#\s+(LOCALSCHED_[A-Z0-9_]+): "([^"]*)"\s+#\s+(\S.*)')


def config_document(name: str) -> str:
    """The text (comments included) of the ConfigMap ``name`` in manifests/config.yaml."""
    documents = re.split(r"^---\s*$", CONFIG.read_text(), flags=re.MULTILINE)
    found = [doc for doc in documents if (yaml.safe_load(doc) or {}).get("metadata", {}).get("name") == name]
    assert len(found) == 1, f"{CONFIG.name} holds {len(found)} ConfigMaps named {name}"
    return found[0]


def commented_settings(document: str) -> dict[str, str]:
    """env var -> default of the commented-out ``#  LOCALSCHED_X: "default"  # what it does`` lines."""
    result: dict[str, str] = {}
    for line in document.splitlines():
        if re.match(r"#\s+LOCALSCHED_\w+:", line):
            match = COMMENTED.fullmatch(line)
            assert match, f'not `#  LOCALSCHED_X: "default"  # what it does`: {line}'
            assert match.group(1) not in result, f"{match.group(1)} is listed twice"
            result[match.group(1)] = match.group(2)
    return result


# -- the tests ------------------------------------------------------------------------------------------------------


@BY_NAME
def test_the_parser_accepts_exactly_the_settings_table(daemon: Daemon) -> None:
    assert {env for env in defined(daemon)} == {s.env for s in daemon.settings}


@BY_NAME
def test_the_reference_lists_every_setting_with_its_flags_env_var_and_default(daemon: Daemon) -> None:
    documented = {env: (row.flags, row.default) for env, row in doc_rows(daemon.name).items()}
    assert documented == defined(daemon)


@BY_NAME
def test_the_reference_says_what_each_setting_allows_and_means(daemon: Daemon) -> None:
    rows = doc_rows(daemon.name)
    for setting in daemon.settings:
        row = rows[setting.env]
        assert row.allowed, f"{setting.flag}: say what values it allows"
        assert row.meaning, f"{setting.flag}: say what it means"
        for choice in setting.choices:
            assert f"`{choice}`" in row.allowed, f"{setting.flag}: the allowed values leave out {choice}"
        if setting.fallback_env:
            assert f"`{setting.fallback_env}`" in row.meaning, f"{setting.flag}: say it falls back to the env var"


@BY_NAME
def test_every_variable_the_workload_sets_is_in_the_reference(daemon: Daemon) -> None:
    text = DOC.read_text()
    assert {name for name in set_directly(daemon) if f"`{name}`" not in text} == set()
    assert f"`{configmap_name(daemon)}`" in text


@BY_NAME
def test_the_configmap_lists_every_setting_it_can_set_with_its_default(daemon: Daemon) -> None:
    document = config_document(configmap_name(daemon))
    direct = set_directly(daemon)
    settable = {s.env: s.shown_default for s in daemon.settings if not s.per_pod and s.env not in direct}
    assert commented_settings(document) == settable


@BY_NAME
def test_the_configmap_says_why_a_setting_is_left_out(daemon: Daemon) -> None:
    document = config_document(configmap_name(daemon))
    direct = set_directly(daemon)
    left_out = [s.env for s in daemon.settings if s.per_pod or s.env in direct]
    comments = "\n".join(line for line in document.splitlines() if line.startswith("#"))
    assert [env for env in left_out if env not in comments] == []


@BY_NAME
def test_the_base_installs_the_configmap_empty(daemon: Daemon) -> None:
    name = configmap_name(daemon)
    [configmap] = [o for o in rendered() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    assert configmap["data"] == {}
    [workload] = [o for o in rendered() if o["kind"] in ("DaemonSet", "Deployment")
                  and container(daemon) in o["spec"]["template"]["spec"]["containers"]]  # fmt: skip
    assert configmap["metadata"]["namespace"] == workload["metadata"]["namespace"]
    assert "namespace" not in (yaml.safe_load(config_document(name))["metadata"]), "kustomize sets the namespace"
