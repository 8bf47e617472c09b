"""The chaos suite's steady load: a fixed-rate open loop through a gateway that retries a connect failure once.

The gateway stands in for what sits in front of the activators on a real cluster (Kourier, Istio, a Gateway API
implementation): it sends each request to one address of the revision's ``{revision}-activationendpoints``
EndpointSlice (round robin over the ready ones, as the slice says now), over pooled keep-alive connections. When
the TCP connection cannot be made (refused, or no SYN-ACK within ``connect_timeout``), the request was never sent,
and the gateway tries it once more on another activator: Envoy's ``retry_on: connect-failure`` with one retry.
Anything that fails after the request was written (a reset, a disconnect, no answer within ``timeout``) is not
retried: it may have been processed. So the figures show what the activators themselves save, not a gateway that
replays everything.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to the ones before it, so a stall shows up
as failures and latency instead of slowing the client down. Bounded: at most ``rate * max_seconds`` requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    """One request of the steady load, with loop times (``asyncio`` monotonic clock)."""

    due: float
    done: float = 0.0
    status: int | None = None  # the HTTP status, None when no response came
    error: str = ""  # without a response: reset, disconnected, timeout, connect_refused, connect_timeout, ...
    first: str = ""  # the activator address tried first
    retried_on: str = ""  # the other activator, when the first did not take the connection

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else self.error


class ConnectFailed(Exception):
    """The gateway could not open a connection to an activator: the request was never sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _failure(exc: BaseException) -> str:
    """A short label for a failure after the connection was made (the request may have been processed)."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return "disconnected"  # closed without a response (or with a torn one)
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    return type(exc).__name__


class Gateway:
    """A client in front of the activators that retries a connect failure once on another activator."""

    def __init__(
        self, addresses: Callable[[], Sequence[str]], *, connect_timeout: float = 1.0, timeout: float = 15.0
    ) -> None:
        self.addresses = addresses
        self.timeout = timeout
        self.client = httpx.AsyncClient(
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30),
        )
        self._next = 0

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, outcome: Outcome, path: str, headers: dict[str, str]) -> None:
        """Send one GET, filling in ``outcome``; never raises for a failed request."""
        addresses = sorted(self.addresses())
        if not addresses:
            outcome.error = "no_endpoints"
            return
        index = self._next
        self._next += 1
        first = addresses[index % len(addresses)]
        outcome.first = first
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    response = await self._get(first, path, headers)
                except ConnectFailed as failed:
                    others = [a for a in addresses if a != first]
                    if not others:
                        outcome.error = failed.reason
                        return
                    outcome.retried_on = others[index % len(others)]
                    response = await self._get(outcome.retried_on, path, headers)
        except ConnectFailed as failed:
            outcome.error = failed.reason
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            outcome.error = _failure(exc)
        else:
            outcome.status = response.status_code

    async def _get(self, address: str, path: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self.client.get(f"http://{address}{path}", headers=headers)
        except httpx.ConnectTimeout as exc:
            raise ConnectFailed("connect_timeout") from exc
        except httpx.ConnectError as exc:
            raise ConnectFailed("connect_refused" if "refused" in str(exc).lower() else "connect_error") from exc


@dataclass
class Load:
    """``rate`` requests a second through ``gateway`` until stopped, at most ``rate * max_seconds``."""

    gateway: Gateway
    path: str
    headers: dict[str, str]
    rate: float
    max_seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.01
        tasks: list[asyncio.Task[None]] = []
        total = max(1, round(self.rate * self.max_seconds))
        try:
            for i in range(total):
                due = start + i / self.rate
                if self._stop.is_set():
                    break
                delay = due - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
                    if self._stop.is_set():
                        break
                outcome = Outcome(due)
                self.outcomes.append(outcome)
                tasks.append(asyncio.create_task(self._one(outcome)))
            # Every request ends within the gateway's timeout (and one connect retry): bounded.
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return self.outcomes

    async def _one(self, outcome: Outcome) -> None:
        await self.gateway.send(outcome, self.path, self.headers)
        outcome.done = asyncio.get_running_loop().time()


@dataclass(frozen=True)
class Tally:
    """What happened to the steady load around a fault at ``fault_at`` (loop time)."""

    sent: int
    ok: int
    failed: dict[str, int]
    gateway_retries: int
    recovered_seconds: float  # from the fault to the last failed request's due time (0: nothing failed after it)
    worst_window_pct: float  # the lowest success rate of any 1 s window (sliding by 0.1 s) after the fault
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, outcomes: list[Outcome], fault_at: float) -> Tally:
        failed = [o for o in outcomes if not o.ok]
        last = max((o.due for o in failed), default=fault_at)
        latencies = sorted(o.done - o.due for o in outcomes if o.ok)

        def pct(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0

        return cls(
            sent=len(outcomes),
            ok=len(outcomes) - len(failed),
            failed=dict(Counter(o.label for o in failed).most_common()),
            gateway_retries=sum(1 for o in outcomes if o.retried_on),
            recovered_seconds=round(max(0.0, last - fault_at), 2),
            worst_window_pct=worst_window(outcomes, fault_at),
            p50_ms=pct(0.5),
            p99_ms=pct(0.99),
        )


def worst_window(outcomes: list[Outcome], since: float, width: float = 1.0, step: float = 0.1) -> float:
    """The lowest percentage of successful requests (by due time) in any ``width`` window from ``since`` on."""
    after = sorted((o.due, o.ok) for o in outcomes if o.due >= since)
    if not after:
        return 100.0
    worst = 100.0
    start, end = since, after[-1][0]
    while start <= end:
        window = [ok for due, ok in after if start <= due < start + width]
        if window:
            worst = min(worst, 100.0 * sum(window) / len(window))
        start += step
    return round(worst, 1)
