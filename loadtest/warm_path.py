"""Warm-path benchmark: the same pod reached straight, through nginx, and through the activator, in one run.

    python -m loadtest warm [--rounds 3 --seconds 4 --concurrency 16 --rate 500 --profile]

The revision has one Ready pod; the activator is the DaemonSet's pod on the same node; nginx (Debian's
``nginx-light``, one worker process, keep-alive to the pod) is started by the benchmark as a plain reverse proxy
on loopback. Rounds alternate between the three paths, so drift on a noisy machine hits them alike, and results
are medians over rounds:

- throughput at saturation: a closed loop of ``--concurrency`` connections (wrk when installed, else the raw
  asyncio loop of ``loadtest/rawload.py``);
- latency at a fixed moderate rate (``--rate`` requests a second, open loop): what each proxy adds to the pod;
- CPU seconds per 1,000 requests of the proxy process (activator, nginx) during the saturation rounds, and the
  activator's peak RSS.

Any failed request fails the run. With ``--profile`` py-spy samples the activator under saturation and the top
functions (own time) are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from devcluster.daemons import container_pid, free_port, peak_rss_bytes
from devcluster.samples import sample_revision
from loadtest import plots
from loadtest.cpu import cpu_seconds, run_queue_wait_seconds
from loadtest.harness import (
    RESULTS,
    LatencySummary,
    devcluster,
    have_wrk,
    machine,
    median,
    namespace,
    profile,
    write_results,
    wrk_loop,
)
from loadtest.nginx import reverse_proxy
from loadtest.rawload import back_to_back, fixed_rate
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import WatchCache
from localsched.predicates import is_ready

PATHS = ("direct", "nginx", "activator")
NGINX_HOST = "127.0.0.1"


async def ready_pod(kube: KubeClient, ns: str, selector: str, node: str | None = None) -> Obj:
    cache = WatchCache(kube, r.PODS, namespace=ns, label_selector=selector)
    cache.start()
    try:
        return await cache.wait_for(
            lambda c: next((p for p in c if is_ready(p) and node in (None, p["spec"].get("nodeName"))), None), 60
        )
    finally:
        await cache.stop()


async def saturate(url: str, headers: dict[str, str], args: argparse.Namespace) -> LatencySummary:
    if args.generator == "wrk":
        return await wrk_loop(url, headers, concurrency=args.concurrency, seconds=args.seconds)
    return await back_to_back(url, headers, concurrency=args.concurrency, seconds=args.seconds,
                              max_requests=args.max_requests)  # fmt: skip


def _fail_on_errors(what: str, summary: LatencySummary) -> LatencySummary:
    if summary.errors:
        raise SystemExit(f"warm path: {summary.errors} of {summary.requests + summary.errors} requests {what} "
                         "failed; no figures from that")  # fmt: skip
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    args.generator = "wrk" if args.generator == "wrk" or (args.generator == "auto" and have_wrk()) else "python"
    with devcluster(keep=args.keep) as spec:
        async with await KubeClient.from_environment(str(spec.kubeconfig)) as kube, namespace(kube, "bench") as ns:
            # One pod from the start, kept so by the autoscaler however hard it is loaded: Knative's min and max scale.
            one = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
            await kube.create(r.REVISIONS, sample_revision("warm-00001", ns, annotations=one), ns)
            pod = await ready_pod(kube, ns, "serving.knative.dev/revision=warm-00001")
            node = pod["spec"]["nodeName"]
            activator = await ready_pod(kube, "localsched-system", "app.kubernetes.io/name=activator", node)
            activator_pid = container_pid(activator)
            pod_address = f"{pod['status']['podIP']}:8080"
            nginx_address = f"{NGINX_HOST}:{free_port(NGINX_HOST)}"
            async with reverse_proxy(pod_address, nginx_address) as nginx_pid:
                result = await measure(args, {
                    "direct": (f"http://{pod_address}/", {}),
                    "nginx": (f"http://{nginx_address}/", {}),
                    "activator": (f"http://{activator['status']['podIP']}:8012/",
                                  {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": "warm-00001"}),
                }, {"activator": activator_pid, "nginx": nginx_pid})  # fmt: skip
                return {**result, "network": f"{spec.network} (pods in {spec.ip_base}.0.0/16)"}


async def measure(
    args: argparse.Namespace, targets: dict[str, tuple[str, dict[str, str]]], pids: dict[str, int]
) -> dict[str, Any]:
    for path in PATHS:  # warm-up: connections, caches, the pod's threads
        url, headers = targets[path]
        await fixed_rate(url, headers, rate=200, seconds=1)
    saturation: dict[str, list[LatencySummary]] = {path: [] for path in PATHS}
    at_rate: dict[str, list[LatencySummary]] = {path: [] for path in PATHS}
    cpu_ms_per_1000: dict[str, list[float]] = {path: [] for path in pids}
    # Per proxy process during the fixed-rate rounds: CPU (cores) and time spent runnable but not running (ms/s).
    at_rate_load: dict[str, list[tuple[float, float]]] = {path: [] for path in pids}
    for _ in range(args.rounds):
        for path in PATHS:
            url, headers = targets[path]
            before = cpu_seconds(pids[path]) if path in pids else 0.0
            summary = _fail_on_errors(f"to {path} at saturation", await saturate(url, headers, args))
            saturation[path].append(summary)
            if path in pids:
                used = cpu_seconds(pids[path]) - before
                cpu_ms_per_1000[path].append(round(used / summary.requests * 1e6, 1))
        for path in PATHS:
            url, headers = targets[path]
            ran = (cpu_seconds(pids[path]), run_queue_wait_seconds(pids[path])) if path in pids else (0.0, 0.0)
            summary = await fixed_rate(url, headers, rate=args.rate, seconds=args.rate_seconds)
            at_rate[path].append(summary)
            if path in pids:
                used, waited = cpu_seconds(pids[path]) - ran[0], run_queue_wait_seconds(pids[path]) - ran[1]
                at_rate_load[path].append((round(used / summary.seconds, 3), round(waited / summary.seconds * 1000, 1)))
    tops: list[tuple[str, int]] = []
    if args.profile:
        url, headers = targets["activator"]
        out = Path(tempfile.mkdtemp(prefix="localsched-warm-profile-"))
        profiling = asyncio.create_task(profile({"activator": pids["activator"]}, args.seconds, out))
        _fail_on_errors("to the activator while profiled", await saturate(url, headers, args))
        tops = (await profiling)["activator"]
    return {
        "settings": vars(args),
        "summary": summarize(saturation, at_rate, cpu_ms_per_1000, at_rate_load, peak_rss_bytes(pids["activator"])),
        "saturation": saturation,
        "at_rate": at_rate,
        "profile_top_own_samples": tops,
    }


def summarize(
    saturation: dict[str, list[LatencySummary]],
    at_rate: dict[str, list[LatencySummary]],
    cpu_ms_per_1000: dict[str, list[float]],
    at_rate_load: dict[str, list[tuple[float, float]]],
    activator_peak_rss: int,
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for path in PATHS:
        summary[path] = {
            "rps": median([s.rps for s in saturation[path]]),
            "saturation_p50_ms": median([s.p50_ms for s in saturation[path]]),
            "saturation_p99_ms": median([s.p99_ms for s in saturation[path]]),
            "at_rate_p50_ms": median([s.p50_ms for s in at_rate[path]]),
            "at_rate_p99_ms": median([s.p99_ms for s in at_rate[path]]),
        }
        if path in cpu_ms_per_1000:
            summary[path]["cpu_seconds_per_1000"] = round(median(cpu_ms_per_1000[path]) / 1000, 3)
            summary[path]["at_rate_cpu_cores"] = median([cores for cores, _ in at_rate_load[path]])
            summary[path]["at_rate_run_queue_wait_ms_per_s"] = median([wait for _, wait in at_rate_load[path]])
    for proxy in ("nginx", "activator"):
        summary[proxy]["added_p50_ms"] = round(
            summary[proxy]["at_rate_p50_ms"] - summary["direct"]["at_rate_p50_ms"], 3
        )
        summary[proxy]["added_p99_ms"] = round(
            summary[proxy]["at_rate_p99_ms"] - summary["direct"]["at_rate_p99_ms"], 3
        )
    summary["activator"]["peak_rss_mib"] = round(activator_peak_rss / 2**20, 1)
    summary["ratio_activator_over_nginx"] = {"rps": round(summary["activator"]["rps"] / summary["nginx"]["rps"], 3)}
    summary["ratio_activator_over_direct"] = {"rps": round(summary["activator"]["rps"] / summary["direct"]["rps"], 3)}
    return summary


def markdown(result: dict[str, Any], command: str) -> str:
    s, settings = result["summary"], result["settings"]
    rows = []
    for path, label in (
        ("direct", "straight to the pod"),
        ("nginx", "through nginx"),
        ("activator", "through the activator"),
    ):
        p = s[path]
        added = f"{p['added_p50_ms']:+.2f} / {p['added_p99_ms']:+.2f}" if "added_p50_ms" in p else ""
        cpu = f"{p['cpu_seconds_per_1000']:.3f}" if "cpu_seconds_per_1000" in p else ""
        load = (f"{p['at_rate_cpu_cores']:.2f} / {p['at_rate_run_queue_wait_ms_per_s']:.0f}"
                if "at_rate_cpu_cores" in p else "")  # fmt: skip
        rows.append(f"| {label} | {p['rps']:.0f} | {p['at_rate_p50_ms']:.2f} / {p['at_rate_p99_ms']:.2f} | {added} "
                    f"| {cpu} | {load} |")  # fmt: skip
    tops = "".join(f"\n- {n} x {f}" for f, n in result["profile_top_own_samples"][:12])
    profile_md = f"\n\nThe activator under saturation, py-spy, top functions by own samples:\n{tops}\n" if tops else ""
    table = "\n".join(rows)
    return f"""# Warm path: straight to the pod, through nginx, through the activator

