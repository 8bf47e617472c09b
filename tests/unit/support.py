"""What several unit tests share: a clock to move by hand, aiohttp test-client types, and a demand report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from localsched.stats import Stat, StatMessage

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


class Clock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def report(pod: str, concurrency: float, name: str = "hello-00001", namespace: str = "demo") -> StatMessage:
    """An activator's report of ``concurrency`` requests for a revision."""
    return StatMessage(namespace, name, Stat(pod_name=pod, average_concurrent_requests=concurrency, timestamp=1))
