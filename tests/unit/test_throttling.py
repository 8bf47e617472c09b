"""The per-revision throttler (breaker + bounded FIFO queue), its registry, and single-flight runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from activator.throttling import ActivationTimeout, Endpoint, QueueFull, SingleFlight, Throttler, Throttlers

A = Endpoint("10.0.0.1", 8080, "node-a")
B = Endpoint("10.0.0.2", 8080, "node-b")
C = Endpoint("10.0.0.3", 8080, "node-c")

LONG = 5.0  # an activation timeout no test is meant to reach
DEADLINE = 2.0  # how long a test waits for something that should happen within a few event loop turns


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(predicate: Callable[[], bool], turns: int = 1000) -> None:
    """Let other tasks run until ``predicate`` holds; fail if it still does not after ``turns`` loop iterations."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)  # one turn of the event loop, not a timed wait; noqa: sleep-ok
    pytest.fail(f"condition still false after {turns} event loop turns")


def throttler(
    *endpoints: Endpoint,
    cc: int = 1,
    queue_limit: int = 10,
    clock: Callable[[], float] | None = None,
    on_no_capacity: Callable[[], None] | None = None,
) -> Throttler:
    t = Throttler(container_concurrency=cc, queue_limit=queue_limit, on_no_capacity=on_no_capacity,
                  **({"clock": clock} if clock else {}))  # fmt: skip
    t.update(endpoints)
    return t


async def hold(stack: contextlib.AsyncExitStack, t: Throttler, exclude: frozenset[Endpoint] = frozenset()) -> Endpoint:
    """Take a slot and keep it until the stack closes."""
    return await stack.enter_async_context(t.acquire(LONG, exclude))


async def acquire_once(t: Throttler, exclude: frozenset[Endpoint] = frozenset(), within: float = LONG) -> Endpoint:
    async with t.acquire(within, exclude) as endpoint:
        return endpoint


class Waiter:
    """A request waiting in the queue as a task; it keeps its slot until ``done`` is set."""

    def __init__(self, t: Throttler, exclude: frozenset[Endpoint] = frozenset()) -> None:
        self.endpoint: Endpoint | None = None
        self.got = asyncio.Event()
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._run(t, exclude))

    async def _run(self, t: Throttler, exclude: frozenset[Endpoint]) -> None:
        async with t.acquire(LONG, exclude) as endpoint:
            self.endpoint = endpoint
            self.got.set()
            await self.done.wait()

    async def served(self) -> Endpoint:
        """Wait until this request holds a slot (failing the test after a deadline) and return the endpoint."""
        async with asyncio.timeout(DEADLINE):
            await self.got.wait()
        assert self.endpoint is not None
        return self.endpoint

    async def finish(self) -> None:
        self.done.set()
        async with asyncio.timeout(DEADLINE):
            await self.task


async def enqueue(t: Throttler, exclude: frozenset[Endpoint] = frozenset()) -> Waiter:
    """Start a request that has to wait, and return once it is in the queue."""
    depth = t.queue_depth
    waiter = Waiter(t, exclude)
    await eventually(lambda: t.queue_depth == depth + 1)
    return waiter


# -- capacity and endpoint choice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "endpoints", "expected"),
    [
        pytest.param(2, (A, B, C), 6, id="cc-times-ready-endpoints"),
        pytest.param(1, (A,), 1, id="one-slot"),
        pytest.param(3, (), 0, id="no-endpoints-no-capacity"),
        pytest.param(0, (A, B), None, id="cc-0-is-unbounded"),
        pytest.param(2, (A, A, B), 4, id="duplicate-endpoints-count-once"),
    ],
)
def test_capacity_is_container_concurrency_times_ready_endpoints(
    cc: int, endpoints: tuple[Endpoint, ...], expected: int | None
) -> None:
    assert throttler(*endpoints, cc=cc).capacity == expected


@pytest.mark.parametrize(
    ("cc", "queue_limit", "message"),
    [
        pytest.param(-1, 1, "container_concurrency", id="negative-cc"),
        pytest.param(1, -1, "queue_limit", id="negative-queue-limit"),
    ],
)
def test_invalid_limits_are_refused(cc: int, queue_limit: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Throttler(container_concurrency=cc, queue_limit=queue_limit)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        pytest.param(Endpoint("10.0.0.1", 8080, "n"), "http://10.0.0.1:8080", id="ipv4"),
        pytest.param(Endpoint("fd00::1", 80, "n"), "http://[fd00::1]:80", id="ipv6-is-bracketed"),
    ],
)
def test_endpoint_url(endpoint: Endpoint, url: str) -> None:
    assert endpoint.url == url


