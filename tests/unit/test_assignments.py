from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpointsctl.assignments import AssignmentChange, Assignments


def test_an_assignment_is_indexed_both_ways_and_counted_as_load() -> None:
    assignments = Assignments()

    assignments.set("ns/one", ["a", "b"])
    assignments.set("ns/two", ["b", "c"])

    assert assignments.get("ns/one") == ("a", "b")
    assert assignments.revisions_of("b") == {"ns/one", "ns/two"}
    assert assignments.revisions_of("a") == {"ns/one"}
    assert dict(assignments.load()) == {"a": 1, "b": 2, "c": 1}
    assert len(assignments) == 2
    assert "ns/one" in assignments


def test_reassigning_a_revision_moves_only_the_activators_that_changed() -> None:
    assignments = Assignments()
    assignments.set("ns/one", ["a", "b"])

    change = assignments.set("ns/one", ["b", "c"])

    assert change == AssignmentChange("ns/one", ("a", "b"), ("b", "c"))
    assert change.added == {"c"}
    assert change.removed == {"a"}
    assert change.changed
    assert assignments.revisions_of("a") == frozenset()
    assert dict(assignments.load()) == {"b": 1, "c": 1}


def test_reordering_the_same_activators_is_not_a_change() -> None:
    assignments = Assignments()
    assignments.set("ns/one", ["a", "b"])

    change = assignments.set("ns/one", ["b", "a"])

    assert not change.changed
    assert assignments.get("ns/one") == ("b", "a")
    assert dict(assignments.load()) == {"a": 1, "b": 1}


def test_removing_a_revision_frees_its_activators() -> None:
    assignments = Assignments()
    assignments.set("ns/one", ["a", "b"])
    assignments.set("ns/two", ["a"])

    change = assignments.remove_revision("ns/one")

    assert change.removed == {"a", "b"}
    assert "ns/one" not in assignments
    assert assignments.get("ns/one") == ()
    assert dict(assignments.load()) == {"a": 1}
    assert assignments.revisions_of("b") == frozenset()


def test_removing_an_unknown_revision_changes_nothing() -> None:
    assignments = Assignments()

    assert not assignments.remove_revision("ns/none").changed
    assert len(assignments) == 0


def test_an_empty_assignment_forgets_the_revision() -> None:
    assignments = Assignments()
    assignments.set("ns/one", ["a"])

    assignments.set("ns/one", [])

    assert "ns/one" not in assignments
    assert dict(assignments.load()) == {}


def test_duplicate_activators_are_rejected_and_nothing_changes() -> None:
    assignments = Assignments()
    assignments.set("ns/one", ["a"])

    with pytest.raises(ValueError, match="duplicate"):
        assignments.set("ns/one", ["b", "b"])

    assert assignments.get("ns/one") == ("a",)
    assert dict(assignments.load()) == {"a": 1}


def test_load_is_a_live_read_only_view() -> None:
    assignments = Assignments()
    load = assignments.load()

    assignments.set("ns/one", ["a"])

    assert load["a"] == 1
    with pytest.raises(TypeError):
        load["a"] = 5  # type: ignore[index]


def test_revisions_of_is_a_copy_safe_to_iterate_while_recomputing() -> None:
    assignments = Assignments()
    for i in range(5):
        assignments.set(f"ns/{i}", ["lost", f"other-{i}"])

    for revision in assignments.revisions_of("lost"):
        assignments.set(revision, [f"other-{revision}"])

    assert assignments.revisions_of("lost") == frozenset()
    assert "lost" not in assignments.load()


operations = st.lists(
    st.tuples(
        st.sampled_from([f"ns/{i}" for i in range(6)]),
        st.none() | st.lists(st.sampled_from("abcdefg"), unique=True, max_size=4),
    ),
    max_size=40,
)


@given(operations)
def test_the_reverse_index_and_load_always_match_a_recount(ops: list[tuple[str, list[str] | None]]) -> None:
    assignments = Assignments()
    expected: dict[str, tuple[str, ...]] = {}
    for revision, activators in ops:
        if activators is None:
            assignments.remove_revision(revision)
            expected.pop(revision, None)
        else:
            assignments.set(revision, activators)
            if activators:
                expected[revision] = tuple(activators)
            else:
                expected.pop(revision, None)

    assert dict(assignments.items()) == expected
    assert dict(assignments.load()) == dict(Counter(a for chosen in expected.values() for a in chosen))
    for activator in "abcdefg":
        assert assignments.revisions_of(activator) == {r for r, chosen in expected.items() if activator in chosen}
