"""Readiness checks: built from a revision's pod spec, run on the wire, repeated until a pod answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from activator.probing import Prober, ProbeSpecError, ReadinessCheck, probe_until_ready, readiness_check
from activator.throttling import Endpoint
from localsched.probes import http_status, is_success, means_user_port, probe_port, serving_container_index, tcp_open

DEADLINE = 2.0  # how long a test waits for something that should happen at once
USER_PORT = 8080
HOST = "127.0.0.1"


def spec(probe: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"image": "app", "ports": [{"name": "admin", "containerPort": 9090}]}
    if probe is not None:
        container["readinessProbe"] = probe
    return {"containers": [container]}


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        pytest.param(spec({"httpGet": {"port": 9000, "path": "/hz"}}), ReadinessCheck(9000, "/hz"), id="http-port"),
        pytest.param(spec({"httpGet": {"port": 0, "path": "/"}}), ReadinessCheck(USER_PORT, "/"), id="http-port-0"),
        pytest.param(spec({"httpGet": {"path": "/"}}), ReadinessCheck(USER_PORT, "/"), id="http-no-port"),
        pytest.param(spec({"httpGet": {"port": "admin"}}), ReadinessCheck(9090, "/"), id="http-named-port"),
        pytest.param(spec({"httpGet": {"port": "9001"}}), ReadinessCheck(9001, "/"), id="http-port-as-digits"),
        pytest.param(spec({"httpGet": {}}), ReadinessCheck(USER_PORT, "/"), id="http-path-defaults-to-root"),
        pytest.param(spec({"httpGet": {"scheme": "HTTPS"}}), ReadinessCheck(USER_PORT, "/", "https"), id="https"),
        pytest.param(
            spec({"httpGet": {"httpHeaders": [{"name": "K-Probe", "value": "1"}, {"name": "X-A", "value": "b"}]}}),
            ReadinessCheck(USER_PORT, "/", headers=(("K-Probe", "1"), ("X-A", "b"))),
            id="http-headers-become-a-tuple",
        ),
        pytest.param(spec({"tcpSocket": {"port": 9000}}), ReadinessCheck(9000), id="tcp-with-port"),
        pytest.param(spec({"tcpSocket": {}}), ReadinessCheck(USER_PORT), id="tcp-without-port"),
        pytest.param(spec(), ReadinessCheck(USER_PORT), id="no-probe-is-tcp-on-the-user-port"),
        pytest.param({}, ReadinessCheck(USER_PORT), id="no-containers"),
        pytest.param(spec({"exec": {"command": ["true"]}}), ReadinessCheck(USER_PORT), id="exec-is-tcp-on-user-port"),
    ],
)
def test_readiness_check_follows_the_first_containers_probe(pod_spec: dict[str, Any], expected: ReadinessCheck) -> None:
    assert readiness_check(pod_spec, USER_PORT) == expected


def test_a_probe_on_an_unknown_named_port_is_refused_naming_the_port() -> None:
    with pytest.raises(ProbeSpecError, match="'metrics'"):
        readiness_check(spec({"httpGet": {"port": "metrics"}}), USER_PORT)


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        pytest.param({"tcpSocket": {"port": 0}}, ReadinessCheck(USER_PORT), id="tcp-port-0-as-knative-defaults-it"),
        pytest.param({"tcpSocket": {"port": "0"}}, ReadinessCheck(USER_PORT), id="tcp-port-string-0"),
        pytest.param({"httpGet": {"port": "0", "path": "/hz"}}, ReadinessCheck(USER_PORT, "/hz"), id="http-string-0"),
        pytest.param({"httpGet": {"port": "00"}}, ReadinessCheck(USER_PORT, "/"), id="http-00-is-0-as-intvalue"),
    ],
)
def test_a_probe_port_of_zero_is_the_user_port(probe: dict[str, Any], expected: ReadinessCheck) -> None:
    assert readiness_check(spec(probe), USER_PORT) == expected


def test_the_probe_read_is_the_serving_containers_even_behind_a_sidecar() -> None:
    """Knative's queue-proxy runs the probe of the container with the port; a sidecar first lends it nothing."""
    sidecar = {"name": "sidecar", "image": "proxy", "readinessProbe": {"httpGet": {"path": "/sidecar", "port": 0}}}
    user = {"name": "user", "image": "app", "ports": [{"containerPort": USER_PORT}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 0}}}  # fmt: skip
    assert readiness_check({"containers": [sidecar, user]}, USER_PORT) == ReadinessCheck(USER_PORT, "/ready")


