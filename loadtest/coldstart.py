"""Cold-start benchmark: local scheduling vs the standard path, through the DaemonSet activators, in one run.

    python -m loadtest coldstart [--apps sample,lean --sizes 1,20,60 --singles 10 --bursts 2]

On one devcluster (real API server, controller-manager and scheduler; simulated kubelets with a real kubelet's
timing), revisions at zero are cold-started the way an ingress would reach them: each revision's request goes to
an activator taken from its published ``{rev}-activationendpoints``. A single revision, then bursts of many
revisions at once across the three nodes; local scheduling on and off alternate (the Revision annotation
``localsched.dev/local-scheduling: "false"`` sends its cold start down the activator's standard path: the demand
reported to the autoscaler (the devcluster's stand-in for Knative's, which decides at once for a revision at zero),
the Deployment scaled from zero by it, the controller chain, the private endpoints probed as Knative's activator
does).
Before each round, the physical limit: the same number of app processes spawned directly, without Kubernetes.

Per cold start it records the client's time to first byte, the activator's own step timestamps (``/debug/
coldstarts``), whether the ReplicaSet kept the locally scheduled pod, the pods created (wasted creations) and the
most replicas seen (maxScale is 1). Any failed request fails the run. Writes ``loadtest/results/coldstart.json``
and ``.md``, a CDF and a step-breakdown plot, and the README's results section.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from devcluster import controlplane
from devcluster.activators import daemonset_activators
from devcluster.samples import sample_revision
from loadtest import cpu, plots
from loadtest.harness import RESULTS, bench_spec, devcluster, machine, namespace, write_results
from loadtest.physical import APPS, App, addresses, spawn_at_once
from localsched.knative import REVISION_LABEL, revision_key_of
from localsched.kube import resources as r
from localsched.kube.client import STRATEGIC_PATCH, KubeClient, Obj
from localsched.kube.slices import endpoints_of
from localsched.kube.watching import Event, WatchCache

MODES = ("local", "standard")
SYSTEM_NAMESPACE = "localsched-system"


@dataclass
class Sample:
    app: str
    size: int
    mode: str
    revision: str
    ttfb: float
    status: int
    activator_node: str
    served_by: str = ""  # the pod that answered the first request
    served_node: str = ""
    kept_local: bool | None = None  # local mode: the pod that stayed is the one the activator scheduled
    pods_created: int = 0
    max_replicas: int = 0
    pod_exists: float | None = None  # seconds from the request to the revision's first pod object
    ip_reported: float | None = None  # ... to the first kubelet status with a pod IP
    record: dict[str, Any] = field(default_factory=dict)  # the activator's journal entry
    round_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by component, the whole round


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def show(self, what: str, answered: int, size: int) -> None:
        width = 30
        filled = int(width * (self.done + answered / max(size, 1)) / self.total)
        elapsed = time.monotonic() - self.started
        line = f"\r[coldstart] {'#' * filled}{'.' * (width - filled)} {self.done}/{self.total} {what}: "
        sys.stderr.write(f"{line}{answered}/{size} answered, {elapsed:.0f}s elapsed   ")
        sys.stderr.flush()

    def step(self) -> None:
        self.done += 1


class Watch:
    """Pods and Deployments of the benchmark namespace: creations per revision, most replicas, what settled."""

    def __init__(self, kube: KubeClient, ns: str, slices: r.Resource) -> None:
        self.pods = WatchCache(kube, r.PODS, namespace=ns, label_selector=REVISION_LABEL)
        self.deployments = WatchCache(kube, r.DEPLOYMENTS, namespace=ns)
        self.replicasets = WatchCache(kube, r.REPLICASETS, namespace=ns, label_selector=REVISION_LABEL)
        self.replicasets.add_index("revision", revision_key_of)
        self.slices = WatchCache(kube, slices, namespace=ns)
        self.created: dict[str, set[str]] = defaultdict(set)
        self.terminating: set[str] = set()  # pods whose deletion has been seen
        self.first_pod_at: dict[str, float] = {}  # revision -> when its first pod was seen (perf_counter)
        self.first_ip_at: dict[str, float] = {}  # revision -> when a pod of it was first seen with an IP
        self.max_replicas: dict[str, int] = defaultdict(int)
        self.pods.add_handler(self._on_pod)
        self.deployments.add_handler(self._on_deployment)

    def _on_pod(self, event: Event) -> None:
        meta = event.obj["metadata"]
        revision = (meta.get("labels") or {}).get(REVISION_LABEL, "")
        self.created[revision].add(meta["uid"])
        now = time.perf_counter()
        self.first_pod_at.setdefault(revision, now)
        if event.obj.get("status", {}).get("podIP"):
            self.first_ip_at.setdefault(revision, now)
        if event.type == "DELETED" or meta.get("deletionTimestamp"):
            self.terminating.add(meta["name"])

    def _on_deployment(self, event: Event) -> None:
        name = event.obj["metadata"]["name"].removesuffix("-deployment")
        self.max_replicas[name] = max(self.max_replicas[name], int(event.obj["spec"].get("replicas") or 0))

    async def start(self) -> None:
        for cache in self.caches:
            cache.start()
            await cache.wait_synced(30)

    async def stop(self) -> None:
        for cache in self.caches:
            await cache.stop()

    @property
    def caches(self) -> tuple[WatchCache, ...]:
        return (self.pods, self.deployments, self.replicasets, self.slices)

    def pods_of(self, revision: str) -> list[Obj]:
        return [p for p in self.pods if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision]

    def settled(self, revisions: list[str]) -> bool:
        """Each revision has exactly one pod, its ReplicaSet's, not terminating, as its Deployment wants."""
        for name in revisions:
            pods = self.pods_of(name)
            deployment = self.deployments.get(f"{name}-deployment", self.pods.namespace or "")
            if deployment is None or int(deployment["spec"].get("replicas") or 0) != 1:
                return False
            if len(pods) != 1 or pods[0]["metadata"].get("deletionTimestamp"):
                return False
            owners = pods[0]["metadata"].get("ownerReferences") or []
            if not any(o.get("kind") == "ReplicaSet" and o.get("controller") for o in owners):
                return False  # a stand-in not handed over yet: the ReplicaSet may still make a pod of its own
        return True

    def counted(self, names: list[str]) -> bool:
        """Each revision's ReplicaSet has counted exactly one pod since (else a surplus pod may be on its way)."""
        return all(any(int(rs.get("status", {}).get("replicas") or 0) == 1
                       for rs in self.replicasets.by_index("revision", f"{self.replicasets.namespace}/{name}"))
                   for name in names)  # fmt: skip

    def activators_of(self, revision: str) -> list[str]:
        slice_obj = self.slices.get(f"{revision}-activationendpoints", self.pods.namespace or "")
        return [ep.address for ep in endpoints_of(slice_obj)] if slice_obj else []