async def test_each_endpoint_takes_at_most_cc_requests_then_requests_wait() -> None:
    t = throttler(A, B, cc=2)
    async with contextlib.AsyncExitStack() as stack:
        got = [await hold(stack, t) for _ in range(4)]
        waiter = await enqueue(t)

        assert sorted(got, key=lambda ep: ep.ip) == [A, A, B, B]
        assert (t.in_flight, t.queue_depth) == (4, 1)
    await waiter.finish()
    assert (t.in_flight, t.queue_depth) == (0, 0)


async def test_cc_0_never_queues_and_spreads_load_evenly() -> None:
    t = throttler(A, B, cc=0, queue_limit=0)
    async with contextlib.AsyncExitStack() as stack:
        got = [await hold(stack, t) for _ in range(100)]

        assert (got.count(A), got.count(B)) == (50, 50)
        assert t.in_flight == 100


async def test_the_least_loaded_endpoint_is_chosen() -> None:
    t = throttler(A, B, C, cc=3)
    async with contextlib.AsyncExitStack() as stack:
        first = await hold(stack, t)
        second = await hold(stack, t)
        third = await hold(stack, t)

        assert {first, second, third} == {A, B, C}


async def test_ties_rotate_so_sequential_requests_spread_over_endpoints() -> None:
    t = throttler(A, B, C, cc=1)

    got = [await acquire_once(t) for _ in range(6)]

    assert got == [A, B, C, A, B, C]


async def test_excluded_endpoints_are_not_chosen() -> None:
    t = throttler(A, B, cc=1)

    assert await acquire_once(t, exclude=frozenset({A})) == B


async def test_a_request_excluding_every_endpoint_times_out() -> None:
    t = throttler(A, cc=1)

    with pytest.raises(ActivationTimeout):
        await acquire_once(t, exclude=frozenset({A}), within=0.05)
    assert (t.queue_depth, t.in_flight) == (0, 0)


# -- the queue -------------------------------------------------------------------------------------------------


async def test_waiters_are_served_in_fifo_order() -> None:
    t = throttler(A, cc=1)
    stack = contextlib.AsyncExitStack()
    await hold(stack, t)
    waiters = [await enqueue(t) for _ in range(3)]

    await stack.aclose()
    for index, waiter in enumerate(waiters):
        await waiter.served()
        assert [w.got.is_set() for w in waiters] == [i <= index for i in range(3)]
        await waiter.finish()


async def test_a_waiter_whose_exclusions_block_it_does_not_hold_up_the_ones_behind() -> None:
    t = throttler(A, B, cc=1)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        holder_b = Waiter(t)  # takes the other slot right away
        await holder_b.served()
        picky = await enqueue(t, exclude=frozenset({A}))
        plain = await enqueue(t)
    # A is free now: the picky waiter cannot use it, the one behind can.
    assert await plain.served() == A
    assert not picky.got.is_set()

    await holder_b.finish()
    assert await picky.served() == B
    await picky.finish()
    await plain.finish()


@pytest.mark.parametrize(
    "queue_limit", [pytest.param(0, id="no-queue"), pytest.param(1, id="one"), pytest.param(3, id="three")]
)
async def test_queue_full_is_raised_at_once_at_the_bound(queue_limit: int) -> None:
    t = throttler(A, cc=1, queue_limit=queue_limit)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        waiters = [await enqueue(t) for _ in range(queue_limit)]

        with pytest.raises(QueueFull, match=f"queue limit {queue_limit}"):
            await acquire_once(t)
        assert t.queue_depth == queue_limit
    for waiter in waiters:
        await waiter.finish()


async def test_activation_timeout_when_no_slot_frees_in_time() -> None:
    t = throttler(cc=1)

    with pytest.raises(ActivationTimeout, match="no endpoint became ready"):
        await acquire_once(t, within=0.05)
    assert t.queue_depth == 0


async def test_activation_timeout_names_busy_endpoints() -> None:
    t = throttler(A, cc=1)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)

        with pytest.raises(ActivationTimeout, match="1 ready endpoints"):
            await acquire_once(t, within=0.05)
        assert (t.queue_depth, t.in_flight) == (0, 1)


async def test_a_cancelled_waiter_gives_back_its_queue_position() -> None:
    t = throttler(A, cc=1, queue_limit=1)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        waiter = await enqueue(t)

        waiter.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter.task

        assert t.queue_depth == 0
        replacement = await enqueue(t)  # the position is free again: no QueueFull
    await replacement.finish()
    assert (t.in_flight, t.queue_depth) == (0, 0)


