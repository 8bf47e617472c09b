"""What each cold start went through, step by step: the activator's own timestamps, for logs, /debug and benchmarks.

A :class:`ColdStart` record is opened when a cold start begins and carries, in seconds from its start, each step
as it happened (``created``, ``ip_known``, ``probe_ok``, ``claimed``, ``admitted``, ``first_byte``, ``adopted``,
...), the API calls made before the first byte could be forwarded, and what that moment waited on. The
:class:`Journal` keeps the last few hundred, and notes the first response forwarded for a revision whose cold
start is open or just finished (the proxy calls :meth:`Journal.first_byte`: one dict lookup per request).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FIRST_BYTE_WAIT_SECONDS = 600.0  # a finished cold start stops waiting for its first byte after this long


@dataclass
class ColdStart:
    key: str
    path: str
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # wall clock, to line up with other processes
    steps: dict[str, float] = field(default_factory=dict)
    outcome: str = ""
    pod: str = ""
    reads: int = 0  # API reads before the first byte could go out
    writes: int = 0  # API writes before the first byte could go out
    waits: list[str] = field(default_factory=list)  # what the first byte waited on, in order
    notes: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> float:
        """Record ``name`` now (the first time only); returns its offset in seconds."""
        return self.steps.setdefault(name, round(time.monotonic() - self.started, 4))

    def api(self, *, reads: int = 0, writes: int = 0) -> None:
        self.reads += reads
        self.writes += writes

    def waited_on(self, what: str) -> None:
        self.waits.append(what)

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.key,
            "path": self.path,
            "pod": self.pod,
            "outcome": self.outcome,
            "started_at": round(self.started_at, 4),
            "steps": dict(sorted(self.steps.items(), key=lambda kv: kv[1])),
            "critical_path": {"api_reads": self.reads, "api_writes": self.writes, "waits": list(self.waits)},
            **({"notes": self.notes} if self.notes else {}),
        }


class Journal:
    def __init__(self, size: int = 500) -> None:
        self._done: deque[ColdStart] = deque(maxlen=size)
        self._awaiting_first_byte: dict[str, ColdStart] = {}

    def open(self, key: str, path: str) -> ColdStart:
        record = ColdStart(key, path)
        self._awaiting_first_byte[key] = record
        return record

    def first_byte(self, key: str) -> None:
        """A response from a pod of ``key`` started: the first byte of its open cold start, if any."""
        if key in self._awaiting_first_byte:  # the common case is a miss: keep it a dict lookup
            record = self._awaiting_first_byte.pop(key)
            if time.monotonic() - record.started < FIRST_BYTE_WAIT_SECONDS:
                record.step("first_byte")

    def close(self, record: ColdStart, outcome: str) -> None:
        record.outcome = outcome
        self._done.append(record)
        if outcome != "ready" and self._awaiting_first_byte.get(record.key) is record:
            del self._awaiting_first_byte[record.key]
        log.info("cold start of %s (%s): %s; steps %s; before the first byte: %d API reads, %d writes, waited on %s",
                 record.key, record.path, outcome, record.steps, record.reads, record.writes,
                 " -> ".join(record.waits) or "nothing")  # fmt: skip

    def recent(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self._done]