def changed_since(version: str, cache: WatchCache) -> bool:
    return cache.resource_version != version


async def settle(kube: KubeClient, ns: str, watch: Watch, names: list[str], timeout: float = 120) -> None:
    """Until the revisions are settled (one pod each, its ReplicaSet's) as the watch sees it, their ReplicaSets have
    counted one pod each, and a fresh list from the API server confirms it: a pod a ReplicaSet made just before an
    adoption may not be in the watch yet."""
    async with asyncio.timeout(timeout):
        while True:
            await watch.pods.wait_for(lambda _: watch.settled(names), timeout)
            await watch.replicasets.wait_for(lambda _: watch.counted(names), timeout)
            if not watch.settled(names):
                continue
            listed = await kube.list(r.PODS, ns, label_selector=REVISION_LABEL)
            counts = Counter((p["metadata"].get("labels") or {}).get(REVISION_LABEL) for p in listed["items"])
            if all(counts[n] == 1 for n in names):
                return
            await watch.pods.wait_for(functools.partial(changed_since, watch.pods.resource_version), timeout)


def revision_body(name: str, ns: str, app: App, mode: str) -> Obj:
    annotations = {"autoscaling.knative.dev/max-scale": "1"}
    if mode == "standard":
        annotations["localsched.dev/local-scheduling"] = "false"
    return sample_revision(name, ns, annotations=annotations, command=app.pod_command, cpu="50m", memory="32Mi")


