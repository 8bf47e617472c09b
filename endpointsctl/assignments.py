"""Which activators serve which revision, and the reverse index (docs/subsetting.md: activator or node loss recomputes
only the affected revisions).

Every operation costs O(size of the change): ``set`` touches only the activators added to or removed from one
revision, and ``load()`` is a live read-only view of counters kept in step, so a :class:`Snapshot` built on it
sees each assignment the moment it is made. Not thread-safe; one controller worker owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class AssignmentChange:
    revision: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def added(self) -> frozenset[str]:
        return frozenset(self.after) - frozenset(self.before)

    @property
    def removed(self) -> frozenset[str]:
        return frozenset(self.before) - frozenset(self.after)

    @property
    def changed(self) -> bool:
        """The set of activators changed (a mere reordering is no change)."""
        return frozenset(self.before) != frozenset(self.after)


class Assignments:
    """revision key -> activator names (in the order chosen), activator -> revision keys, activator -> load."""

    def __init__(self) -> None:
        self._by_revision: dict[str, tuple[str, ...]] = {}
        self._by_activator: dict[str, set[str]] = {}
        self._load: dict[str, int] = {}
        self._load_view: Mapping[str, int] = MappingProxyType(self._load)

    def set(self, revision: str, activators: Iterable[str]) -> AssignmentChange:
        """Assign ``activators`` (no duplicates) to ``revision``, replacing what it had; an empty set removes it."""
        after = tuple(activators)
        if len(set(after)) != len(after):
            raise ValueError(f"duplicate activators for {revision}: {after}")
        before = self._by_revision.get(revision, ())
        for activator in frozenset(before) - frozenset(after):
            self._unlink(revision, activator)
        for activator in frozenset(after) - frozenset(before):
            self._by_activator.setdefault(activator, set()).add(revision)
            self._load[activator] = self._load.get(activator, 0) + 1
        if after:
            self._by_revision[revision] = after
        else:
            self._by_revision.pop(revision, None)
        return AssignmentChange(revision, before, after)

    def remove_revision(self, revision: str) -> AssignmentChange:
        """Forget a deleted revision; a revision never assigned is a no-op."""
        return self.set(revision, ())

    def get(self, revision: str) -> tuple[str, ...]:
        return self._by_revision.get(revision, ())

    def revisions_of(self, activator: str) -> frozenset[str]:
        """The revisions to recompute when ``activator`` (or its node) is lost."""
        return frozenset(self._by_activator.get(activator, ()))

    def load(self) -> Mapping[str, int]:
        """activator -> number of revisions assigned; a live read-only view (activators with none are absent)."""
        return self._load_view

    def revisions(self) -> Iterator[str]:
        return iter(self._by_revision)

    def items(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        return iter(self._by_revision.items())

    def __len__(self) -> int:
        return len(self._by_revision)

    def __contains__(self, revision: object) -> bool:
        return revision in self._by_revision

    def _unlink(self, revision: str, activator: str) -> None:
        revisions = self._by_activator[activator]
        revisions.discard(revision)
        if revisions:
            self._load[activator] -= 1
        else:
            del self._by_activator[activator]
            del self._load[activator]
