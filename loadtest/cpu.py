"""Where the machine's CPU goes during a benchmark round, by component (read from /proc, no sampling).

Every process is put in one bucket by its command line: the control plane (etcd, kube-apiserver, ...), the
simulated kubelets, the activators, endpointsctl, the apps (pod processes), the benchmark itself. A pod's
process that exited is counted through its kubelet's reaped-children time (``cutime``/``cstime``), so apps that
started and were deleted again (wasted pods) still show up.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

# (bucket, program names): a process's program is its executable's name, or for Python its script or module.
BUCKETS = (
    ("etcd", ("etcd",)),
    ("kube-apiserver", ("kube-apiserver",)),
    ("kube-controller-manager", ("kube-controller-manager",)),
    ("kube-scheduler", ("kube-scheduler",)),
    ("kubelets (simulated)", ("devcluster.nodesim",)),
    ("activators", ("activator",)),
    ("endpointsctl", ("endpointsctl",)),
    ("knative stand-in", ("devcluster.knative_standin",)),
    ("apps", ("localsched-sampleapp", "leanapp.py")),
)


def program(argv: list[str]) -> str:
    """``kube-apiserver`` for a binary, ``devcluster.nodesim`` for ``python -m devcluster.nodesim``, ``activator``
    for a console script, ``leanapp.py`` for ``python3 -S -E .../leanapp.py``."""
    name = Path(argv[0]).name if argv else ""
    if not name.startswith("python"):
        return name
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, name)
        if arg == "-c":
            return "-c"
        if arg in ("-X", "-W", "-Q"):
            next(args, None)  # the option's value
        elif not arg.startswith("-"):
            return Path(arg).name
    return name


def _bucket(argv: list[str]) -> str | None:
    name = program(argv)
    for bucket, names in BUCKETS:
        if name in names:
            return bucket
    return None


def _times(stat: Path) -> tuple[float, float]:
    """A process's own and its reaped children's CPU seconds (user + system), from its /proc/PID/stat."""
    fields = stat.read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process."""
    return _times(Path(f"/proc/{pid}/stat"))[0]


def run_queue_wait_seconds(pid: int) -> float:
    """How long the process has waited, runnable, for a CPU (/proc/PID/schedstat, second field, in ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def snapshot() -> dict[str, float]:
    """CPU seconds used so far, per bucket (live processes, plus the kubelets' reaped children as apps)."""
    totals: dict[str, float] = defaultdict(float)
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            own, children = _times(entry / "stat")
        except OSError:
            continue
        if int(entry.name) == me:
            totals["benchmark"] += own
            continue
        bucket = _bucket(argv)
        if bucket is None:
            continue
        totals[bucket] += own
        if bucket == "kubelets (simulated)":
            totals["apps"] += children  # containers that exited
    return dict(totals)


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per bucket between two snapshots (a bucket whose processes all ended counts 0)."""
    return {k: round(max(0.0, after.get(k, 0.0) - before.get(k, 0.0)), 2) for k in sorted(set(before) | set(after))}