async def time_to_first_byte(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[float, int, Obj]:
    started = time.perf_counter()
    async with http.stream("GET", url, headers=headers) as response:
        elapsed = time.perf_counter() - started
        body = await response.aread()
    try:
        payload = httpx.Response(200, content=body).json() if response.status_code == 200 else {}
    except ValueError:
        payload = {}
    return elapsed, response.status_code, payload


async def journals(http: httpx.AsyncClient, activators: dict[str, str]) -> dict[str, Obj]:
    """The activators' latest journal entry per revision key."""
    entries: dict[str, Obj] = {}
    for ip in activators:
        for record in (await http.get(f"http://{ip}:9090/debug/coldstarts")).json():
            entries[record["revision"]] = record
    return entries


async def round_(
    kube: KubeClient, http: httpx.AsyncClient, ns: str, watch: Watch, activators: dict[str, str], *,
    app: App, size: int, mode: str, tag: str, rng: random.Random, progress: Progress,
) -> list[Sample]:  # fmt: skip
    """Cold-start ``size`` fresh revisions at once (one request each) down ``mode``; settle; clean up."""
    names = [f"{tag}-{i:02d}-00001" for i in range(size)]
    await asyncio.gather(*(kube.create(r.REVISIONS, revision_body(n, ns, app, mode), ns) for n in names))
    await watch.slices.wait_for(lambda _: all(watch.activators_of(n) for n in names), 120)
    # A revision at zero has had its Deployment and ReplicaSet since it was created: wait for the ReplicaSets too
    # (a local cold start needs the template; without one it would take the standard path).
    await watch.replicasets.wait_for(lambda c: all(c.by_index("revision", f"{ns}/{n}") for n in names), 120)
    if size == 1:
        await asyncio.sleep(rng.random())  # a random phase against the kubelets' relist ticks
    cpu_before = cpu.snapshot()
    answered = 0

    async def one(name: str) -> Sample:
        nonlocal answered
        ip = rng.choice(sorted(watch.activators_of(name)))
        headers = {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": name}
        sent = time.perf_counter()
        ttfb, status, payload = await time_to_first_byte(http, f"http://{ip}:8012/", headers)
        answered += 1
        progress.show(f"{app.name} app, {size} at once, {mode}", answered, size)
        sample = Sample(app.name, size, mode, name, ttfb, status, activators.get(ip, ip),
                        payload.get("pod", ""), payload.get("node", ""))  # fmt: skip
        if name in watch.first_pod_at:
            sample.pod_exists = round(watch.first_pod_at[name] - sent, 4)
        if name in watch.first_ip_at:
            sample.ip_reported = round(watch.first_ip_at[name] - sent, 4)
        return sample

    samples = list(await asyncio.gather(*(one(n) for n in names)))
    await settle(kube, ns, watch, names)
    cpu_used = cpu.used(cpu_before, cpu.snapshot())
    records = await journals(http, activators)
    for sample in samples:
        sample.record = records.get(f"{ns}/{sample.revision}", {})
        sample.round_cpu = cpu_used
        if mode == "local":  # kept: the pod the activator wrote was never deleted before the clean-up below
            local_pod = sample.record.get("pod", "")
            sample.kept_local = bool(local_pod) and local_pod not in watch.terminating
    # Deleted, not scaled to zero: the autoscaler owns the replicas and would scale a revision it just saw demand
    # for back up. The garbage collector takes the Deployment, the ReplicaSet and the pods with it.
    await asyncio.gather(*(kube.delete(r.REVISIONS, n, ns) for n in names))
    await watch.pods.wait_for(lambda _: not any(watch.pods_of(n) for n in names), 120)
    for sample in samples:  # counted once every pod is gone: a late surplus pod is counted too
        sample.pods_created = len(watch.created[sample.revision])
        sample.max_replicas = watch.max_replicas[sample.revision]
    progress.step()
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats_ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(pct(values, 0.9) * 1000, 1),
        "p99_ms": round(pct(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


# The step breakdown: each path's milestones in the activator's journal, in order; a segment is the time from the
# previous milestone (the cold start's start) to this one.
SEGMENTS = {
    "local": (("API: create pod (and claim, if at creation)", ("created",)),
              ("kubelet reports the pod IP", ("ip_known",)),
              ("own readiness check", ("probe_ok",)),
              ("claim (if once Running)", ("claimed", "admitted")),
              ("forward: first byte", ("first_byte",))),
    "standard": (("API: scale from zero", ("scaled", "already_scaled")),
                 ("controllers, kubelet, endpointslice", ("ip_known",)),
                 ("own readiness check", ("ready",)),
                 ("forward: first byte", ("first_byte",))),
}  # fmt: skip


def breakdown(mode: str, records: list[Obj]) -> dict[str, float]:
    """Median ms per segment of ``mode``'s critical path."""
    per_segment: dict[str, list[float]] = defaultdict(list)
    for record in records:
        steps = record.get("steps") or {}
        previous = 0.0
        for label, keys in SEGMENTS[mode]:
            at = max((steps[k] for k in keys if k in steps), default=None)
            if at is None:
                continue
            per_segment[label].append(max(0.0, at - previous))
            previous = max(previous, at)
    return {label: round(statistics.median(v) * 1000, 1) for label, v in per_segment.items()}


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    """One cold start per line: what the client saw and the activator's steps (the round's CPU is in the summary)."""
    with path.open("w") as out:
        for sample in samples:
            record = sample.get("record") or {}
            row = {k: v for k, v in sample.items() if k not in ("record", "round_cpu")}
            row["steps"] = record.get("steps", {})
            row["notes"] = record.get("notes", {})
            out.write(json.dumps(row, separators=(",", ":")) + "\n")


def _median_ms(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present) * 1000, 1) if present else None


def _median_cpu(group: list[Sample]) -> dict[str, float]:
    """Median CPU seconds per component over the rounds of a group (one entry per round)."""
    rounds = list({id(s.round_cpu): s.round_cpu for s in group}.values())
    keys = sorted({k for r in rounds for k in r})
    return {k: round(statistics.median(r.get(k, 0.0) for r in rounds), 2) for k in keys}


def summarize(samples: list[Sample], physical: dict[tuple[str, int], list[float]]) -> dict[str, Any]:
    groups: dict[tuple[str, int], dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        groups[(s.app, s.size)][s.mode].append(s)
    out: dict[str, Any] = {}
    for (app, size), by_mode in sorted(groups.items()):
        entry: dict[str, Any] = {"physical": stats_ms(physical[(app, size)])}
        for mode, group in by_mode.items():
            records = [s.record for s in group if s.record]
            entry[mode] = {
                "ttfb": stats_ms([s.ttfb for s in group]),
                "steps_median_ms": breakdown(mode, records),
                "wasted_pod_creations": sum(max(0, s.pods_created - 1) for s in group),
                "max_replicas": max(s.max_replicas for s in group),
                "maxscale_violations": sum(s.max_replicas > 1 for s in group),
                "served_on_activator_node": sum(s.served_node == s.activator_node for s in group),
                "api_calls_before_first_byte": sorted({(r["critical_path"]["api_reads"],
                                                        r["critical_path"]["api_writes"]) for r in records}),
                "waited_on": sorted({" -> ".join(r["critical_path"]["waits"]) for r in records}),
                "cpu_seconds_per_round": _median_cpu(group),
                # The parts local scheduling changes, measured by the client's own watch (low noise: no relist in
                # them): the request until the revision's pod exists, and the pod IP's report until the first byte.
                "request_to_pod_exists_ms": _median_ms([s.pod_exists for s in group]),
                "ip_reported_to_first_byte_ms": _median_ms([s.ttfb - s.ip_reported for s in group
                                                            if s.ip_reported is not None]),
                "ttfb_mean_ms": round(statistics.mean(s.ttfb for s in group) * 1000, 1),
                "ttfb_mean_standard_error_ms": round(statistics.stdev(s.ttfb for s in group) / len(group) ** 0.5
                                                    * 1000, 1) if len(group) > 1 else None,
            }  # fmt: skip
            if mode == "local":
                kept = [s.kept_local for s in group]
                entry[mode]["replicaset_kept_local"] = f"{sum(bool(k) for k in kept)}/{len(kept)}"
                entry[mode]["claim_at"] = sorted({r.get("notes", {}).get("claim_at", "?") for r in records})
        if "local" in entry and "standard" in entry:
            local, standard, limit = entry["local"]["ttfb"], entry["standard"]["ttfb"], entry["physical"]
            entry["ratios"] = {
                "local_over_standard_p50": round(local["p50_ms"] / standard["p50_ms"], 3),
                "local_over_standard_p99": round(local["p99_ms"] / standard["p99_ms"], 3),
                "local_over_physical_p99": round(local["p99_ms"] / limit["p99_ms"], 3),
                "local_minus_physical_p50_ms": round(local["p50_ms"] - limit["p50_ms"], 1),
            }
        out[f"{app}/{size}"] = entry
    return out


def targets(summary: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The issue's targets, each with the measured figure and whether it is met."""
    rows: list[tuple[str, str, bool]] = []
    for key, entry in summary.items():
        app, size = key.split("/")
        ratios = entry.get("ratios")
        if ratios is None:
            continue
        if size == "1":
            gap = ratios["local_minus_physical_p50_ms"]
            rows.append((f"{app} app, single: local p50 - physical p50 <= 50 ms", f"{gap} ms", gap <= 50))
            ratio = ratios["local_over_standard_p50"]
            rows.append((f"{app} app, single: local / standard p50 <= 1.0", f"{ratio}", ratio <= 1.0))
        if size == "60":
            ratio = ratios["local_over_standard_p99"]
            rows.append((f"{app} app, 60 at once: local p99 <= 1/3 standard p99", f"{ratio}", ratio <= 1 / 3))
            ratio = ratios["local_over_physical_p99"]
            rows.append((f"{app} app, 60 at once: local p99 <= 1.5 x physical p99", f"{ratio}", ratio <= 1.5))
        local = entry["local"]
        kept, total = (int(x) for x in local["replicaset_kept_local"].split("/"))
        rows.append((f"{app} app, {size}: ReplicaSet kept the local pod >= 99%", local["replicaset_kept_local"],
                     kept >= 0.99 * total))  # fmt: skip
        violations = local["maxscale_violations"] + entry["standard"]["maxscale_violations"]
        rows.append((f"{app} app, {size}: maxScale violations", str(violations), violations == 0))
    return rows


README = Path(__file__).resolve().parent.parent / "README.md"
README_BEGIN = "<!-- coldstart-results:begin (written by python -m loadtest coldstart) -->"
README_END = "<!-- coldstart-results:end -->"


def summary_table(result: dict[str, Any], image_dir: str) -> list[str]:
    lines = [
        "| app | at once | physical p50 / p99 | local p50 / p99 | standard p50 / p99 | local/standard p50 "
        "| p99 | local/physical p99 | RS kept local pod |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in result["summary"].items():
        app, size = key.split("/")
        if "ratios" not in e:
            continue
        p, lo, st, ra = e["physical"], e["local"]["ttfb"], e["standard"]["ttfb"], e["ratios"]
        lines.append(
            f"| {app} | {size} | {p['p50_ms']:.0f} / {p['p99_ms']:.0f} ms | {lo['p50_ms']:.0f} / {lo['p99_ms']:.0f} ms "
            f"| {st['p50_ms']:.0f} / {st['p99_ms']:.0f} ms | {ra['local_over_standard_p50']} "
            f"| {ra['local_over_standard_p99']} | {ra['local_over_physical_p99']} "
            f"| {e['local']['replicaset_kept_local']} |"
        )
    return [*lines, "", f"![time to first byte, CDF]({image_dir}coldstart_cdf.png)"]


def update_readme(result: dict[str, Any], command: str) -> None:
    """The README's results section: the latest table and plot, with the machine, the date and the command."""
    text = README.read_text()
    if README_BEGIN not in text or README_END not in text:
        print(f"README.md has no {README_BEGIN!r} section; not updated", file=sys.stderr)
        return
    body = [
        f"Measured on {result['machine']}, {result['when']}, with `{command}` (kubelet timing: "
        f"{result['kubelet_timing']}; devcluster network: {result.get('network', 'loopback')}); every request "
        "answered 200. Details, targets and the step breakdown: "
        "[loadtest/results/coldstart.md](loadtest/results/coldstart.md).",
        "",
        *summary_table(result, "loadtest/results/"),
    ]
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(head + README_BEGIN + "\n" + "\n".join(body) + "\n" + README_END + tail)


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Cold start: local scheduling vs the standard path",
        "",
        f"`{command}` on {result['machine']}, {result['when']}; kubelet timing: {result['kubelet_timing']};",
        f"devcluster network: {result.get('network', 'loopback')} (docs/devcluster.md);",
        "every request answered 200. Time to first byte as the client sees it, through the DaemonSet activators",
        "(each revision's request to an activator from its `{rev}-activationendpoints`). *physical*: the same",
        "number of app processes spawned directly, in the same run.",
        "",
        *summary_table(result, "")[:-2],
    ]
    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in result["targets"]]
    lines += [
        "",
        "The parts local scheduling changes, from the client's own watch (medians, ms), and the mean time to first",
        "byte with its standard error:",
        "",
        "| app | at once | request to pod exists: local / standard | IP reported to first byte: local / standard "
        "| mean: local / standard |",
        "|---|---|---|---|---|",
    ]
    for key, e in result["summary"].items():
        if "ratios" not in e:
            continue
        lo, st = e["local"], e["standard"]
        app, size = key.split("/")
        lines.append(
            f"| {app} | {size} | {lo['request_to_pod_exists_ms']} / {st['request_to_pod_exists_ms']} "
            f"| {lo['ip_reported_to_first_byte_ms']} / {st['ip_reported_to_first_byte_ms']} "
            f"| {lo['ttfb_mean_ms']} ± {lo['ttfb_mean_standard_error_ms']} / {st['ttfb_mean_ms']} ± "
            f"{st['ttfb_mean_standard_error_ms']} |"
        )
    lines += ["", "Median step breakdown (ms, from the activators' journals), the sample app:", ""]
    for key, e in result["summary"].items():
        if not key.startswith("sample/"):
            continue
        for mode in MODES:
            if mode in e:
                parts = ", ".join(f"{k} {v}" for k, v in e[mode]["steps_median_ms"].items())
                calls = e[mode]["api_calls_before_first_byte"]
                lines.append(f"- {key.split('/')[1]} at once, {mode}: {parts}; API (reads, writes) before the first "
                             f"byte: {calls}")  # fmt: skip
    lines += ["", "![time to first byte](coldstart_cdf.png)", "", "![steps](coldstart_steps.png)"]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    apps = [APPS[a] for a in args.apps.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    total = sum((args.singles if size == 1 else args.bursts) * len(MODES) for size in sizes) * len(apps)
    progress = Progress(total)
    samples: list[Sample] = []
    physical: dict[tuple[str, int], list[float]] = defaultdict(list)
    spec = replace(bench_spec(args.network), relist_seconds=args.relist_seconds, split_cpus=args.split_cpus)
    with devcluster(spec, keep=args.keep) as spec:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
        async with (
            await KubeClient.from_environment(str(spec.kubeconfig)) as kube,
            httpx.AsyncClient(timeout=180, trust_env=False, limits=limits) as http,
            namespace(kube, "coldstart") as ns,
        ):
            if args.claim_at != "auto":
                await _set_claim_at(kube, args.claim_at)
            activators = {a.ip: node for node, a in (await daemonset_activators(kube)).items()}
            watch = Watch(kube, ns, await kube.endpointslice_resource())
            await watch.start()
            try:
                counter = 0
                for app in apps:
                    for size in sizes:
                        reps = args.singles if size == 1 else args.bursts
                        for rep in range(reps):
                            if rep == 0 or size > 1:
                                physical[(app.name, size)] += await spawn_at_once(
                                    app, addresses("127.51", size), cpus=controlplane.cpus_for(spec, "nodes")
                                )
                            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                                counter += 1
                                samples += await round_(kube, http, ns, watch, activators, app=app, size=size,
                                                        mode=mode, tag=f"r{counter}", rng=rng,
                                                        progress=progress)  # fmt: skip
            finally:
                await watch.stop()
                sys.stderr.write("\n")
    failed = [s for s in samples if s.status != 200]
    if failed:
        raise SystemExit(f"coldstart: {len(failed)} of {len(samples)} cold starts failed: "
                         f"{[(s.revision, s.mode, s.status) for s in failed[:10]]}")  # fmt: skip
    summary = summarize(samples, physical)
    return {
        **machine(),
        "settings": vars(args),
        "kubelet_timing": f"realistic, relist every {args.relist_seconds or 1:g}s",
        "network": f"{spec.network} (pods in {spec.ip_base}.0.0/16)",
        "summary": summary,
        "targets": targets(summary),
        "samples": [asdict(s) for s in samples],
        "physical_ms": {f"{a}/{n}": [round(x * 1000, 1) for x in v] for (a, n), v in physical.items()},
    }


async def _set_claim_at(kube: KubeClient, value: str) -> None:
    """Every activator of the DaemonSet with ``LOCALSCHED_CLAIM_AT`` (a rollout; waits for it)."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": "activator", "env": [
        {"name": "LOCALSCHED_CLAIM_AT", "value": value}]}]}}}}  # fmt: skip
    await kube.patch(r.DAEMONSETS, "activator", body, SYSTEM_NAMESPACE, content_type=STRATEGIC_PATCH)
    cache = WatchCache(kube, r.DAEMONSETS, namespace=SYSTEM_NAMESPACE)
    cache.start()
    try:

        def rolled_out(c: WatchCache) -> bool:
            d = c.get("activator", SYSTEM_NAMESPACE)
            status = (d or {}).get("status", {})
            return (d is not None and status.get("observedGeneration") == d["metadata"]["generation"]
                    and status.get("updatedNumberScheduled") == status.get("numberReady") == 3)  # fmt: skip

        await cache.wait_for(rolled_out, 120)
    finally:
        await cache.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest coldstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--apps", default="sample,lean", help="apps to cold-start: sample, lean")
    parser.add_argument("--sizes", default="1,20,60", help="revisions cold-started at once, per round")
    parser.add_argument("--singles", type=int, default=20, help="rounds per mode of a single cold start")
    parser.add_argument("--bursts", type=int, default=2, help="rounds per mode of each burst size")
    parser.add_argument("--claim-at", choices=("auto", "create", "running"), default="auto",
                        help="the activators' claim ordering (auto: by server version)")  # fmt: skip
    parser.add_argument("--relist-seconds", type=float, default=None, help="the kubelets' PLEG relist period")
    parser.add_argument("--split-cpus", action="store_true",
                        help="control plane on half the CPUs, the nodes and their pods on the other half")  # fmt: skip
    parser.add_argument("--network", choices=("auto", "loopback", "netns"), default=None,
                        help="the devcluster's pod network (default: $LOCALSCHED_BENCH_NETWORK, else auto; "
                        "docs/devcluster.md)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="coldstart", help="results file name")
    parser.add_argument("--keep", action="store_true", help="leave the bench devcluster up")
    args = parser.parse_args()
    plots.require()
    result = asyncio.run(run(args))
    command = "python -m loadtest coldstart " + " ".join(a for a in sys.argv[1:])
    md = markdown(result, command.strip())
    samples = result.pop("samples")
    json_path, _ = write_results(args.name, {**result, "samples_file": f"{args.name}_samples.jsonl"}, md)
    write_samples(RESULTS / f"{args.name}_samples.jsonl", samples)
    result["samples"] = samples
    plots.coldstart(result, RESULTS / f"{args.name}_cdf.png", RESULTS / f"{args.name}_steps.png")
    if args.name == "coldstart":
        update_readme(result, command.strip())
    print(md)
    print(f"results: {json_path}")


if __name__ == "__main__":
    main()
