"""The subsetting simulation at a small size: structure and invariants, never timings."""

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest.subsetting_sim import SimParams, main, run


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run(SimParams(revisions=200, activators=20, zones=3, new_revisions=20))


def test_the_full_recompute_assigns_every_revision(report: dict[str, Any]) -> None:
    full = report["full_recompute"]

    assert full["revisions"] == 200
    assert sum(full["n_effective"].values()) == 200
    assert full["slots"] == sum(int(n) * count for n, count in full["n_effective"].items())
    assert report["spread"]["min"] > 0
    assert report["spread"]["max_over_mean"] < 1.5


def test_subsets_span_zones_wherever_the_eligible_nodes_allow(report: dict[str, Any]) -> None:
    zones = report["zones"]

    assert zones["revisions_n_ge_2"] > 0
    assert zones["span_ge_2_zones_where_possible"] >= 0.95
    assert zones["span_all_zones_where_possible"] >= 0.9


def test_a_resync_of_an_unchanged_snapshot_changes_nothing(report: dict[str, Any]) -> None:
    assert report["resync_unchanged"]["changed_revisions"] == 0


def test_a_dead_activator_is_replaced_in_its_revisions_only_one_slot_each(report: dict[str, Any]) -> None:
    dies = report["activator_dies"]

    assert dies["its_revisions"] > 0
    assert dies["revisions_still_on_dead_activator"] == 0
    assert dies["changed_revisions"] == dies["its_revisions"]
    assert dies["slots_changed"] == dies["changed_revisions"]
    assert dies["full_resync_changed_revisions_afterwards"] == 0


def test_an_added_activator_is_taken_into_use_without_a_reshuffle(report: dict[str, Any]) -> None:
    added = report["activator_added"]

    assert added["resync_moved_revisions"] == 0
    assert added["new_revisions_using_it"] > 0
    assert 0 < added["rebalance_moved_revisions"] <= added["rebalance_target_load"]
    assert added["its_load_after_rebalance"] <= added["rebalance_target_load"]
    assert added["resync_after_rebalance_changed_revisions"] == 0


def test_invalid_specs_become_conditions(report: dict[str, Any]) -> None:
    assert report["full_recompute"]["conditions"].get("InvalidSpec", 0) >= 1


def test_the_command_writes_json_and_a_markdown_summary(tmp_path: Path) -> None:
    out = tmp_path / "results" / "sim.json"

    assert main(["--revisions", "60", "--activators", "9", "--new-revisions", "5", "--out", str(out)]) == 0

    assert json.loads(out.read_text())["params"]["revisions"] == 60
    summary = out.with_suffix(".md").read_text()
    assert summary.startswith("# Subsetting simulation")
    assert "--revisions 60 --activators 9" in summary
