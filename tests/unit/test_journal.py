"""The journal of cold starts: steps as they happened, the first byte, and the recent records."""

from __future__ import annotations

import pytest

from activator import journal
from activator.journal import ColdStart, Journal

KEY = "default/hello-00001"


def test_a_step_is_recorded_the_first_time_only() -> None:
    record = ColdStart(KEY, "local")
    first = record.step("created")
    record.started -= 1.0  # were it recorded again, its offset would now be a second later
    assert record.step("created") == first
    assert record.steps == {"created": first}


def test_step_offsets_do_not_decrease_in_the_order_they_happen() -> None:
    record = ColdStart(KEY, "local")
    names = ["created", "ip_known", "probe_ok", "claimed", "admitted"]
    offsets = [record.step(name) for name in names]
    assert offsets == sorted(offsets)
    assert offsets[0] >= 0
    assert list(record.steps) == names


def test_api_calls_add_up() -> None:
    record = ColdStart(KEY, "local")
    record.api(reads=1)
    record.api(writes=2)
    record.api(reads=2, writes=1)
    assert (record.reads, record.writes) == (3, 3)


def test_the_first_byte_after_a_ready_cold_start_is_recorded_on_its_record() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    record.step("admitted")
    j.close(record, "ready")
    j.first_byte(KEY)
    assert "first_byte" in record.steps
    assert record.steps["first_byte"] >= record.steps["admitted"]


def test_only_the_first_byte_is_recorded() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    j.close(record, "ready")
    j.first_byte(KEY)
    first = record.steps["first_byte"]
    record.started -= 1.0
    j.first_byte(KEY)
    assert record.steps["first_byte"] == first


@pytest.mark.parametrize("outcome", [pytest.param("failed", id="failed"), pytest.param("timeout", id="timeout")])
def test_no_first_byte_is_recorded_after_a_cold_start_that_did_not_end_ready(outcome: str) -> None:
    j = Journal()
    record = j.open(KEY, "local")
    j.close(record, outcome)
    j.first_byte(KEY)
    assert "first_byte" not in record.steps


def test_a_failed_older_cold_start_does_not_stop_a_newer_one_waiting_for_its_first_byte() -> None:
    j = Journal()
    older = j.open(KEY, "local")
    newer = j.open(KEY, "standard")
    j.close(older, "failed")
    j.first_byte(KEY)
    assert "first_byte" in newer.steps
    assert "first_byte" not in older.steps


def test_a_first_byte_long_after_the_cold_start_is_not_recorded() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    j.close(record, "ready")
    record.started -= journal.FIRST_BYTE_WAIT_SECONDS + 1
    j.first_byte(KEY)
    assert "first_byte" not in record.steps


def test_a_first_byte_for_a_revision_without_a_cold_start_is_harmless() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    j.first_byte("default/other-00001")
    j.close(record, "ready")
    assert "first_byte" not in record.steps
    assert j.recent()[0]["steps"] == {}


def test_recent_keeps_only_the_last_records_up_to_its_size() -> None:
    j = Journal(size=3)
    for i in range(5):
        j.close(j.open(f"default/rev-{i}", "local"), "ready")
    assert [r["revision"] for r in j.recent()] == ["default/rev-2", "default/rev-3", "default/rev-4"]


def test_recent_gives_each_record_with_its_steps_and_critical_path() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    record.pod = "hello-00001-deployment-5d9f-a1b2c3"
    created, claimed = record.step("created"), record.step("claimed")
    record.api(reads=1, writes=2)
    record.waited_on("kubelet")
    record.waited_on("probe")
    j.close(record, "ready")
    (entry,) = j.recent()
    assert entry["revision"] == KEY
    assert entry["path"] == "local"
    assert entry["pod"] == record.pod
    assert entry["outcome"] == "ready"
    assert list(entry["steps"].items()) == [("created", created), ("claimed", claimed)]
    assert entry["critical_path"] == {"api_reads": 1, "api_writes": 2, "waits": ["kubelet", "probe"]}
    assert "notes" not in entry


def test_recent_lists_steps_by_offset_and_carries_notes() -> None:
    j = Journal()
    record = j.open(KEY, "standard")
    record.steps.update({"late": 0.5, "early": 0.1})
    record.notes["node"] = "node-a"
    j.close(record, "ready")
    (entry,) = j.recent()
    assert list(entry["steps"]) == ["early", "late"]
    assert entry["notes"] == {"node": "node-a"}


def test_recent_is_a_copy_the_caller_may_change() -> None:
    j = Journal()
    record = j.open(KEY, "local")
    record.waited_on("kubelet")
    j.close(record, "ready")
    j.recent()[0]["critical_path"]["waits"].append("tampered")
    assert j.recent()[0]["critical_path"]["waits"] == ["kubelet"]
