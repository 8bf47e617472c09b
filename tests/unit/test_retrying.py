"""A forward is retried on another endpoint only when it provably never reached the pod."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from tenacity import RetryCallState

from activator.forwarding import new_session
from activator.retrying import NotDelivered, RetryPolicy, RetryReason, retry_reason, retrying

KEY = ConnectionKey(
    host="10.0.0.1",
    port=8080,
    is_ssl=False,
    ssl=True,
    proxy=None,
    proxy_auth=None,
    proxy_headers_hash=None,
)


def connector_error(
    code: int | None, cls: type[aiohttp.ClientConnectorError] = aiohttp.ClientConnectorError
) -> Exception:
    """As aiohttp's TCPConnector raises it: the connection key and the OSError from connect()."""
    os_error = OSError(code, "simulated") if code is not None else OSError("Multiple exceptions: ...")
    return cls(KEY, os_error)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(connector_error(errno.ECONNREFUSED), RetryReason.CONNECT_REFUSED, id="connect-refused"),
        pytest.param(connector_error(errno.ETIMEDOUT), RetryReason.CONNECT_TIMEOUT, id="kernel-connect-timeout"),
        pytest.param(connector_error(errno.EHOSTUNREACH), RetryReason.NO_ROUTE, id="host-unreachable"),
        pytest.param(connector_error(errno.ENETUNREACH), RetryReason.NO_ROUTE, id="network-unreachable"),
        pytest.param(connector_error(errno.EHOSTDOWN), RetryReason.NO_ROUTE, id="host-down"),
        pytest.param(connector_error(errno.ECONNRESET), RetryReason.CONNECT_RESET, id="reset-during-connect"),
        pytest.param(connector_error(errno.ECONNABORTED), RetryReason.CONNECT_RESET, id="aborted-during-connect"),
        pytest.param(connector_error(errno.EADDRNOTAVAIL), RetryReason.CONNECT_FAILED, id="other-connect-errno"),
        pytest.param(connector_error(None), RetryReason.CONNECT_FAILED, id="happy-eyeballs-mixed-errors"),
        pytest.param(
            connector_error(-2, aiohttp.ClientConnectorDNSError), RetryReason.RESOLVE_FAILED, id="dns-resolution"
        ),
        pytest.param(
            aiohttp.ConnectionTimeoutError("Connection timeout to host http://10.0.0.1:8080/"),
            RetryReason.CONNECT_TIMEOUT,
            id="aiohttp-connect-timeout",
        ),
        pytest.param(aiohttp.SocketTimeoutError("Timeout on reading data from socket"), None, id="read-timeout"),
        pytest.param(aiohttp.ServerTimeoutError("timeout"), None, id="unspecified-server-timeout"),
        pytest.param(aiohttp.ServerDisconnectedError(), None, id="server-disconnected"),
        pytest.param(
            aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), None, id="reset-after-connect"
        ),
        pytest.param(
            aiohttp.ClientOSError(errno.ECONNREFUSED, "refused"), None, id="client-os-error-is-not-a-connector-error"
        ),
        pytest.param(aiohttp.ClientConnectionResetError("Cannot write to closing transport"), None, id="write-reset"),
        pytest.param(aiohttp.ClientPayloadError("Response payload is not completed"), None, id="payload-error"),
        pytest.param(
            aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake failure")), None, id="tls-handshake"
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(KEY, ssl.CertificateError("hostname mismatch")),
            None,
            id="tls-certificate",
        ),
        pytest.param(
            aiohttp.ClientProxyConnectionError(KEY, OSError(errno.ECONNREFUSED, "refused")), None, id="proxy-refused"
        ),
        pytest.param(NotDelivered("never acknowledged"), RetryReason.UNACKNOWLEDGED, id="unacknowledged-send"),
        pytest.param(
            aiohttp.ClientOSError(errno.ETIMEDOUT, "Connection timed out"),
            None,
            id="raw-etimedout-is-left-to-forwarder",
        ),
        pytest.param(TimeoutError(), None, id="caller-deadline-of-unknown-phase"),
        pytest.param(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), None, id="bare-oserror-is-not-classified"),
        pytest.param(asyncio.CancelledError(), None, id="cancellation"),
        pytest.param(ValueError("bug"), None, id="unrelated-error"),
    ],
)
def test_retry_reason_allows_only_failures_before_the_request_was_sent(
    exc: BaseException, expected: RetryReason | None
) -> None:
    assert retry_reason(exc) == expected


async def test_a_real_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.get(f"http://127.0.0.1:{port}/")

    assert retry_reason(caught.value) is RetryReason.CONNECT_REFUSED


