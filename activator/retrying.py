"""When a failed forward may be sent to another endpoint: only when it provably never reached the pod.

A request that may have been delivered is never replayed (it may not be idempotent). With aiohttp 3.14 the line
is drawn by where the exception is raised:

- ``ClientConnectorError`` comes from the connector while it opens the TCP connection, before a byte of the
  request is written: the pod never saw it. Its ``os_error.errno`` says why (refused, unreachable, timed out).
- ``ConnectionTimeoutError`` is raised when ``connector.connect()`` times out (``sock_connect``, or the total
  timeout expiring while connecting, or waiting for a pooled connection): still before the request is written.
- Everything after the connection exists may have been delivered: ``ServerDisconnectedError``, ``ClientOSError``
  (e.g. a reset while writing or reading), ``SocketTimeoutError`` (read timeout), ``ClientPayloadError``, and a
  bare ``TimeoutError`` from a caller's deadline, whose phase is unknown. These are never retried here. (aiohttp
  itself resends once on a reused keep-alive connection that the server had closed; that is aiohttp's call.)

Only the exception itself is classified, not its ``__cause__``: wrap nothing between aiohttp and the retry loop.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.stop import stop_base
from tenacity.wait import WaitBaseT, wait_none, wait_random

__all__ = ["RetryPolicy", "RetryReason", "retry_reason", "retrying"]


class RetryReason(enum.StrEnum):
    """Why a failed forward may be retried elsewhere; the values are metric label values."""

    CONNECT_REFUSED = "connect_refused"  # ECONNREFUSED: nothing listens (pod gone or not yet listening)
    CONNECT_TIMEOUT = "connect_timeout"  # no SYN-ACK in time (ETIMEDOUT, or aiohttp's connect timeout)
    NO_ROUTE = "no_route"  # EHOSTUNREACH / ENETUNREACH / EHOSTDOWN / ENETDOWN: the node or its network is gone
    CONNECT_RESET = "connect_reset"  # ECONNRESET / ECONNABORTED during the handshake
    CONNECT_FAILED = "connect_failed"  # any other error while connecting (e.g. EADDRNOTAVAIL), still pre-request
    RESOLVE_FAILED = "resolve_failed"  # the endpoint's host name did not resolve (endpoints are IPs: rare)
    UNACKNOWLEDGED = "unacknowledged"  # the request's bytes were never ACKed (a hung node): see NotDelivered


class NotDelivered(Exception):
    """A request that provably did not reach the pod after the connection was established.

    The forwarder sets ``TCP_USER_TIMEOUT`` on upstream sockets: the kernel aborts a connection (ETIMEDOUT) when
    data it sent stays unacknowledged that long. If that happens before any response byte, the complete request
    was never acknowledged by the peer, so the server cannot have read it whole, let alone acted on it. The
    forwarder raises this only for requests without a body (a streamed body cannot be sent again).
    """


_ERRNO_REASONS: dict[int, RetryReason] = {
    errno.ECONNREFUSED: RetryReason.CONNECT_REFUSED,
    errno.ETIMEDOUT: RetryReason.CONNECT_TIMEOUT,
    errno.EHOSTUNREACH: RetryReason.NO_ROUTE,
    errno.ENETUNREACH: RetryReason.NO_ROUTE,
    errno.EHOSTDOWN: RetryReason.NO_ROUTE,
    errno.ENETDOWN: RetryReason.NO_ROUTE,
    errno.ECONNRESET: RetryReason.CONNECT_RESET,
    errno.ECONNABORTED: RetryReason.CONNECT_RESET,
}


def retry_reason(exc: BaseException) -> RetryReason | None:
    """Why ``exc`` allows a retry on another endpoint, or ``None`` when the request may have reached the pod.

    TLS failures (``ClientConnectorSSLError``, ``ClientConnectorCertificateError``) and proxy connection errors
    also happen before the request is sent, but they are configuration problems that another endpoint would
    repeat, so they are not retried either.
    """
    if isinstance(
        exc,
        aiohttp.ClientConnectorSSLError | aiohttp.ClientConnectorCertificateError | aiohttp.ClientProxyConnectionError,
    ):
        return None
    if isinstance(exc, NotDelivered):
        return RetryReason.UNACKNOWLEDGED
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return RetryReason.RESOLVE_FAILED
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        return _ERRNO_REASONS.get(code, RetryReason.CONNECT_FAILED) if code is not None else RetryReason.CONNECT_FAILED
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # before SocketTimeoutError/ServerTimeoutError: a subclass
        return RetryReason.CONNECT_TIMEOUT
    return None


def is_retryable(exc: BaseException) -> bool:
    return retry_reason(exc) is not None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the forwarder tries other endpoints after a failure that never reached a pod.

    ``max_attempts`` counts the first try. ``deadline_seconds`` (``None``: no deadline) stops retrying once that
    long has passed since the first attempt started; the forwarder typically uses the revision's timeout.
    ``suspect_seconds`` is how long an endpoint that failed that way stays out of rotation.
    ``jitter_seconds`` is the upper bound of a random pause between attempts (0: none).
    """

    max_attempts: int = 3
    deadline_seconds: float | None = None
    suspect_seconds: float = 10.0
    jitter_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.deadline_seconds is not None and self.deadline_seconds < 0:
            raise ValueError(f"deadline_seconds must be >= 0 or None, got {self.deadline_seconds}")
        if self.suspect_seconds < 0:
            raise ValueError(f"suspect_seconds must be >= 0, got {self.suspect_seconds}")
        if self.jitter_seconds < 0:
            raise ValueError(f"jitter_seconds must be >= 0, got {self.jitter_seconds}")


def retrying(
    policy: RetryPolicy,
    *,
    before_retry: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """A tenacity ``AsyncRetrying`` for one forwarded request, following ``policy``.

    Retries only exceptions for which :func:`retry_reason` is not ``None``; anything else, and the last retryable
    failure once attempts or the deadline run out, is re-raised as is (never ``tenacity.RetryError``).
    ``before_retry`` runs before each new attempt (``state.outcome.exception()`` is the failure), e.g. to count
    retries by reason. Typical use, each attempt excluding the endpoints already tried::

        tried: set[Endpoint] = set()
        async for attempt in retrying(policy):
            with attempt:
                async with throttler.acquire(timeout, exclude=frozenset(tried)) as endpoint:
                    tried.add(endpoint)
                    try:
                        return await send(endpoint)
                    except aiohttp.ClientError as exc:
                        if retry_reason(exc) is not None:
                            throttler.mark_suspect(endpoint, policy.suspect_seconds)
                        raise
    """
    stop: stop_base = stop_after_attempt(policy.max_attempts)
    if policy.deadline_seconds is not None:
        stop = stop | stop_after_delay(policy.deadline_seconds)
    wait: WaitBaseT = wait_random(0, policy.jitter_seconds) if policy.jitter_seconds > 0 else wait_none()
    return AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(is_retryable),
        reraise=True,
        before_sleep=before_retry,
    )
