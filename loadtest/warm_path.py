"""Warm-path benchmark: requests/s and latency through the activator vs straight to the pod, in one run.

The revision has one Ready pod; the activator is the DaemonSet's pod on the same node. Rounds alternate
(direct, activator, direct, ...) so drift on a noisy machine hits both sides alike; the result is the ratio.

    python -m loadtest.warm_path [--rounds 3 --seconds 4 --concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx

from devcluster.samples import sample_revision
from loadtest.harness import (
    LatencySummary,
    closed_loop,
    devcluster,
    have_wrk,
    median,
    namespace,
    write_results,
    wrk_loop,
)
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import WatchCache


async def ready_pod(kube: KubeClient, ns: str, selector: str, node: str | None = None) -> Obj:
    cache = WatchCache(kube, r.PODS, namespace=ns, label_selector=selector)
    cache.start()
    try:
        return await cache.wait_for(
            lambda c: next(
                (p for p in c if any(x["type"] == "Ready" and x["status"] == "True"
                                     for x in p.get("status", {}).get("conditions", []))
                 and (node is None or p["spec"].get("nodeName") == node)), None),
            60,
        )  # fmt: skip
    finally:
        await cache.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with devcluster(keep=args.keep) as spec:
        async with await KubeClient.from_environment(str(spec.kubeconfig)) as kube, namespace(kube, "bench") as ns:
            await kube.create(r.REVISIONS, sample_revision("warm-00001", ns), ns)
            deployment = WatchCache(kube, r.DEPLOYMENTS, namespace=ns)
            deployment.start()
            await deployment.wait_for(lambda c: c.get("warm-00001-deployment", ns), 30)
            await deployment.stop()
            await kube.patch(r.DEPLOYMENTS, "warm-00001-deployment", {"spec": {"replicas": 1}}, ns)
            pod = await ready_pod(kube, ns, "serving.knative.dev/revision=warm-00001")
            node = pod["spec"]["nodeName"]
            activator = await ready_pod(kube, "localsched-system", "app.kubernetes.io/name=activator", node)
            pod_url = f"http://{pod['status']['podIP']}:8080/"
            activator_url = f"http://{activator['status']['podIP']}:8012/"
            headers = {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": "warm-00001"}

            async def direct(client: httpx.AsyncClient) -> httpx.Response:
                return await client.get(pod_url)

            async def through(client: httpx.AsyncClient) -> httpx.Response:
                return await client.get(activator_url, headers=headers)

            load = {"concurrency": args.concurrency, "seconds": args.seconds, "max_requests": args.max_requests}
            for send in (direct, through):  # warm-up: connections, caches, the pod's threads
                await closed_loop(send, concurrency=args.concurrency, seconds=1.0, max_requests=500)
            rounds: dict[str, list[LatencySummary]] = {"direct": [], "activator": []}
            use_wrk = args.generator == "wrk" or (args.generator == "auto" and have_wrk())
            args.generator = "wrk" if use_wrk else "httpx"
            for _ in range(args.rounds):
                if use_wrk:
                    wrk = {"concurrency": args.concurrency, "seconds": args.seconds}
                    rounds["direct"].append(await wrk_loop(pod_url, {}, **wrk))
                    rounds["activator"].append(await wrk_loop(activator_url, headers, **wrk))
                else:
                    rounds["direct"].append(await closed_loop(direct, **load))
                    rounds["activator"].append(await closed_loop(through, **load))
    summary: dict[str, dict[str, float]] = {
        side: {key: median([getattr(s, key) for s in runs]) for key in ("rps", "p50_ms", "p90_ms", "p99_ms")}
        for side, runs in rounds.items()
    }
    summary["ratio_activator_over_direct"] = {
        key: round(summary["activator"][key] / summary["direct"][key], 3) for key in ("rps", "p50_ms", "p99_ms")
    }
    errors = sum(s.errors for runs in rounds.values() for s in runs)
    if errors:
        per_round = {side: [s.errors for s in runs] for side, runs in rounds.items()}
        raise SystemExit(f"warm path: {errors} requests failed (per round: {per_round}); no figures from that")
    return {"settings": vars(args), "summary": summary, "rounds": rounds, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto",
                        help="load generator: wrk (Debian package) when installed, else httpx")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the bench devcluster up")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    s = result["summary"]
    md = f"""# Warm path: through the activator vs straight to the pod

`python -m loadtest.warm_path --rounds {args.rounds} --seconds {args.seconds} --concurrency {args.concurrency}`
(one run, rounds alternating; medians over rounds; load generator: {args.generator}; errors: {result["errors"]}).

| path | req/s | p50 ms | p90 ms | p99 ms |
|---|---|---|---|---|
| direct to pod | {s["direct"]["rps"]:.0f} | {s["direct"]["p50_ms"]:.2f} | {s["direct"]["p90_ms"]:.2f} | {s["direct"]["p99_ms"]:.2f} |
| through activator | {s["activator"]["rps"]:.0f} | {s["activator"]["p50_ms"]:.2f} | {s["activator"]["p90_ms"]:.2f} | {s["activator"]["p99_ms"]:.2f} |
| ratio activator/direct | {s["ratio_activator_over_direct"]["rps"]} | {s["ratio_activator_over_direct"]["p50_ms"]} | | {s["ratio_activator_over_direct"]["p99_ms"]} |

The load generator shares the machine's 2 cores with the pod, the activator and the control plane, so absolute
figures are this machine's; the ratio is the claim.
"""  # noqa: E501
    json_path, _ = write_results("warm_path", result, md)
    print(md)
    print(f"results: {json_path}")


if __name__ == "__main__":
    main()
