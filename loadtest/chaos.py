"""Chaos suite: faults under steady load on a fresh devcluster, and what each one costs.

    python -m loadtest chaos [--rate 50] [--only node-killed,leader-killed] [--activation-timeout 10]

For each scenario (``loadtest/chaos_scenarios.py``; ``docs/chaos.md`` says what each shows), a fresh namespace and a
warm revision of 3 pods on 3 nodes (the sample app, each request held 50 ms), reached the way a gateway reaches it:
``--rate`` requests a second, open loop, to the addresses of its ``{revision}-activationendpoints`` EndpointSlice,
retrying a connect failure once on another activator (``loadtest/chaos_load.py``). 5 s of steady load, the fault,
its healing, convergence, 5 s more. Each scenario reports requests sent, answered 2xx, failed (by status or
error), retried by the gateway and by the activators (``activator_forward_retries_total``), when the traffic
recovered and when the system converged. Results: ``loadtest/results/chaos.md`` and ``chaos.json``.

The suite fails (exit 2, no table) when the harness itself cannot do what it set out to; it prints the table and
exits 1 when the system missed an expectation the design makes (each scenario's checks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from dataclasses import asdict
from typing import Any

import httpx

from devcluster.activators import metric_value
from devcluster.controlplane import ClusterSpec
from loadtest.chaos_cluster import (
    HarnessError,
    Slices,
    activator_counter,
    activator_pods,
    chaos_devcluster,
    endpointsctl_pods,
    holder_pod,
    lease_holder,
    poll,
    save_logs,
    say,
    scrape,
    spread_revision,
    wait_pods_ready,
    wait_slice,
)
from loadtest.chaos_load import Gateway, Load, Outcome, Tally
from loadtest.chaos_scenarios import SCENARIOS, SYSTEM_NAMESPACE, Run, Scenario
from loadtest.harness import machine, namespace, write_results
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.errors import KubeError
from localsched.predicates import is_ready

PRE_SECONDS = 5.0  # steady load before the fault
POST_SECONDS = 5.0  # and after convergence
MAX_LOAD_SECONDS = 150.0  # a bound on every scenario's load, whatever happens
LOAD_PATH = "/?sleep=0.05"
GATEWAY_CONNECT_TIMEOUT = 1.0
GATEWAY_TIMEOUT = 15.0
REVISION_TIMEOUT = 10  # the warm revision's timeoutSeconds: a request stuck at a hung pod ends in 504


async def configure_activators(kube: KubeClient, settings: dict[str, str]) -> None:
    """Merge ``settings`` into the activators' ConfigMap and replace every activator pod (env is read at start)."""
    config = await kube.get(r.CONFIGMAPS, "activator-config", SYSTEM_NAMESPACE)
    await kube.patch(r.CONFIGMAPS, "activator-config", {"data": {**(config.get("data") or {}), **settings}},
                     SYSTEM_NAMESPACE)  # fmt: skip
    old = await activator_pods(kube)
    for pod in old:
        await kube.delete(r.PODS, pod["metadata"]["name"], SYSTEM_NAMESPACE, grace_period_seconds=1)
    gone = {p["metadata"]["uid"] for p in old}

    async def replaced() -> bool:
        pods = await activator_pods(kube)
        return len(pods) == len(old) and all(is_ready(p) and p["metadata"]["uid"] not in gone for p in pods)

    await poll(replaced, 90, f"the activators to restart with {settings}", interval=0.2)


async def healthy(kube: KubeClient, http: httpx.AsyncClient, nodes: int) -> None:
    """Every node Ready, every activator Ready, both endpointsctl replicas Ready and one of them leading."""

    async def check() -> bool:
        ready_nodes = [n for n in (await kube.list(r.NODES)).get("items", []) if is_ready(n)]
        activators = [p for p in await activator_pods(kube) if is_ready(p)]
        controllers = [p for p in await endpointsctl_pods(kube) if is_ready(p)]
        leader = holder_pod(await lease_holder(kube), controllers)
        if len(ready_nodes) < nodes or len(activators) < nodes or len(controllers) < 2 or leader is None:
            return False
        text = await scrape(http, leader["status"]["podIP"]) or ""
        return metric_value(text, "endpointsctl_leader") == 1

    async def guarded() -> bool:
        try:
            return await check()
        except (httpx.HTTPError, OSError, RuntimeError, KubeError):
            return False

    await poll(guarded, 120, "a healthy cluster (nodes, activators, an endpointsctl leader)", interval=0.5)


