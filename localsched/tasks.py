"""Named, guarded background tasks: an unexpected exit is logged and remembered (it fails readiness)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.failed: dict[str, str] = {}  # task name -> why it ended

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks[name] = task
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        why = f"{type(exc).__name__}: {exc}" if exc else "returned"
        self.failed[task.get_name()] = why
        log.error("background task %s ended unexpectedly (%s)", task.get_name(), why, exc_info=exc)

    @property
    def healthy(self) -> bool:
        return not self.failed

    def health(self) -> tuple[int, str]:
        """What ``/healthz`` answers: 200 "ok", or 500 naming each task that ended and why."""
        if not self.failed:
            return 200, "ok\n"
        return 500, "unhealthy: " + "; ".join(f"{name}: {why}" for name, why in sorted(self.failed.items())) + "\n"

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.remove_done_callback(self._ended)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()


class TaskSet:
    """Fire-and-forget tasks of one owner (work per cold start, per pod): an exception is logged, never fails
    readiness (unlike :class:`Supervisor`'s daemons); :meth:`close` cancels and awaits whatever still runs."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("%s: task %s failed: %s", self.owner, task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