`{command}`: {result["machine"]}, {result["when"]}; devcluster network: {result.get("network", "loopback")}
(docs/devcluster.md). One run, the three paths alternating; medians over
{settings["rounds"]} rounds. Saturation: {settings["concurrency"]} connections for {settings["seconds"]} s
({settings["generator"]}). Latency: an open loop at {settings["rate"]:g} req/s for {settings["rate_seconds"]} s, from
each request's due time. CPU: the proxy process's own, per 1,000 requests at saturation; at the fixed rate, the
cores it used and how long it waited, runnable, for a CPU (`/proc/PID/schedstat`). No request failed.

| path | req/s at saturation | ms p50 / p99 at {settings["rate"]:g} req/s | added ms p50 / p99 | CPU s per 1,000 | at {settings["rate"]:g} req/s: cores / ms waiting for a CPU per s |
|---|---|---|---|---|---|
{table}

Activator over nginx, throughput: **{s["ratio_activator_over_nginx"]["rps"]}**; activator over direct:
{s["ratio_activator_over_direct"]["rps"]}. Activator peak RSS: {s["activator"]["peak_rss_mib"]} MiB.

The load generator, the pod, both proxies and the control plane share the machine's cores, so absolute figures
are this machine's; the ratios are the claim.{profile_md}
"""  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="each saturation round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=500.0, help="requests a second for the latency rounds")
    parser.add_argument("--rate-seconds", type=float, default=4.0, help="each fixed-rate round")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per round of the python generator")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="saturation load generator: wrk if installed, else raw asyncio")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="sample the activator with py-spy under saturation")
    parser.add_argument("--keep", action="store_true", help="leave the bench devcluster up")
    args = parser.parse_args()
    command = (f"python -m loadtest warm --rounds {args.rounds} --seconds {args.seconds} --concurrency "
               f"{args.concurrency} --rate {args.rate:g}" + " --profile" * args.profile)  # fmt: skip
    plots.require()
    result = asyncio.run(run(args))
    json_path, md_path = write_results("warm_path", result, markdown({**machine(), **result}, command))
    plots.warm_path(result["summary"], PATHS, RESULTS / "warm_path.png")
    print(md_path.read_text())
    print(f"results: {json_path}")


if __name__ == "__main__":
    main()