async def warm_up(run: Run) -> None:
    headers = {"Knative-Serving-Namespace": run.namespace, "Knative-Serving-Revision": run.revision}
    for address in run.slices.addresses(run.revision):

        async def ok(address: str = address) -> bool:
            try:
                return (await run.http.get(f"http://{address}{LOAD_PATH}", headers=headers)).status_code == 200
            except httpx.HTTPError:
                return False

        await poll(ok, 30, f"{run.revision} served through {address}")


async def watch_state(run: Run) -> None:
    """Put what the cluster does on the scenario's timeline: Ready nodes, Ready app pods, the slice's addresses."""
    last: tuple[Any, ...] = ()
    while True:
        try:
            nodes = await asyncio.wait_for(run.kube.list(r.NODES), 1.5)
            pods = await asyncio.wait_for(run.kube.list(r.PODS, run.namespace, label_selector=(
                f"serving.knative.dev/revision={run.revision}")), 1.5)  # fmt: skip
            ready = sorted(n["metadata"]["name"] for n in nodes.get("items", []) if is_ready(n))
            state: tuple[Any, ...] = (
                f"Ready nodes {','.join(ready)}",
                f"Ready app pods {sum(1 for p in pods.get('items', []) if is_ready(p))}",
                f"slice {','.join(a.partition(':')[0] for a in run.slices.addresses(run.revision))}",
            )
        except (httpx.HTTPError, OSError, TimeoutError, RuntimeError, KubeError):
            state = ("API server not answering",)
        if state != last:
            run.mark("state: " + "; ".join(state))
            last = state
        await asyncio.sleep(0.5)  # paces the sampling


def failure_kinds(outcomes: list[Outcome], run: Run) -> dict[str, list[Outcome]]:
    """Failed requests by when they failed relative to the fault, and where they had been sent."""
    kinds: dict[str, list[Outcome]] = {"before_fault": [], "in_flight_at_fault": [], "on_victim_connections": [],
                                       "after_fault": []}  # fmt: skip
    for o in outcomes:
        if o.ok:
            continue
        if o.done < run.fault_at:
            kinds["before_fault"].append(o)
        elif o.due < run.fault_done:
            kinds["in_flight_at_fault"].append(o)
        elif o.first in run.victims and not o.retried_on:
            kinds["on_victim_connections"].append(o)
        else:
            kinds["after_fault"].append(o)
    return kinds