async def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on() -> None:
    t = throttler(A, cc=1)
    stack = contextlib.AsyncExitStack()
    await hold(stack, t)
    first = await enqueue(t)
    second = await enqueue(t)

    await stack.aclose()  # hands the slot to the first waiter's future ...
    assert (t.in_flight, t.queue_depth) == (1, 1)
    first.task.cancel()  # ... which is cancelled before it could resume
    with pytest.raises(asyncio.CancelledError):
        await first.task

    assert await second.served() == A
    await second.finish()
    assert (t.in_flight, t.queue_depth) == (0, 0)


# -- endpoint changes ------------------------------------------------------------------------------------------


async def test_update_wakes_waiters_when_endpoints_appear() -> None:
    t = throttler(cc=1)
    waiter = await enqueue(t)

    t.update([A])

    assert await waiter.served() == A
    await waiter.finish()


async def test_raising_container_concurrency_wakes_waiters() -> None:
    t = throttler(A, cc=1)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        waiter = await enqueue(t)

        t.update([A], container_concurrency=2)

        await waiter.served()
        assert t.in_flight_on(A) == 2
        await waiter.finish()


async def test_removed_endpoints_get_no_new_requests_but_finish_the_running_ones() -> None:
    t = throttler(A, B, cc=1)
    async with contextlib.AsyncExitStack() as stack:
        on_a = await hold(stack, t, exclude=frozenset({B}))

        t.update([B])

        assert t.endpoints == (B,)
        assert t.capacity == 1
        assert await acquire_once(t) == B
        assert (on_a, t.in_flight_on(A)) == (A, 1)
    assert t.in_flight == 0


async def test_endpoints_that_stay_keep_their_in_flight_counts() -> None:
    t = throttler(A, B, cc=1)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        await hold(stack, t)

        t.update([B, A, C])

        assert (t.in_flight_on(A), t.in_flight_on(B)) == (1, 1)
        assert await acquire_once(t) == C


async def test_an_endpoint_removed_and_re_added_while_busy_is_not_overfilled() -> None:
    t = throttler(A, cc=1, queue_limit=0)
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        t.update([])
        t.update([A])

        with pytest.raises(QueueFull):
            await acquire_once(t)


# -- suspect endpoints -----------------------------------------------------------------------------------------


async def test_suspect_endpoints_are_skipped_until_the_clock_passes() -> None:
    clock = FakeClock()
    t = throttler(A, B, cc=1, clock=clock)
    t.mark_suspect(A, 10.0)

    assert [await acquire_once(t) for _ in range(3)] == [B, B, B]
    clock.advance(10.0)
    assert {await acquire_once(t) for _ in range(2)} == {A, B}


@pytest.mark.parametrize(
    ("suspects", "expected"),
    [
        pytest.param((), True, id="none-suspect"),
        pytest.param((A,), True, id="one-of-two-suspect"),
        pytest.param((A, B), False, id="all-suspect"),
    ],
)
def test_has_ready_endpoints_ignores_suspect_ones(suspects: tuple[Endpoint, ...], expected: bool) -> None:
    t = throttler(A, B, clock=FakeClock())
    for endpoint in suspects:
        t.mark_suspect(endpoint, 10.0)

    assert t.has_ready_endpoints is expected


def test_has_ready_endpoints_is_false_without_endpoints() -> None:
    assert throttler().has_ready_endpoints is False


async def test_a_waiter_is_served_when_the_suspect_period_ends() -> None:
    t = throttler(A, cc=1)  # the real clock: the expiry timer is what wakes the waiter
    t.mark_suspect(A, 0.05)
    waiter = await enqueue(t)

    assert await waiter.served() == A
    await waiter.finish()


async def test_a_queued_request_waiting_for_a_suspect_endpoint_goes_before_a_newcomer() -> None:
    clock = FakeClock()
    t = throttler(A, cc=1, clock=clock)
    t.mark_suspect(A, 10.0)
    waiter = await enqueue(t)
    clock.advance(10.0)  # no event announces this; the newcomer's arrival notices it

    newcomer = Waiter(t)
    assert await waiter.served() == A
    assert (newcomer.got.is_set(), t.queue_depth) == (False, 1)
    await waiter.finish()
    await newcomer.served()
    await newcomer.finish()


# -- the cold-start hook ---------------------------------------------------------------------------------------


async def test_on_no_capacity_is_called_when_a_request_waits_without_ready_endpoints() -> None:
    calls: list[int] = []
    t = throttler(cc=1, on_no_capacity=lambda: calls.append(t.queue_depth))

    waiter = await enqueue(t)

    assert calls == [0]  # called before the request joined the queue
    t.update([A])
    await waiter.finish()


