"""The activator's own readiness check of a pod IP, as Knative's activator probes pods itself.

Knative's activator does not wait for Kubernetes to call a pod Ready: it learns new pods from the private
Service's endpoints, not-ready addresses included, and probes them itself (every 200 ms there; queue-proxy polls
the user container every 50 ms). localsched does the same on both cold-start paths, with the revision's own
readiness probe (``httpGet`` or ``tcpSocket``; a port of 0 or none is the user port, as Knative's defaulting
writes it; no probe at all means TCP on the user port) run against the pod IP:

* :func:`readiness_check` turns a revision's pod spec into a :class:`ReadinessCheck` (pure);
* :func:`probe` runs it once against an address;
* :class:`Prober` keeps probing candidate addresses (``interval`` apart, slower once a candidate has failed for a
  while) until each answers, and remembers the healthy ones until they stop being candidates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from activator.throttling import Endpoint
from localsched.probes import http_status, is_success, probe_port, serving_container_index, tcp_open

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 0.3  # Knative's activator: probeTimeout
PATIENT_AFTER_SECONDS = 10.0  # a candidate failing this long is probed only every SLOW_INTERVAL_SECONDS
SLOW_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class ReadinessCheck:
    """One readiness probe: an HTTP GET of ``path`` (2xx/3xx is ready) or, with ``path`` None, a TCP connect."""

    port: int
    path: str | None = None
    scheme: str = "http"
    headers: tuple[tuple[str, str], ...] = ()
    host: str | None = None  # an httpGet ``host`` overrides the pod IP (rare)


class ProbeSpecError(ValueError):
    """A readiness probe the activator cannot run (an unknown named port, a port outside 1..65535)."""


def _port(value: Any, container: Mapping[str, Any], user_port: int) -> int:
    try:
        return probe_port(value, container, user_port)  # Knative: port 0 (or none) means the user port
    except ValueError as exc:
        raise ProbeSpecError(str(exc)) from exc


def readiness_check(pod_spec: Mapping[str, Any], user_port: int) -> ReadinessCheck:
    """The check for a revision's pods: its serving container's readiness probe, else TCP on the user port.

    The serving container is the one declaring the user port (the first container when none does), as for
    Knative, whose queue-proxy runs that container's probe: a sidecar listed first does not lend its probe, and a
    port of 0 (or none) means ``user_port``, as Knative's defaulting writes it. An ``exec`` probe cannot be run
    from outside the pod; like Knative's activator, which then relies on TCP reachability of the serving port, the
    check becomes a TCP connect to the user port.
    """
    containers = pod_spec.get("containers") or []
    index = serving_container_index(containers)
    container: Mapping[str, Any] = {}
    if index is not None and isinstance(containers[index], Mapping):
        container = containers[index]
    probe = container.get("readinessProbe") or {}
    if "httpGet" in probe:
        http = probe["httpGet"] or {}
        headers = tuple((h["name"], h["value"]) for h in http.get("httpHeaders") or [])
        return ReadinessCheck(_port(http.get("port"), container, user_port), http.get("path") or "/",
                              str(http.get("scheme") or "HTTP").lower(), headers, http.get("host") or None)  # fmt: skip
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"] or {}
        return ReadinessCheck(_port(tcp.get("port"), container, user_port), host=tcp.get("host") or None)
    return ReadinessCheck(user_port)


async def probe(check: ReadinessCheck, ip: str, timeout: float) -> bool:
    """Run ``check`` against ``ip`` once; any failure (refused, timeout, 4xx/5xx) is False."""
    host = check.host or ip
    if check.path is None:
        return await tcp_open(host, check.port, timeout)
    status = await http_status(host, check.port, check.path, timeout=timeout, headers=check.headers,
                               https=check.scheme == "https")  # fmt: skip
    return is_success(status)


async def probe_until_ready(check: ReadinessCheck, ip: str, *, interval: float, timeout: float) -> int:
    """Probe ``ip`` every ``interval`` until it answers; returns the number of probes it took. Cancel to stop."""
    attempts = 0
    patient_from = time.monotonic() + PATIENT_AFTER_SECONDS
    while True:
        attempts += 1
        started = time.monotonic()
        if await probe(check, ip, timeout):
            return attempts
        pause = interval if started < patient_from else SLOW_INTERVAL_SECONDS
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


class Prober:
    """Probes the candidate addresses of each revision until they answer; the ones that did are healthy.

    ``update(key, candidates)`` replaces a revision's candidates (address -> check): probing starts for new ones
    and stops for those gone, which also forget their health. ``on_healthy(key)`` is called (synchronously, on
    the loop) when one of the revision's candidates first answers. ``mark_healthy`` records a result obtained
    elsewhere (a cold start that probed its own pod).
    """

    def __init__(
        self,
        *,
        interval: float,
        on_healthy: Callable[[str], None],
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.on_healthy = on_healthy
        self._tasks: dict[str, dict[Endpoint, asyncio.Task[None]]] = {}
        self._healthy: dict[str, set[Endpoint]] = {}
        self.probes = 0

    def healthy(self, key: str) -> frozenset[Endpoint]:
        return frozenset(self._healthy.get(key, ()))

    def probing(self, key: str) -> frozenset[Endpoint]:
        return frozenset(self._tasks.get(key, ()))

    def mark_healthy(self, key: str, endpoint: Endpoint) -> None:
        self._healthy.setdefault(key, set()).add(endpoint)

    def update(self, key: str, candidates: Mapping[Endpoint, ReadinessCheck]) -> None:
        tasks = self._tasks.get(key, {})
        healthy = self._healthy.get(key, set())
        for endpoint in [e for e in tasks if e not in candidates]:
            tasks.pop(endpoint).cancel()
        healthy.intersection_update(candidates)
        for endpoint, check in candidates.items():
            if endpoint not in tasks and endpoint not in healthy:
                tasks[endpoint] = asyncio.get_running_loop().create_task(
                    self._probe(key, endpoint, check), name=f"probe:{key}:{endpoint.ip}"
                )
        if tasks:
            self._tasks[key] = tasks
        else:
            self._tasks.pop(key, None)
        if not healthy:
            self._healthy.pop(key, None)

    def forget(self, key: str) -> None:
        self.update(key, {})

    async def _probe(self, key: str, endpoint: Endpoint, check: ReadinessCheck) -> None:
        try:
            attempts = await probe_until_ready(check, endpoint.ip, interval=self.interval, timeout=self.timeout)
        finally:
            tasks = self._tasks.get(key)
            if tasks is not None and tasks.get(endpoint) is asyncio.current_task():
                del tasks[endpoint]
                if not tasks:
                    del self._tasks[key]
        self.probes += attempts
        self.mark_healthy(key, endpoint)
        self.on_healthy(key)

    async def close(self) -> None:
        tasks = [t for by_endpoint in self._tasks.values() for t in by_endpoint.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