class HangUpServer:
    """A server that reads each request and closes the connection without answering."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def hang_up_server() -> AsyncIterator[HangUpServer]:
    hang_up = HangUpServer()
    server = await asyncio.start_server(hang_up.handle, "127.0.0.1", 0)
    hang_up.port = server.sockets[0].getsockname()[1]
    async with server:
        yield hang_up


def plain_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def activator_session() -> aiohttp.ClientSession:
    return new_session(connect_timeout=1.0)


@pytest.mark.parametrize(
    ("make_session", "method", "deliveries"),
    [
        pytest.param(plain_session, "POST", 1, id="plain-aiohttp-sends-post-once"),
        # aiohttp itself resends an idempotent request once after a disconnect (RFC 9112 9.3.1), even though the
        # server received it. Pinned so an aiohttp upgrade that changes it shows.
        pytest.param(plain_session, "GET", 2, id="plain-aiohttp-resends-get-itself"),
        pytest.param(activator_session, "POST", 1, id="activator-sends-post-once"),
        pytest.param(activator_session, "GET", 1, id="activator-never-resends-a-delivered-get"),
    ],
)
async def test_a_request_the_server_received_is_never_retried(
    hang_up_server: HangUpServer, make_session: Callable[[], aiohttp.ClientSession], method: str, deliveries: int
) -> None:
    async with make_session() as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.request(method, f"http://127.0.0.1:{hang_up_server.port}/", data=b"x")

    assert isinstance(caught.value, aiohttp.ServerDisconnectedError)
    assert retry_reason(caught.value) is None
    assert hang_up_server.requests == deliveries


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="zero-attempts"),
        pytest.param({"deadline_seconds": -1.0}, "deadline_seconds", id="negative-deadline"),
        pytest.param({"suspect_seconds": -1.0}, "suspect_seconds", id="negative-suspect-period"),
        pytest.param({"jitter_seconds": -0.1}, "jitter_seconds", id="negative-jitter"),
    ],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=3, deadline_seconds=None, suspect_seconds=10.0, jitter_seconds=0)


async def attempts_until_done(policy: RetryPolicy, failures: list[BaseException]) -> tuple[int, str | BaseException]:
    """Run the retry loop over an operation failing with ``failures`` in turn, then succeeding."""
    attempts = 0
    try:
        async for attempt in retrying(policy):
            with attempt:
                attempts += 1
                if attempts <= len(failures):
                    raise failures[attempts - 1]
                return attempts, "ok"
    except Exception as exc:
        return attempts, exc
    raise AssertionError("unreachable: the loop either returns or raises")


REFUSED = connector_error(errno.ECONNREFUSED)
DISCONNECTED = aiohttp.ServerDisconnectedError()


@pytest.mark.parametrize(
    ("policy", "failures", "expected_attempts", "expected_outcome"),
    [
        pytest.param(RetryPolicy(), [], 1, "ok", id="success-needs-one-attempt"),
        pytest.param(RetryPolicy(), [REFUSED], 2, "ok", id="refused-then-another-endpoint-answers"),
        pytest.param(RetryPolicy(), [REFUSED, REFUSED], 3, "ok", id="third-attempt-is-allowed-by-default"),
        pytest.param(RetryPolicy(), [REFUSED] * 3, 3, REFUSED, id="stops-after-max-attempts-with-the-last-error"),
        pytest.param(RetryPolicy(max_attempts=1), [REFUSED], 1, REFUSED, id="one-attempt-means-no-retry"),
        pytest.param(RetryPolicy(), [DISCONNECTED], 1, DISCONNECTED, id="possibly-delivered-is-never-retried"),
        pytest.param(RetryPolicy(), [REFUSED, DISCONNECTED], 2, DISCONNECTED, id="retry-stops-at-a-delivered-failure"),
        pytest.param(RetryPolicy(deadline_seconds=0), [REFUSED], 1, REFUSED, id="deadline-passed-stops-retrying"),
        pytest.param(
            RetryPolicy(deadline_seconds=60, jitter_seconds=0.001), [REFUSED], 2, "ok", id="with-deadline-and-jitter"
        ),
    ],
)
async def test_retrying_follows_the_policy(
    policy: RetryPolicy,
    failures: list[BaseException],
    expected_attempts: int,
    expected_outcome: str | BaseException,
) -> None:
    assert await attempts_until_done(policy, failures) == (expected_attempts, expected_outcome)


async def test_before_retry_sees_each_retried_failure() -> None:
    seen: list[RetryReason | None] = []

    def record(state: RetryCallState) -> None:
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert exc is not None
        seen.append(retry_reason(exc))

    timeout = aiohttp.ConnectionTimeoutError("Connection timeout")
    failures = iter([REFUSED, timeout])
    async for attempt in retrying(RetryPolicy(), before_retry=record):
        with attempt:
            exc = next(failures, None)
            if exc is not None:
                raise exc

    assert seen == [RetryReason.CONNECT_REFUSED, RetryReason.CONNECT_TIMEOUT]
