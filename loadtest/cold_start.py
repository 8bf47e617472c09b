"""Cold-start benchmark: time to first byte with local scheduling on vs off, in one run on one devcluster.

Two activator processes for the same node, identical but for ``LOCALSCHED_LOCAL_SCHEDULING``; the same sample app.
Single cold starts alternate between the two paths (the order flips every round, so drift hits both alike), then
bursts cold-start many revisions at once through each path: the shape in which the controller chain queues up.

    python -m loadtest.cold_start [--singles 10 --burst 20 --bursts 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devcluster.activators import running_activator
from devcluster.samples import sample_revision
from loadtest.harness import devcluster, namespace, write_results
from localsched.knative import REVISION_LABEL
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.watching import WatchCache

PATHS = ("local", "standard")


async def ttfb(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[float, str, int]:
    started = time.perf_counter()
    async with client.stream("GET", url, headers=headers) as response:
        elapsed = time.perf_counter() - started
        body = await response.aread()
    node = httpx.Response(200, content=body).json().get("node", "?") if response.status_code == 200 else "?"
    return elapsed, node, response.status_code


async def at_zero(kube: KubeClient, ns: str, names: list[str]) -> None:
    """Scale the revisions to zero and wait until their pods are gone."""
    for name in names:
        await kube.patch(r.DEPLOYMENTS, f"{name}-deployment", {"spec": {"replicas": 0}}, ns)
    pods = WatchCache(kube, r.PODS, namespace=ns)
    pods.start()
    wanted = set(names)
    try:
        await pods.wait_for(
            lambda c: not any((p["metadata"].get("labels") or {}).get(REVISION_LABEL) in wanted for p in c), 120
        )
    finally:
        await pods.stop()


async def deployments_exist(kube: KubeClient, ns: str, names: list[str]) -> None:
    cache = WatchCache(kube, r.DEPLOYMENTS, namespace=ns)
    cache.start()
    try:
        await cache.wait_for(lambda c: all(c.get(f"{n}-deployment", ns) for n in names), 60)
    finally:
        await cache.stop()


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"singles": {p: [] for p in PATHS}, "bursts": {p: [] for p in PATHS}, "nodes": {}}
    tmp = tempfile.mkdtemp(prefix="localsched-coldbench-")  # the activators' logs stay for a look afterwards
    with devcluster(keep=args.keep) as spec:
        async with (
            await KubeClient.from_environment(str(spec.kubeconfig)) as kube,
            httpx.AsyncClient(timeout=120, trust_env=False, limits=httpx.Limits(max_connections=200)) as http,
            namespace(kube, "coldbench") as ns,
        ):
            ip = f"{spec.ip_base}.1"
            local_cm = running_activator(str(spec.kubeconfig), kube, http, Path(tmp), node="node-1",
                                         ip=f"{ip}.250", local_scheduling="true")  # fmt: skip
            standard_cm = running_activator(str(spec.kubeconfig), kube, http, Path(tmp), node="node-1",
                                            ip=f"{ip}.251", local_scheduling="false")  # fmt: skip
            async with local_cm as local, standard_cm as standard:
                activators = {"local": local, "standard": standard}
                singles = {p: f"single-{p}-00001" for p in PATHS}
                for name in singles.values():
                    await kube.create(r.REVISIONS, sample_revision(name, ns), ns)
                await deployments_exist(kube, ns, list(singles.values()))
                for round_ in range(args.singles):
                    order = PATHS if round_ % 2 == 0 else PATHS[::-1]
                    for path in order:
                        await at_zero(kube, ns, [singles[path]])
                        a = activators[path]
                        seconds, node, status = await ttfb(http, f"{a.url}/", a.headers(ns, singles[path]))
                        results["singles"][path].append(seconds)
                        results["nodes"].setdefault(path, []).append(node)
                        assert status == 200, f"{path} cold start answered {status}"
                await at_zero(kube, ns, list(singles.values()))

                for b in range(args.bursts):
                    for path in PATHS if b % 2 == 0 else PATHS[::-1]:
                        names = [f"burst{b}-{path[:3]}-{i:02d}-00001" for i in range(args.burst)]
                        for name in names:
                            await kube.create(r.REVISIONS, sample_revision(name, ns), ns)
                        await deployments_exist(kube, ns, names)
                        a = activators[path]
                        answers = await asyncio.gather(*(ttfb(http, f"{a.url}/", a.headers(ns, n)) for n in names))
                        assert all(s == 200 for _, _, s in answers), f"{path} burst: {[s for _, _, s in answers]}"
                        results["bursts"][path].extend(sec for sec, _, _ in answers)
                        await at_zero(kube, ns, names)
    out: dict[str, Any] = {
        "activator_logs": tmp,
        "settings": vars(args),
        "singles": {p: summary(v) for p, v in results["singles"].items()},
        "bursts": {p: summary(v) for p, v in results["bursts"].items()},
        "raw_ms": {
            kind: {p: [round(x * 1000, 1) for x in v] for p, v in results[kind].items()}
            for kind in ("singles", "bursts")
        },
        "served_on_node": {p: dict((n, v.count(n)) for n in set(v)) for p, v in results["nodes"].items()},
    }
    for kind in ("singles", "bursts"):
        out[kind]["ratio_local_over_standard_median"] = round(
            out[kind]["local"]["median_ms"] / out[kind]["standard"]["median_ms"], 3
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=10, help="single cold starts per path")
    parser.add_argument("--burst", type=int, default=20, help="revisions cold-started at once in a burst")
    parser.add_argument("--bursts", type=int, default=2, help="bursts per path")
    parser.add_argument("--keep", action="store_true", help="leave the bench devcluster up")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    s, b = result["singles"], result["bursts"]
    md = f"""# Cold start: local scheduling on vs off

`python -m loadtest.cold_start --singles {args.singles} --burst {args.burst} --bursts {args.bursts}`; one devcluster
(real kube-apiserver, controller-manager and scheduler v1.20.2; simulated kubelets), the same sample app, two
activators for node-1 identical but for local scheduling. Time to first byte of the first request to a revision
at zero, as a client sees it.

| | local: median | p90 | max | standard: median | p90 | max | local / standard (median) |
|---|---|---|---|---|---|---|---|
| single cold starts (n={s["local"]["n"]} each, alternating) | {s["local"]["median_ms"]} ms | {s["local"]["p90_ms"]} | {s["local"]["max_ms"]} | {s["standard"]["median_ms"]} ms | {s["standard"]["p90_ms"]} | {s["standard"]["max_ms"]} | {s["ratio_local_over_standard_median"]} |
| bursts of {args.burst} revisions at once (n={b["local"]["n"]} each) | {b["local"]["median_ms"]} ms | {b["local"]["p90_ms"]} | {b["local"]["max_ms"]} | {b["standard"]["median_ms"]} ms | {b["standard"]["p90_ms"]} | {b["standard"]["max_ms"]} | {b["ratio_local_over_standard_median"]} |

Single cold starts were served on: {result["served_on_node"]}.
"""  # noqa: E501
    json_path, _ = write_results("cold_start", result, md)
    print(md)
    print(f"results: {json_path}")


if __name__ == "__main__":
    main()
