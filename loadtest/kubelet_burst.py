"""The simulated kubelet under a burst: N pods bound to the nodes at once, against N processes spawned directly.

    python -m loadtest kubelet [--pods 60 --app sample --profile]

Pods are created with ``spec.nodeName`` already set (no scheduler, no controller: only the kubelet) and spread
over the nodes. Per pod, from the create call: when the kubelet's status first carries the pod IP, when it says
Running, when Ready. In the same run, the physical limit: the same number of app processes spawned directly.
The simulated kubelets' CPU time during the burst is read from /proc, and with ``--profile`` py-spy samples
them and the top functions are reported: the kubelet must cost about what starting N processes costs, plus its
API writes, and never be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from devcluster import controlplane
from loadtest.cpu import cpu_seconds
from loadtest.harness import devcluster, namespace, profile, write_results
from loadtest.physical import APPS, App, addresses, spawn_at_once
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import is_ready


def pod(name: str, node: str, app: App) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"bench": "kubelet-burst"}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "app", "image": f"localsched/{app.name}:dev", "command": app.pod_command,
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
        },
    }  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}  # fmt: skip


async def burst(kube: KubeClient, ns: str, app: App, count: int, nodes: list[str]) -> dict[str, dict[str, float]]:
    """Create ``count`` pods at once; per pod, seconds from its create call to IP, Running and Ready."""
    created: dict[str, float] = {}
    seen: dict[str, dict[str, float]] = {}

    def on_pod(event: Event) -> None:
        name = event.obj["metadata"]["name"]
        status = event.obj.get("status", {})
        marks = seen.setdefault(name, {})
        now = time.perf_counter()
        if status.get("podIP"):
            marks.setdefault("ip", now)
        if status.get("phase") == "Running":
            marks.setdefault("running", now)
        if is_ready(event.obj):
            marks.setdefault("ready", now)

    cache = WatchCache(kube, r.PODS, namespace=ns, label_selector="bench=kubelet-burst")
    cache.add_handler(on_pod)
    cache.start()
    await cache.wait_synced(30)

    async def create(i: int) -> None:
        name = f"burst-{i:03d}"
        created[name] = time.perf_counter()
        await kube.create(r.PODS, pod(name, nodes[i % len(nodes)], app), ns)

    try:
        await asyncio.gather(*(create(i) for i in range(count)))
        await cache.wait_for(lambda c: len(seen) == count and all("ready" in m for m in seen.values()), 120)
    finally:
        await cache.stop()
    return {name: {k: t - created[name] for k, t in marks.items()} for name, marks in seen.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    app = APPS[args.app]
    with devcluster(keep=args.keep) as spec:
        physical = await spawn_at_once(app, addresses("127.51", args.pods), cpus=controlplane.cpus_for(spec, "nodes"))
        state = controlplane.State(spec.state_dir)
        nodes = [n.name for n in spec.node_specs()]
        pids = {n: state.processes[f"node/{n}"]["pid"] for n in nodes}
        async with await KubeClient.from_environment(str(spec.kubeconfig)) as kube, namespace(kube, "kubelet") as ns:
            before = {n: cpu_seconds(pid) for n, pid in pids.items()}
            started = time.perf_counter()
            profiling: asyncio.Task[dict[str, list[tuple[str, int]]]] | None = None
            if args.profile:
                out = Path(tempfile.mkdtemp(prefix="localsched-kubelet-profile-"))
                profiling = asyncio.create_task(profile(pids, args.profile_seconds, out))
            timings = await burst(kube, ns, app, args.pods, nodes)
            wall = time.perf_counter() - started
            after = {n: cpu_seconds(pid) for n, pid in pids.items()}
            tops = await profiling if profiling is not None else {}
            with contextlib.suppress(Exception):
                await kube.delete(r.PODS, "", ns)
    cpu = {n: round(after[n] - before[n], 3) for n in nodes}
    return {
        "settings": vars(args),
        "kubelet_timing": spec.kubelet_timing,
        "physical_limit": summary_ms(physical),
        "pod_ip_in_api": summary_ms([t["ip"] for t in timings.values()]),
        "running_in_api": summary_ms([t["running"] for t in timings.values()]),
        "ready_in_api": summary_ms([t["ready"] for t in timings.values()]),
        "burst_wall_seconds": round(wall, 3),
        "kubelet_cpu_seconds": cpu,
        "kubelet_cpu_ms_per_pod": round(1000 * sum(cpu.values()) / args.pods, 2),
        "profile_top_own_samples": tops,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    rows = "\n".join(
        f"| {label} | {result[key]['p50_ms']} | {result[key]['p99_ms']} | {result[key]['max_ms']} |"
        for label, key in (("physical limit: spawned directly, first byte", "physical_limit"),
                           ("kubelet status carries the pod IP", "pod_ip_in_api"),
                           ("kubelet status says Running", "running_in_api"),
                           ("kubelet status says Ready", "ready_in_api"))
    )  # fmt: skip
    tops = ""
    for node, top in result["profile_top_own_samples"].items():
        tops += f"\n**{node}** (py-spy, own samples):\n\n" + "\n".join(f"- {n} x {f}" for f, n in top[:8]) + "\n"
    return f"""# The simulated kubelet under a burst

`{command}`: {result["settings"]["pods"]} pods ({result["settings"]["app"]} app) created at once with
`spec.nodeName` spread over 3 simulated nodes, kubelet timing `{result["kubelet_timing"]}`; times from each
pod's create call.

| | p50 ms | p99 ms | max ms |
|---|---|---|---|
{rows}

Simulated kubelets' CPU during the burst: {result["kubelet_cpu_seconds"]} s
({result["kubelet_cpu_ms_per_pod"]} ms per pod); the burst took {result["burst_wall_seconds"]} s.
{tops}"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest kubelet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--pods", type=int, default=60)
    parser.add_argument("--app", choices=sorted(APPS), default="sample")
    parser.add_argument("--profile", action="store_true", help="sample the simulated kubelets with py-spy")
    parser.add_argument("--profile-seconds", type=float, default=6.0)
    parser.add_argument("--keep", action="store_true", help="leave the bench devcluster up")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    command = f"python -m loadtest kubelet --pods {args.pods} --app {args.app}" + (" --profile" * args.profile)
    md = markdown(result, command)
    json_path, _ = write_results(f"kubelet_burst_{args.app}", result, md)
    print(md)
    print(f"results: {json_path}")