async def run_scenario(spec: ClusterSpec, kube: KubeClient, http: httpx.AsyncClient, scenario: Scenario,
                       args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    say(f"scenario {scenario.key}: {scenario.title}")
    async with namespace(kube, f"chaos-{scenario.key}") as ns, Slices.watching(kube, ns) as slices:
        run = Run(spec, kube, http, ns, slices, args.activation_timeout)
        await kube.create(r.REVISIONS, spread_revision(run.revision, ns, 3, timeout_seconds=REVISION_TIMEOUT), ns)
        await wait_pods_ready(kube, ns, run.revision, 3, 90)
        if scenario.prepare is not None:
            await scenario.prepare(run)
        await wait_slice(slices, run.revision, 2, 60)
        await warm_up(run)
        retries_before = await activator_counter(kube, http, "activator_forward_retries_total", "reason")
        gateway = Gateway(lambda: slices.addresses(run.revision), connect_timeout=GATEWAY_CONNECT_TIMEOUT,
                          timeout=GATEWAY_TIMEOUT)  # fmt: skip
        headers = {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": run.revision}
        load = Load(gateway, LOAD_PATH, headers, args.rate, MAX_LOAD_SECONDS)
        run.fault_at = run.fault_done = run.now() + PRE_SECONDS  # until the body says when it really began
        loading = asyncio.create_task(load.run(), name="chaos-load")
        monitor = asyncio.create_task(watch_state(run), name="chaos-monitor")
        try:
            await asyncio.sleep(PRE_SECONDS)  # steady load before the fault: a measured period
            await scenario.body(run)
            await asyncio.sleep(POST_SECONDS)
        finally:
            load.stop()
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            outcomes = await loading
            await gateway.close()
        if scenario.after is not None:
            await scenario.after(run)
        retries_after = await activator_counter(kube, http, "activator_forward_retries_total", "reason")
    return summarize(scenario, run, outcomes, retries_after.delta(retries_before), retries_after.unreachable, args)


def summarize(scenario: Scenario, run: Run, outcomes: list[Outcome], retries: dict[str, float],
              unreachable: tuple[str, ...], args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    tally = Tally.of(outcomes, run.fault_at)
    expected = args.rate * (PRE_SECONDS + POST_SECONDS) * 0.8
    if tally.sent < expected:
        raise HarnessError(f"{scenario.key}: only {tally.sent} requests sent (expected at least {expected:.0f}): "
                           "the load generator did not keep its rate")  # fmt: skip
    kinds = failure_kinds(outcomes, run)
    if scenario.all_ok:
        run.check("every request of the steady load answered 2xx", not tally.failed)
    else:
        unexpected = kinds["before_fault"] + kinds["after_fault"]
        run.check("no request failed but those in flight at the fault or on connections the victim had accepted "
                  f"({len(unexpected)} did: {_examples(unexpected)})", not unexpected)  # fmt: skip
    heal = run.heal_at if run.heal_at is not None else run.fault_at
    return {
        "key": scenario.key, "title": scenario.title, **asdict(tally),
        "activator_retries": round(sum(retries.values())),
        "activator_retries_by_reason": {reason: round(n) for reason, n in sorted(retries.items()) if round(n)},
        "activators_not_scraped": list(unreachable),
        "failures": {kind: len(items) for kind, items in kinds.items()},
        "failure_examples": {kind: _examples(items) for kind, items in kinds.items() if items},
        "converged_seconds": round(run.converged_at - heal, 2) if run.converged_at is not None else None,
        "converged_from": "heal" if run.heal_at is not None else "fault",
        "converged_means": scenario.converged_means,
        "timeline": run.relative_timeline(), "notes": run.notes, "checks": run.checks, "figures": run.figures,
    }  # fmt: skip


def _examples(outcomes: list[Outcome], limit: int = 5) -> list[str]:
    return [f"{o.label} (first {o.first}{', retried on ' + o.retried_on if o.retried_on else ''})"
            for o in outcomes[:limit]]  # fmt: skip


async def run_all(spec: ClusterSpec, args: argparse.Namespace) -> list[dict[str, Any]]:
    scenarios = [s for s in SCENARIOS if not args.only or s.key in args.only]
    async with (
        await KubeClient.from_environment(str(spec.kubeconfig), user_agent="localsched-chaos") as kube,
        httpx.AsyncClient(trust_env=False, timeout=10) as http,
    ):
        await healthy(kube, http, spec.nodes)
        timeout = {"LOCALSCHED_ACTIVATION_TIMEOUT_SECONDS": f"{args.activation_timeout:g}"}
        await configure_activators(kube, timeout)
        results = []
        for scenario in scenarios:
            await healthy(kube, http, spec.nodes)
            results.append(await run_scenario(spec, kube, http, scenario, args))
        return results


# -- the report ---------------------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| # | scenario | sent | 2xx | failed (by status) | gateway retries | activator retries | traffic "
            "recovered | converged | checks |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, res in enumerate(results, 1):
        failed = ", ".join(f"{label} x{n}" for label, n in res["failed"].items()) or "0"
        recovered = f"{res['recovered_seconds']:.1f} s" if res["failed"] else "0 s (none failed)"
        if res["failed"] and not res["failures"]["after_fault"] and not res["failures"]["on_victim_connections"]:
            recovered = "0 s (only requests in flight at the fault failed)"
        converged = (f"{res['converged_seconds']:.1f} s after the {res['converged_from']}"
                     if res["converged_seconds"] is not None else "**not converged**")  # fmt: skip
        bad = [text for text, ok in res["checks"] if not ok]
        checks = f"{len(res['checks'])} passed" if not bad else f"**{len(bad)} of {len(res['checks'])} failed**"
        rows.append(f"| {i} | {res['title']} | {res['sent']} | {res['ok']} | {failed} | {res['gateway_retries']} "
                    f"| {res['activator_retries']} | {recovered} | {converged} | {checks} |")  # fmt: skip
    return "\n".join(rows)


def details(res: dict[str, Any]) -> str:
    lines = [f"### {res['title']} (`{res['key']}`)", "",
             f"Converged means: {res['converged_means']}. Worst 1 s window after the fault: "
             f"{res['worst_window_pct']:.1f}% answered 2xx; latency of the 2xx p50 {res['p50_ms']:.0f} ms, "
             f"p99 {res['p99_ms']:.0f} ms. Failed requests by kind: "
             + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in res["failures"].items()) + ".", ""]  # fmt: skip
    lines += [f"- check {'passed' if ok else '**FAILED**'}: {text}" for text, ok in res["checks"]]
    if res["activator_retries_by_reason"]:
        lines.append(f"- activator retries by reason: {res['activator_retries_by_reason']}")
    lines += [f"- {note}" for note in res["notes"]]
    if res["activators_not_scraped"]:
        lines.append(f"- activators not scraped at the end: {res['activators_not_scraped']}")
    lines += ["", "Timeline (seconds from the fault):", ""]
    lines += [f"    {t:+7.2f}  {what}" for t, what in res["timeline"]]
    return "\n".join(lines) + "\n"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    sections = "\n".join(details(res) for res in results)
    return f"""# Chaos: faults under steady load

`{command}`: {meta["machine"]}, {meta["when"]}. A fresh devcluster (3 nodes, realistic kubelet timing), the
activators' activation timeout set to {args.activation_timeout:g} s. Each scenario: a fresh revision of 3 pods on 3
nodes (sample app, `GET {LOAD_PATH}`, timeoutSeconds {REVISION_TIMEOUT}), {args.rate:g} req/s open loop through a
gateway that sends each request to one address of the revision's `{{revision}}-activationendpoints` EndpointSlice
(round robin, keep-alive) and retries a **connect failure once on another activator** (connect timeout
{GATEWAY_CONNECT_TIMEOUT:g} s, request timeout {GATEWAY_TIMEOUT:g} s), nothing else. {PRE_SECONDS:g} s of load, the
fault, its healing, convergence, {POST_SECONDS:g} s more. `docs/chaos.md` explains each scenario and the known limits.

*Traffic recovered*: from the fault to the due time of the last failed request, so from then on every 1 s window
was 100% 2xx. *Gateway retries*: requests the gateway sent again after a connect failure. *Activator retries*:
the increase of `activator_forward_retries_total` over all activators (a process that restarted counts from zero).
*Converged*: per scenario, below.

{table(results)}

{sections}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second of the steady load")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=set(),
                        help=f"scenarios to run, comma separated: {','.join(s.key for s in SCENARIOS)}")  # fmt: skip
    parser.add_argument("--activation-timeout", type=float, default=10.0,
                        help="the activators' LOCALSCHED_ACTIVATION_TIMEOUT_SECONDS for this run")  # fmt: skip
    args = parser.parse_args()
    unknown = args.only - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}")
    logging.basicConfig(level=logging.ERROR)  # the harness's own watch caches reconnecting are not news
    command = "python -m loadtest chaos" + (f" --rate {args.rate:g}" if args.rate != 50 else "") + (
        f" --only {','.join(sorted(args.only))}" if args.only else "")  # fmt: skip
    logs = None
    try:
        with chaos_devcluster() as spec:
            try:
                results = asyncio.run(run_all(spec, args))
            finally:
                logs = str(save_logs(spec))
                say(f"the cluster's logs are kept in {logs}")
    except HarnessError as exc:
        print(f"chaos: harness error, no results: {exc}", file=sys.stderr)
        return 2
    meta = machine()
    data = {"settings": vars(args) | {"only": sorted(args.only)}, "logs": logs, "scenarios": results}
    json_path, md_path = write_results("chaos", data, markdown(results, meta, args, command))
    print(md_path.read_text())
    print(f"results: {md_path}, {json_path}")
    failed = [(res["key"], text) for res in results for text, ok in res["checks"] if not ok]
    for key, text in failed:
        print(f"chaos: {key}: expectation not met: {text}", file=sys.stderr)
    if failed:
        print(f"chaos: the cluster's logs are kept in {logs}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
