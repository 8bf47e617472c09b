"""Running the project's daemons as plain processes (tests, benchmarks): env, readiness, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from devcluster import versions
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import WatchCache

T = TypeVar("T")


async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    interval: float = 0.05,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll ``check`` (an HTTP endpoint, say) until it returns something truthy; ``error`` after ``timeout``.

    For state with no watch to wait on (a process's metrics, an HTTP answer). A deadline bounds it; the interval
    only paces the polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)  # paces a deadline-bounded poll, not synchronisation


async def service_account_token(kube: KubeClient, namespace: str, name: str) -> str:
    """A token for a ServiceAccount, to run a daemon under its real RBAC: from the TokenRequest API, as a kubelet
    gets a pod's (token secrets are no longer made from 1.24 on). Valid for a day, longer than any run here."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "expirationSeconds": 86400}}  # fmt: skip
    result = await kube.request("POST", r.SERVICEACCOUNTS.path(namespace, name, "token"), body=request)
    return str(result["status"]["token"])


async def default_account_ready(kube: KubeClient, namespace: str, timeout: float = 30) -> None:
    """Wait until a new namespace can take pods: its ``default`` ServiceAccount exists and, on a server that admits
    pods only with a token secret to mount (before 1.21, when projected tokens took over), has one."""
    needs_secret = versions.from_server(await kube.server_version()) < versions.PROJECTED_TOKENS
    cache = WatchCache(kube, r.SERVICEACCOUNTS, namespace=namespace)
    cache.start()
    try:
        await cache.wait_for(
            lambda c: (sa := c.get("default", namespace)) is not None and (bool(sa.get("secrets")) or not needs_secret),
            timeout,
        )
    finally:
        await cache.stop()


def container_pid(pod: Obj) -> int:
    """The pid of a devcluster pod's first container: the simulated kubelet's container ID is ``process://PID``."""
    return int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("process://"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def peak_rss_bytes(pid: int) -> int:
    """A process's peak resident set size (VmHWM in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a daemon's log, for an error message."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def daemon_env(base: Mapping[str, str], settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's env without any ``LOCALSCHED_*``, plus ``base``, plus ``settings`` as ``LOCALSCHED_<KEY>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSCHED_")}
    env.update(base)
    env.update({f"LOCALSCHED_{k.upper()}": v for k, v in (settings or {}).items()})
    return env


@contextlib.asynccontextmanager
async def running_daemon(
    module: str, *, env: Mapping[str, str], log: Path, ready_url: str, http: httpx.AsyncClient,
    stop_timeout: float = 60.0, prefix: Sequence[str] = (),
) -> AsyncIterator[asyncio.subprocess.Process]:  # fmt: skip
    """``python -m module`` until ``ready_url`` answers 200 (30 s at most); SIGTERM, then SIGKILL, afterwards.

    ``prefix`` runs in front of it (entering a node's network namespace: ``devcluster.network.enter_for``)."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", module, env=dict(env), stdout=out, stderr=asyncio.subprocess.STDOUT
        )

    async def ready() -> bool:
        if process.returncode is not None:
            raise RuntimeError(f"{module} exited with {process.returncode}:\n{tail(log)}")
        try:
            return (await http.get(ready_url, timeout=1)).status_code == 200
        except httpx.TransportError:
            return False

    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not await ready():
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{module} not ready within 30s:\n{tail(log)}")
            await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), stop_timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
