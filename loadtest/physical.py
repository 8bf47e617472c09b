"""The physical limit: the same app processes spawned directly, without Kubernetes, all at once.

Each process is told its address (``POD_IP``, ``PORT``) as a pod would be, and says when it listens (a line on
stderr). The moment it does, one ``GET /`` is sent; the figure is the time from spawning the process to the first
byte of that answer. Nothing polls, so the measurement itself costs the machine almost nothing: whatever a cold
start through Kubernetes takes beyond this is the platform's share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import pinned

LEAN_APP = Path(__file__).resolve().parent.parent / "devcluster" / "leanapp.py"


@dataclass(frozen=True)
class App:
    """An app to cold-start: its command (as a pod's ``command``) and what it prints once it listens."""

    name: str
    command: tuple[str, ...]
    listening: bytes

    @property
    def pod_command(self) -> list[str]:
        return list(self.command)


SAMPLE = App("sample", ("localsched-sampleapp",), b"listening")
LEAN = App("lean", ("python3", "-S", "-E", str(LEAN_APP)), b"listening")
APPS = {app.name: app for app in (SAMPLE, LEAN)}


async def first_byte(ip: str, port: int, timeout: float = 10.0) -> None:
    """One ``GET /``: returns once the first byte of the answer arrived."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(ip, port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: physical\r\nConnection: close\r\n\r\n")
            await writer.drain()
            if not await reader.read(1):
                raise ConnectionError(f"{ip}:{port} closed without answering")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _one(app: App, ip: str, port: int, env: Mapping[str, str], timeout: float, cpus: str | None) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *pinned([*app.command], cpus), env={**env, "POD_IP": ip, "PORT": str(port), "POD_NAME": f"physical-{ip}"},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            while app.listening not in (line := await proc.stderr.readline()):
                if not line:
                    raise RuntimeError(f"{app.name} app on {ip}:{port} exited ({await proc.wait()}) before listening")
        await first_byte(ip, port)
        return time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def spawn_at_once(
    app: App, addresses: Sequence[str], *, port: int = 8080, timeout: float = 60.0, cpus: str | None = None
) -> list[float]:
    """Start one ``app`` process per address at once (on ``cpus``, the nodes' CPUs of a devcluster that splits
    them); seconds from spawning each to its first byte."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    env["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    return list(await asyncio.gather(*(_one(app, ip, port, env, timeout, cpus) for ip in addresses)))


def addresses(prefix: str, count: int) -> list[str]:
    """``count`` loopback addresses ``prefix.X.Y`` (a /16 of their own, apart from the nodes' pod ranges)."""
    return [f"{prefix}.{200 + i // 250}.{2 + i % 250}" for i in range(count)]
