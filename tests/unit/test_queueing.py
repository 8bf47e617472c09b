import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from endpointsctl.queueing import WorkQueue


class Recorder:
    """A handler that records calls and can hold a key until released, to observe overlap."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlaps: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.failures: dict[str, int] = {}
        self.finished = asyncio.Condition()

    def hold(self, key: str) -> asyncio.Event:
        """The next call for ``key`` waits until the returned event is set."""
        self.gates[key] = gate = asyncio.Event()
        self.started[key] = asyncio.Event()
        return gate

    async def __call__(self, key: str) -> None:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.calls.append(key)
        try:
            if key in self.started:
                self.started[key].set()
            if key in self.gates:
                await self.gates.pop(key).wait()
            if self.failures.get(key, 0) > 0:
                self.failures[key] -= 1
                raise RuntimeError(f"{key} failed")
        finally:
            self.running.discard(key)
            async with self.finished:
                self.finished.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout), self.finished:
            await self.finished.wait_for(predicate)


@contextlib.asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[WorkQueue]:
    task = asyncio.create_task(queue.run())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_burst_of_adds_for_one_waiting_key_is_one_call() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, workers=2)
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    async with running(queue):
        await queue.wait_idle(5)
    assert sorted(handler.calls) == ["a", "b"]


async def test_an_add_during_processing_runs_once_more_afterwards_never_concurrently() -> None:
    handler = Recorder()
    gate = handler.hold("a")
    queue = WorkQueue(handler, workers=4)
    async with running(queue):
        queue.add("a")
        await asyncio.wait_for(handler.started["a"].wait(), 5)
        for _ in range(3):
            queue.add("a")  # coalesced into one more run
        assert queue.in_progress == 1
        gate.set()
        await queue.wait_idle(5)
    assert handler.calls == ["a", "a"]
    assert handler.overlaps == []


async def test_different_keys_run_concurrently() -> None:
    handler = Recorder()
    gate = handler.hold("a")
    queue = WorkQueue(handler, workers=2)
    async with running(queue):
        queue.add("a")
        queue.add("b")
        await asyncio.wait_for(handler.started["a"].wait(), 5)
        await handler.until(lambda: "b" in handler.calls and "b" not in handler.running)
        gate.set()
        await queue.wait_idle(5)


async def test_a_failing_key_is_retried_with_backoff_until_it_succeeds() -> None:
    handler = Recorder()
    handler.failures["a"] = 2
    queue = WorkQueue(handler, workers=1, base_backoff=0.01, max_backoff=0.05)
    async with running(queue):
        queue.add("a")
        await handler.until(lambda: handler.calls.count("a") == 3)
        await queue.wait_idle(5)
    assert queue.failed == 2
    assert queue.processed == 1


async def test_clear_forgets_queued_and_scheduled_keys() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, workers=1)
    queue.add("a")
    queue.add_after("b", 0.01)
    queue.clear()
    assert len(queue) == 0
    assert queue.scheduled == 0
    async with running(queue):
        await queue.wait_idle(1)
    assert handler.calls == []


def test_a_queue_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkQueue(Recorder(), workers=0)
