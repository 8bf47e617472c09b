"""A per-key work queue in the shape of client-go's: one worker per key at a time, bursts coalesced.

* ``add(key)`` while the key waits is a no-op (a burst of events is one reconcile);
* ``add(key)`` while the key is being processed marks it dirty: it is processed once more afterwards, never
  concurrently with itself;
* a handler that raises is retried later with a per-key exponential backoff, reset by the next success;
* ``clear()`` forgets everything queued or scheduled (a replica that stops leading).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[None]]


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 4,
        base_backoff: float = 0.05,
        max_backoff: float = 30.0,
        name: str = "work",
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._handler = handler
        self._workers = workers
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self.name = name
        self._expected = expected  # logged without a traceback when a handler raises one
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.processed = 0
        self.failed = 0

    # -- adding ---------------------------------------------------------------------------------------------------

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queue.append(key)
        self._queued.add(key)
        self._work.set()
        self._idle.clear()

    def add_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds (an earlier scheduled add of the same key wins)."""
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(delay, fire)

    def clear(self) -> None:
        """Forget queued, dirty and scheduled keys and failure counts (keys being processed finish)."""
        self._queue.clear()
        self._queued.clear()
        self._dirty.clear()
        self._failures.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self.idle():
            self._idle.set()

    # -- state ----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def in_progress(self) -> int:
        return len(self._processing)

    @property
    def scheduled(self) -> int:
        return len(self._timers)

    def idle(self) -> bool:
        return not self._queue and not self._processing

    async def wait_idle(self, timeout: float) -> None:
        """Until nothing is queued or being processed (scheduled retries do not count)."""
        async with asyncio.timeout(timeout):
            while not self.idle():
                await self._idle.wait()

    # -- running --------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for i in range(self._workers):
                group.create_task(self._worker(), name=f"{self.name}-worker-{i}")

    async def _worker(self) -> None:
        while True:
            while not self._queue:
                self._work.clear()
                await self._work.wait()
            key = self._queue.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                await self._handler(key)
            except asyncio.CancelledError:
                self._processing.discard(key)
                if self.idle():
                    self._idle.set()
                raise
            except Exception as exc:
                self.failed += 1
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._max_backoff, self._base_backoff * 2 ** (failures - 1))
                log.warning("%s: %s failed (%s: %s); retrying in %.2fs", self.name, key, type(exc).__name__, exc,
                            delay, exc_info=not isinstance(exc, self._expected))  # fmt: skip
                self._processing.discard(key)
                self.add_after(key, delay)
            else:
                self.processed += 1
                self._failures.pop(key, None)
                self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            if self.idle():
                self._idle.set()
