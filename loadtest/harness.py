"""Shared benchmark plumbing: a devcluster to run on, a load generator, and result files.

Benchmarks bring up their own devcluster (state in ``$LOCALSCHED_BENCH_STATE_DIR``, default
``~/.local/state/localsched/bench``, ports apart from the demo and the tests) unless ``--reuse`` is given and one
is already up there, and leave it down afterwards. Traffic stays on this machine (pod addresses on the
devcluster's own bridge, or loopback addresses: docs/devcluster.md); every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devcluster import controlplane, network
from devcluster.applying import apply
from devcluster.controlplane import ClusterSpec
from devcluster.daemons import default_account_ready
from localsched.kube import resources as r
from localsched.kube.client import KubeClient

RESULTS = Path(__file__).parent / "results"
BENCH_STATE_DIR = Path(os.environ.get("LOCALSCHED_BENCH_STATE_DIR", Path.home() / ".local/state/localsched/bench"))


def bench_spec(network_mode: str | None = None) -> ClusterSpec:
    """The benchmarks' devcluster: its own ports and range; the netns network where it can be built, else loopback
    (``network_mode``, else ``LOCALSCHED_BENCH_NETWORK``, default auto: docs/devcluster.md)."""
    requested = network_mode or os.environ.get("LOCALSCHED_BENCH_NETWORK", "auto")
    mode, ip_base = network.layout(requested, None, loopback="127.50", netns="10.248")
    return ClusterSpec(state_dir=BENCH_STATE_DIR, nodes=3, port_base=47000, ip_base=ip_base, network=mode)


@contextlib.contextmanager
def devcluster(spec: ClusterSpec | None = None, *, keep: bool = False) -> Any:
    """The benchmark's devcluster, this process (the client, outside the nodes) on the control plane's CPUs."""
    spec = spec or bench_spec()
    control_plane = controlplane.cpus_for(spec, "control-plane")
    if control_plane is not None:
        os.sched_setaffinity(0, {int(c) for c in control_plane.split(",")})
    controlplane.up(spec, fresh=True)
    try:
        yield spec
    finally:
        if not keep:
            controlplane.down(spec.state_dir, quiet=True)


@contextlib.asynccontextmanager
async def namespace(kube: KubeClient, prefix: str) -> AsyncIterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await apply(kube, {"kind": "Namespace", "metadata": {"name": name}})
    await default_account_ready(kube, name)
    try:
        yield name
    finally:
        await kube.delete(r.NAMESPACES, name)


@dataclass(frozen=True)
class LatencySummary:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def of(cls, latencies: list[float], errors: int, seconds: float) -> LatencySummary:
        ordered = sorted(latencies) or [float("nan")]

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        return cls(len(latencies), errors, round(seconds, 3), round(len(latencies) / seconds, 1), pct(0.5),
                   pct(0.9), pct(0.99))  # fmt: skip


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine() -> dict[str, Any]:
    """Where and when a benchmark ran: every result carries it."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"machine": f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = machine()
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps({**meta, **data}, indent=2, default=_plain) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


async def wrk_loop(url: str, headers: dict[str, str], *, concurrency: int, seconds: float) -> LatencySummary:
    """The same closed loop driven by wrk (C, Debian's package): the generator is no longer the bottleneck."""
    cmd = ["wrk", "-t2", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*cmd, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)  # fmt: skip
    out = (await proc.communicate())[0].decode()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = {m.group(1): _seconds(m.group(2)) for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    bad += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return LatencySummary(total - bad, bad, round(seconds, 3), round(rps, 1), round(pct["50"] * 1000, 3),
                          round(pct["90"] * 1000, 3), round(pct["99"] * 1000, 3))  # fmt: skip


async def profile(pids: dict[str, int], seconds: float, out: Path) -> dict[str, list[tuple[str, int]]]:
    """py-spy samples of each process for ``seconds``; the top functions by samples (own time), per process."""
    py_spy = shutil.which(
        "py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if py_spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy): run without --profile or install it")
    procs = {
        node: await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200",
            "--format", "raw", "--output", str(out / f"{node}.txt"), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for node, pid in pids.items()
    }  # fmt: skip
    for proc in procs.values():
        await proc.wait()
    tops: dict[str, list[tuple[str, int]]] = {}
    for node in pids:
        own: Counter[str] = Counter()
        path = out / f"{node}.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            frame = stack.split(";")[-1]
            if not frame.strip() or "select" in frame.split(" (")[0].lower():
                continue  # waiting in the event loop, or a frame without a name: not work
            own[frame.split(" (")[0] + " (" + frame.split("/")[-1] if "/" in frame else frame] += int(count)
        tops[node] = own.most_common(12)
    return tops
