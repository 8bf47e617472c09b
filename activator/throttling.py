"""Per-revision throttling: a breaker over the ready endpoints and a bounded FIFO queue in front of it.

In the spirit of Knative's activator throttler: each ready endpoint takes at most ``containerConcurrency``
requests at a time (any number when it is 0), so the revision's capacity is CC x ready endpoints. A request that
finds no free slot waits in a FIFO queue, which unlike Knative's has a hard bound: at the bound the request is
refused at once (:class:`QueueFull`, the app's 503) instead of growing memory without limit.

Everything runs on the event loop thread; no method blocks, and the only awaits are in :meth:`Throttler.acquire`
and :meth:`SingleFlight.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "ActivationTimeout",
    "Endpoint",
    "QueueFull",
    "SingleFlight",
    "Throttler",
    "Throttlers",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready pod of a revision: where to send requests, and which node it runs on."""

    ip: str
    port: int
    node: str

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


class QueueFull(Exception):
    """No free slot, and the queue of waiting requests is at its bound."""


class ActivationTimeout(Exception):
    """No slot became free before the request's activation timeout."""


@dataclass(eq=False, slots=True)
class _Waiter:
    future: asyncio.Future[Endpoint]
    exclude: frozenset[Endpoint]


class Throttler:
    """The breaker and queue of one revision.

    ``update()`` is fed from the watch cache; ``acquire()`` is used per request::

        async with throttler.acquire(timeout=30.0, exclude=tried) as endpoint:
            ...  # forward to endpoint.url

    ``on_no_capacity`` (given by the owner) is called, synchronously, when a request starts waiting while no
    endpoint is ready at all, and when an ``update()`` leaves waiting requests with no ready endpoint. It must be
    cheap and must not raise (an exception propagates to the request, or to ``update()``'s caller); the app uses
    it to start a single-flight cold start.
    """

    def __init__(
        self,
        *,
        container_concurrency: int,
        queue_limit: int,
        clock: Callable[[], float] = time.monotonic,
        on_no_capacity: Callable[[], None] | None = None,
    ) -> None:
        _check_container_concurrency(container_concurrency)
        if queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {queue_limit}")
        self._cc = container_concurrency
        self._queue_limit = queue_limit
        self._clock = clock
        self._ready: tuple[Endpoint, ...] = ()
        # In-flight requests per endpoint, including endpoints no longer ready whose requests are still running.
        self._in_flight: dict[Endpoint, int] = {}
        self._suspect_until: dict[Endpoint, float] = {}
        self._suspect_timers: dict[Endpoint, asyncio.TimerHandle] = {}
        self._waiters: deque[_Waiter] = deque()
        self._next = 0  # rotating start index: ties in load go to a different endpoint each time
        self.on_no_capacity = on_no_capacity

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def container_concurrency(self) -> int:
        return self._cc

    @property
    def queue_limit(self) -> int:
        return self._queue_limit

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The ready endpoints, suspect ones included, in the order last given to :meth:`update`."""
        return self._ready

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    @property
    def in_flight(self) -> int:
        """Requests holding a slot, including those on endpoints that have since been removed."""
        return sum(self._in_flight.values())

    @property
    def capacity(self) -> int | None:
        """containerConcurrency x ready endpoints; ``None`` when containerConcurrency is 0 (unbounded)."""
        return None if self._cc == 0 else self._cc * len(self._ready)

    @property
    def has_ready_endpoints(self) -> bool:
        """Whether any ready endpoint is in rotation (not suspect)."""
        return any(not self._is_suspect(ep) for ep in self._ready)

    def in_flight_on(self, endpoint: Endpoint) -> int:
        return self._in_flight.get(endpoint, 0)

    def is_suspect(self, endpoint: Endpoint) -> bool:
        return self._is_suspect(endpoint)

    # -- inputs ------------------------------------------------------------------------------------------------

    def update(self, endpoints: Iterable[Endpoint], container_concurrency: int | None = None) -> None:
        """Replace the ready endpoints (and optionally containerConcurrency).

        Endpoints that stay keep their in-flight counts; removed endpoints get no new requests from now on, while
        requests already running on them finish and release normally. Waiters are served if capacity grew.
        """
        if container_concurrency is not None:
            _check_container_concurrency(container_concurrency)
            self._cc = container_concurrency
        self._ready = tuple(dict.fromkeys(endpoints))
        ready = set(self._ready)
        for ep in [ep for ep in self._suspect_until if ep not in ready]:
            self._clear_suspect(ep)
        self._dispatch()
        if self._waiters and not self.has_ready_endpoints:
            self._notify_no_capacity()

    def mark_suspect(self, endpoint: Endpoint, for_seconds: float) -> None:
        """Keep ``endpoint`` out of rotation until the clock passes now + ``for_seconds`` (it refused a connect).

        When a loop is running, waiters are re-examined once the period is over, so a queue that was waiting only
        for this endpoint does not need another event to wake up.
        """
        self._clear_suspect(endpoint)
        if endpoint not in self._ready or for_seconds <= 0:
            return
        self._suspect_until[endpoint] = self._clock() + for_seconds
        with contextlib.suppress(RuntimeError):  # no running loop: expiry is noticed on the next event
            loop = asyncio.get_running_loop()
            self._suspect_timers[endpoint] = loop.call_later(for_seconds, self._suspect_expired, endpoint)

    # -- the request path --------------------------------------------------------------------------------------

    # ``timeout`` bounds only the wait for a slot (the activation timeout), not the ``async with`` body.
    @contextlib.asynccontextmanager
    async def acquire(
        self,
        timeout: float,
        exclude: frozenset[Endpoint] = frozenset(),
    ) -> AsyncIterator[Endpoint]:
        """Hold a slot on an endpoint for the duration of the ``async with`` block.

        Picks the non-suspect, non-excluded endpoint with the fewest in-flight requests and a free slot. With no
        free slot: :class:`QueueFull` at once if ``queue_limit`` requests already wait, else wait in FIFO order
        up to ``timeout`` seconds (:class:`ActivationTimeout`). Cancellation while waiting gives back the queue
        position, and the slot if one had just been handed over.
        """
        endpoint = await self._acquire(timeout, exclude)
        try:
            yield endpoint
        finally:
            self._release(endpoint)

    async def _acquire(self, timeout: float, exclude: frozenset[Endpoint]) -> Endpoint:
        self._dispatch()  # a suspect period may have ended since the last event: earlier waiters go first
        endpoint = self._pick(exclude)
        if endpoint is not None:
            self._take(endpoint)
            return endpoint
        if len(self._waiters) >= self._queue_limit:
            raise QueueFull(
                f"{len(self._waiters)} requests are already waiting (queue limit {self._queue_limit}) "
                f"and all {len(self._ready)} ready endpoints are busy"
            )
        if not self.has_ready_endpoints:
            self._notify_no_capacity()
        waiter = _Waiter(asyncio.get_running_loop().create_future(), exclude)
        self._waiters.append(waiter)
        try:
            try:
                async with asyncio.timeout(timeout):
                    return await waiter.future
            except TimeoutError:
                if waiter.future.done() and not waiter.future.cancelled():
                    return waiter.future.result()  # handed a slot in the same instant as the timeout
                raise ActivationTimeout(self._timeout_message(timeout)) from None
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.future.done() and not waiter.future.cancelled():
            self._release(waiter.future.result())  # the slot arrived but the request is gone: pass it on
            return
        waiter.future.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _release(self, endpoint: Endpoint) -> None:
        count = self._in_flight.get(endpoint, 0) - 1
        if count > 0:
            self._in_flight[endpoint] = count
        else:
            self._in_flight.pop(endpoint, None)
        self._dispatch()

    # -- internals ---------------------------------------------------------------------------------------------

    def _pick(self, exclude: frozenset[Endpoint]) -> Endpoint | None:
        ready = self._ready
        n = len(ready)
        best: Endpoint | None = None
        best_index = 0
        best_load = 0
        for offset in range(n):
            index = (self._next + offset) % n
            ep = ready[index]
            if ep in exclude or self._is_suspect(ep):
                continue
            load = self._in_flight.get(ep, 0)
            if self._cc and load >= self._cc:
                continue
            if best is None or load < best_load:
                best, best_index, best_load = ep, index, load
        if best is not None:
            self._next = (best_index + 1) % n
        return best

    def _take(self, endpoint: Endpoint) -> None:
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1

    def _dispatch(self) -> None:
        """Hand free slots to waiters in FIFO order (skipping those whose exclusions rule out every free slot)."""
        waiters = self._waiters
        if not waiters:
            return
        kept: deque[_Waiter] = deque()
        while waiters:
            waiter = waiters.popleft()
            if waiter.future.done():  # cancelled, its task not yet resumed to clean up
                continue
            endpoint = self._pick(waiter.exclude)
            if endpoint is None:
                kept.append(waiter)
                if self._pick(frozenset()) is None:  # nothing free for anybody: the rest keep waiting as they are
                    kept.extend(w for w in waiters if not w.future.done())
                    waiters.clear()
                continue
            self._take(endpoint)
            waiter.future.set_result(endpoint)
        self._waiters = kept

    def _is_suspect(self, endpoint: Endpoint) -> bool:
        until = self._suspect_until.get(endpoint)
        if until is None:
            return False
        if self._clock() >= until:
            self._clear_suspect(endpoint)
            return False
        return True

    def _clear_suspect(self, endpoint: Endpoint) -> None:
        self._suspect_until.pop(endpoint, None)
        timer = self._suspect_timers.pop(endpoint, None)
        if timer is not None:
            timer.cancel()

    def _suspect_expired(self, endpoint: Endpoint) -> None:
        self._suspect_timers.pop(endpoint, None)
        self._dispatch()

    def _notify_no_capacity(self) -> None:
        if self.on_no_capacity is not None:
            self.on_no_capacity()

    def _timeout_message(self, timeout: float) -> str:
        suspect = sum(1 for ep in self._ready if self._is_suspect(ep))
        if not self._ready:
            state = "no endpoint became ready"
        else:
            state = f"{len(self._ready)} ready endpoints ({suspect} suspect) stayed busy"
        return f"no free slot within {timeout:g} s: {state}"


def _check_container_concurrency(value: int) -> None:
    if value < 0:
        raise ValueError(f"container_concurrency must be >= 0 (0 = unbounded), got {value}")


class Throttlers:
    """The throttlers of all revisions, keyed by revision key (``namespace/name``), created on first use."""

    def __init__(self, factory: Callable[[str], Throttler]) -> None:
        self._factory = factory
        self._throttlers: dict[str, Throttler] = {}

    def get(self, key: str) -> Throttler:
        """The revision's throttler, created with the factory if it does not exist yet."""
        throttler = self._throttlers.get(key)
        if throttler is None:
            throttler = self._throttlers[key] = self._factory(key)
        return throttler

    def peek(self, key: str) -> Throttler | None:
        """The revision's throttler if it exists; never creates one."""
        return self._throttlers.get(key)

    def remove(self, key: str) -> Throttler | None:
        """Forget a revision's throttler (the revision was deleted); requests holding it finish normally."""
        return self._throttlers.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._throttlers

    def __len__(self) -> int:
        return len(self._throttlers)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._throttlers))

    def items(self) -> list[tuple[str, Throttler]]:
        return list(self._throttlers.items())


class SingleFlight(Generic[T]):
    """Concurrent calls for the same key share one run.

    The first caller starts ``coro_factory()`` as a task; callers arriving while it runs await the same task and
    get its result or its exception. A caller's cancellation leaves the task running for the others (and to
    completion: a cold start that nobody waits for any more is still worth finishing). Once the task is done, the
    next call starts a new run. :meth:`close` cancels and awaits whatever still runs, for shutdown.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def running(self, key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def start(self, key: str, coro_factory: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The run for ``key``: the one in progress, else a new one started now (not awaited)."""
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.create_task(_await(coro_factory), name=f"single-flight {key}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return task

    async def run(self, key: str, coro_factory: Callable[[], Awaitable[T]]) -> T:
        return await asyncio.shield(self.start(key, coro_factory))

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so that a failure nobody awaited any more is logged once, not as "never retrieved".
            logger.debug("single-flight run %r failed", key, exc_info=task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _await(coro_factory: Callable[[], Awaitable[T]]) -> T:
    return await coro_factory()