@pytest.mark.parametrize("port", [-1, 65536, "70000", True])
def test_a_probe_port_that_is_no_port_is_refused(port: object) -> None:
    with pytest.raises(ProbeSpecError, match="not a port number"):
        readiness_check(spec({"tcpSocket": {"port": port}}), USER_PORT)


@pytest.mark.parametrize(
    ("value", "means"),
    [
        (None, True),
        ("", True),
        (0, True),
        ("0", True),
        ("00", True),
        (False, False),
        (8080, False),
        ("8080", False),
        ("http", False),
        ("\u0660", False),  # a digit to str.isdigit, not to Kubernetes
    ],
)
def test_which_probe_ports_mean_the_user_port(value: object, means: bool) -> None:
    assert means_user_port(value) is means


def test_probe_port_resolves_numbers_and_names_of_the_container() -> None:
    container = {"ports": [{"name": "admin", "containerPort": 9090}]}
    assert [probe_port(v, container, USER_PORT) for v in (0, 9000, "9001", "admin")] == [USER_PORT, 9000, 9001, 9090]
    with pytest.raises(ValueError, match="names no port"):
        probe_port("metrics", container, USER_PORT)


@pytest.mark.parametrize(
    ("containers", "index"),
    [
        pytest.param([], None, id="none"),
        pytest.param([{"name": "a"}, {"name": "b"}], 0, id="no-ports-first"),
        pytest.param([{"name": "a"}, {"name": "b", "ports": [{"containerPort": 1}]}], 1, id="the-one-with-a-port"),
        pytest.param([{"name": "a", "ports": []}, {"name": "b", "ports": [{"containerPort": 1}]}], 1, id="empty"),
    ],
)
def test_the_serving_container_is_the_first_declaring_a_port(containers: list[Any], index: int | None) -> None:
    assert serving_container_index(containers) == index


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[int]:
    """``server`` on an ephemeral loopback port; yields the port."""
    listening = await asyncio.start_server(server, HOST, 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        server.closing.set()
        listening.close()
        await listening.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http(code: int) -> bytes:
    return f"HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


class Server:
    """Answers each request with what ``reply()`` gives (never, for None), recording the requests."""

    def __init__(self, reply: Callable[[], bytes | None] = lambda: http(200)) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.seen = asyncio.Condition()
        self.closing = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        answer = self.reply()  # decided when the request arrives, with the request counted
        self.requests.append(request)
        async with self.seen:
            self.seen.notify_all()
        if answer is None:
            await self.closing.wait()
        else:
            with contextlib.suppress(ConnectionError):  # a client may hang up before reading it all
                writer.write(answer)
                await writer.drain()
        writer.close()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE), self.seen:
            await self.seen.wait_for(lambda: len(self.requests) >= count)


@pytest.mark.parametrize(
    ("reply", "status", "success"),
    [
        pytest.param(http(200), 200, True, id="200"),
        pytest.param(http(302), 302, True, id="302"),
        pytest.param(http(503), 503, False, id="503"),
        pytest.param(b"HTTP/1.1 200\r\n\r\n", 200, True, id="no-reason-phrase-as-go-net-http-accepts"),
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", None, False, id="not-http"),
        pytest.param(b"\x00" * 70_000, None, False, id="not-http-without-a-line-end-in-64k"),
    ],
)
async def test_http_status_is_the_code_answered_and_only_2xx_or_3xx_succeed(
    reply: bytes, status: int | None, success: bool
) -> None:
    async with serving(Server(lambda: reply)) as port:
        answered = await http_status(HOST, port, "/", timeout=DEADLINE)
    assert (answered, is_success(answered)) == (status, success)


async def test_http_status_sends_the_path_and_the_headers_given() -> None:
    server = Server()
    async with serving(server) as port:
        await http_status(HOST, port, "/ready", timeout=DEADLINE, headers=[("K-Network-Probe", "queue")])
    (request,) = server.requests
    assert request.startswith(b"GET /ready HTTP/1.1\r\n")
    assert b"\r\nK-Network-Probe: queue\r\n" in request
    assert f"\r\nHost: {HOST}:{port}\r\n".encode() in request


