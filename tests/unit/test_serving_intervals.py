"""The integration tests' answer-based maxScale check (tests/integration/kit.py): what it counts as serving at once."""

from __future__ import annotations

from tests.integration.kit import most_serving_at_once


def test_overlapping_answers_count_together() -> None:
    answers = [(1.0, "a"), (2.0, "b"), (3.0, "c"), (4.0, "a"), (4.0, "b"), (4.0, "c")]
    assert most_serving_at_once(answers, {}) == (3, {"a", "b", "c"})


def test_a_pod_no_longer_answering_is_not_counted_past_its_last_answer() -> None:
    # "a" was a stand-in whose activator died: it answered once, then nothing forwarded to it; "d" replaced it.
    answers = [(1.0, "a"), (1.0, "b"), (1.5, "c"), (5.0, "b"), (5.0, "c"), (6.0, "d"), (7.0, "b"), (7.0, "c")]
    assert most_serving_at_once(answers, {}) == (3, {"b", "c", "d"})


def test_a_pod_stops_serving_when_its_deletion_is_seen() -> None:
    answers = [(1.0, "a"), (2.0, "b"), (5.0, "a"), (6.0, "b")]
    assert most_serving_at_once(answers, {"a": 1.5}) == (1, {"a"})
    assert most_serving_at_once(answers, {}) == (2, {"a", "b"})


def test_four_pods_answering_at_once_are_caught() -> None:
    answers = [(float(i), pod) for i, pod in enumerate("abcd")] + [(9.0, pod) for pod in "abcd"]
    assert most_serving_at_once(answers, {})[0] == 4