async def test_on_no_capacity_is_not_called_when_endpoints_are_merely_busy() -> None:
    calls: list[None] = []
    t = throttler(A, cc=1, on_no_capacity=lambda: calls.append(None))
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        waiter = await enqueue(t)

        assert calls == []
    await waiter.finish()


async def test_on_no_capacity_is_called_when_all_endpoints_are_suspect() -> None:
    calls: list[None] = []
    t = throttler(A, cc=1, clock=FakeClock(), on_no_capacity=lambda: calls.append(None))
    t.mark_suspect(A, 10.0)

    with pytest.raises(ActivationTimeout):
        await acquire_once(t, within=0.05)
    assert calls == [None]


async def test_on_no_capacity_is_called_when_an_update_leaves_waiters_without_endpoints() -> None:
    calls: list[None] = []
    t = throttler(A, cc=1, on_no_capacity=lambda: calls.append(None))
    async with contextlib.AsyncExitStack() as stack:
        await hold(stack, t)
        waiter = await enqueue(t)

        t.update([])

        assert calls == [None]
        waiter.task.cancel()
        await asyncio.gather(waiter.task, return_exceptions=True)


async def test_on_no_capacity_is_not_called_by_an_update_without_waiters() -> None:
    calls: list[None] = []
    t = throttler(A, cc=1, on_no_capacity=lambda: calls.append(None))

    t.update([])

    assert calls == []


# -- the registry ----------------------------------------------------------------------------------------------


def test_throttlers_are_created_lazily_once_per_revision() -> None:
    created: list[str] = []

    def factory(key: str) -> Throttler:
        created.append(key)
        return Throttler(container_concurrency=1, queue_limit=1)

    registry = Throttlers(factory)

    assert registry.peek("default/a") is None
    first = registry.get("default/a")
    assert registry.get("default/a") is first
    registry.get("default/b")
    assert created == ["default/a", "default/b"]
    assert ("default/a" in registry, len(registry), sorted(registry)) == (True, 2, ["default/a", "default/b"])

    assert registry.remove("default/a") is first
    assert registry.remove("default/a") is None
    assert registry.get("default/a") is not first


# -- single flight ---------------------------------------------------------------------------------------------


async def test_single_flight_shares_one_run_between_concurrent_callers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    runs: list[None] = []

    async def cold_start() -> str:
        runs.append(None)
        await release.wait()
        return "pod-1"

    callers = [asyncio.create_task(flight.run("default/a", cold_start)) for _ in range(3)]
    await eventually(lambda: flight.running("default/a"))
    release.set()

    async with asyncio.timeout(DEADLINE):
        assert await asyncio.gather(*callers) == ["pod-1"] * 3
    assert len(runs) == 1


async def test_single_flight_keys_are_independent() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def named(name: str) -> str:
        return name

    a, b = await asyncio.gather(flight.run("a", lambda: named("a")), flight.run("b", lambda: named("b")))

    assert (a, b) == ("a", "b")


async def test_single_flight_propagates_the_error_to_every_caller() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise RuntimeError("no node fits")

    callers = [asyncio.create_task(flight.run("default/a", failing)) for _ in range(2)]
    await eventually(lambda: flight.running("default/a"))
    release.set()

    async with asyncio.timeout(DEADLINE):
        results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]


async def test_single_flight_starts_anew_after_completion() -> None:
    flight: SingleFlight[int] = SingleFlight()
    runs: list[None] = []

    async def count() -> int:
        runs.append(None)
        return len(runs)

    assert await flight.run("k", count) == 1
    assert await flight.run("k", count) == 2


async def test_single_flight_starts_anew_after_a_failure() -> None:
    flight: SingleFlight[str] = SingleFlight()
    attempts: list[None] = []

    async def flaky() -> str:
        attempts.append(None)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")
        return "ok"

    with pytest.raises(RuntimeError):
        await flight.run("k", flaky)
    assert await flight.run("k", flaky) == "ok"


async def test_one_callers_cancellation_does_not_cancel_the_shared_run() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def cold_start() -> str:
        await release.wait()
        return "pod-1"

    leaving = asyncio.create_task(flight.run("k", cold_start))
    staying = asyncio.create_task(flight.run("k", cold_start))
    await eventually(lambda: flight.running("k"))

    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert flight.running("k")
    release.set()

    async with asyncio.timeout(DEADLINE):
        assert await staying == "pod-1"


async def test_single_flight_close_cancels_what_still_runs() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()

    async def forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    caller = asyncio.create_task(flight.run("k", forever))
    await started.wait()

    await flight.close()

    assert not flight.running("k")
    with pytest.raises(asyncio.CancelledError):
        await caller