async def test_a_closed_port_gives_no_status_and_no_connection() -> None:
    port = closed_port()
    assert await http_status(HOST, port, timeout=DEADLINE) is None
    assert await tcp_open(HOST, port, DEADLINE) is False


async def test_http_status_of_a_server_that_never_answers_is_none_after_the_timeout() -> None:
    async with serving(Server(lambda: None)) as port:
        started = time.monotonic()
        assert await http_status(HOST, port, timeout=0.2) is None
        assert 0.2 <= time.monotonic() - started < 1.0


async def test_tcp_open_is_true_on_a_listening_port() -> None:
    async with serving(Server()) as port:
        assert await tcp_open(HOST, port, DEADLINE) is True


async def test_probe_until_ready_returns_once_the_server_answers_with_the_attempts_it_took() -> None:
    ready = asyncio.Event()
    server = Server(lambda: http(200 if ready.is_set() else 503))  # 503 until ready is set
    async with serving(server) as port:
        task = asyncio.create_task(probe_until_ready(ReadinessCheck(port, "/"), HOST, interval=0.01, timeout=DEADLINE))
        await server.until(1)  # a first attempt, answered 503
        assert not task.done()
        ready.set()
        attempts = await asyncio.wait_for(task, DEADLINE)
    assert attempts == len(server.requests) >= 2


KEY = "default/hello-00001"


def endpoint(port: int) -> Endpoint:
    return Endpoint(HOST, port, "node-a")


class Healthy:
    """The ``on_healthy`` callback: records the keys it is called with."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.reported = asyncio.Event()

    def __call__(self, key: str) -> None:
        self.calls.append(key)
        self.reported.set()


def probe_task(key: str) -> asyncio.Task[Any]:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name().startswith(f"probe:{key}:")]
    return task


async def test_a_candidate_is_probed_until_it_answers_then_healthy_once() -> None:
    ready = asyncio.Event()
    server = Server(lambda: http(200 if ready.is_set() else 503))  # 503 until ready is set
    healthy = Healthy()
    prober = Prober(interval=0.01, on_healthy=healthy)
    async with serving(server) as port:
        prober.update(KEY, {endpoint(port): ReadinessCheck(port, "/")})
        await server.until(1)
        assert (prober.healthy(KEY), prober.probing(KEY)) == (frozenset(), frozenset({endpoint(port)}))
        ready.set()
        await asyncio.wait_for(healthy.reported.wait(), DEADLINE)
        prober.update(KEY, {endpoint(port): ReadinessCheck(port, "/")})  # still a candidate: not probed again
        assert prober.probing(KEY) == frozenset()
    assert healthy.calls == [KEY]
    assert prober.healthy(KEY) == {endpoint(port)}
    assert prober.probes == len(server.requests)
    await prober.close()


async def test_a_removed_candidate_loses_its_health_and_its_probing() -> None:
    server = Server(lambda: http(503))
    prober = Prober(interval=0.01, on_healthy=Healthy())
    async with serving(server) as port:
        healthy, failing = endpoint(1), endpoint(port)
        prober.mark_healthy(KEY, healthy)
        prober.update(KEY, {healthy: ReadinessCheck(1), failing: ReadinessCheck(port, "/")})
        await server.until(1)
        task = probe_task(KEY)
        prober.update(KEY, {})
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)
    assert prober.healthy(KEY) == frozenset()
    assert prober.probing(KEY) == frozenset()


async def test_mark_healthy_records_a_verdict_that_spares_the_candidate_a_probe() -> None:
    healthy = Healthy()
    prober = Prober(interval=0.01, on_healthy=healthy)
    known = endpoint(closed_port())  # a probe of it would fail
    prober.mark_healthy(KEY, known)
    assert prober.healthy(KEY) == {known}
    prober.update(KEY, {known: ReadinessCheck(known.port)})
    assert (prober.probing(KEY), prober.healthy(KEY), healthy.calls) == (frozenset(), frozenset({known}), [])
    await prober.close()


async def test_close_cancels_the_running_probes() -> None:
    server = Server(lambda: http(503))
    prober = Prober(interval=0.01, on_healthy=Healthy())
    async with serving(server) as port:
        prober.update(KEY, {endpoint(port): ReadinessCheck(port, "/")})
        await server.until(1)
        task = probe_task(KEY)
        await asyncio.wait_for(prober.close(), DEADLINE)
    assert task.cancelled()
    assert prober.probing(KEY) == frozenset()
