"""In-process scale simulation of activator subsetting: no API server, just the controller's pure core.

    python -m loadtest.subsetting_sim [--revisions 10000 --activators 1000 --zones 3 --seed 1
                                       --out loadtest/results/subsetting_sim.json]

Builds a synthetic cluster (one activator per node, nodes spread over zones, some GPU nodes tainted, some SSD
nodes labelled, a few cordoned or NotReady) and revisions (most plain, some with nodeSelectors, tolerations or
zone affinity so the filters matter; N from :mod:`endpointsctl.sizing` with varied ready pods, concurrency and
burst capacity), then measures with the built-in algorithm, through the controller's own steps (size -> select ->
re-size in :func:`endpointsctl.choosing.choose`, :func:`endpointsctl.rebalancing.rebalance_onto`):

1. full recompute from empty: CPU time, revisions per activator (spread), zone coverage, distinct subsets;
2. resync of the unchanged snapshot: revisions changed (stickiness: must be 0);
3. one activator dies (the busiest): only ``revisions_of(dead)`` are recomputed; revisions changed, CPU time;
   then a full resync checks that the incremental result is what a full recompute would keep;
4. one activator is added: a resync moves nothing (stickiness); new revisions take it into use because it is
   the least loaded; a bounded rebalance moves single slots from the busiest activators (of its own zone first)
   onto it until it holds its fair share (mean load) -- churn of about one activator's share, never a reshuffle.

Writes the figures as JSON and a short markdown summary next to it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from endpointsctl.assignments import AssignmentChange, Assignments
from endpointsctl.choosing import choose
from endpointsctl.rebalancing import fair_share, rebalance_onto
from endpointsctl.sizing import Sizing, desired_activators
from endpointsctl.subsetting.framework import Activator, Algorithm, RevisionRequest, Snapshot
from endpointsctl.subsetting.plugins import scheduling_key
from endpointsctl.subsetting.registry import SubsettingConfig, default_algorithm
from localsched.knative import AutoscalerConfig, Revision

ZONE_LABEL = "topology.kubernetes.io/zone"
POOL_LABEL = "localsched.dev/pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
MAX_NODE_SELECTION = 3
DEFAULT_OUT = Path("loadtest/results/subsetting_sim.json")

_T = TypeVar("_T")


@dataclass(frozen=True)
class SimParams:
    revisions: int = 10_000
    activators: int = 1_000
    zones: int = 3
    seed: int = 1
    new_revisions: int = 100


@dataclass(frozen=True)
class SimRevision:
    revision: Revision
    ready_pods: int
    spec_override: int | None
    shape: str

    @property
    def key(self) -> str:
        return self.revision.key


@dataclass
class Cluster:
    nodes: dict[str, dict[str, Any]]
    activators: dict[str, Activator]
    zones: list[str]

    def snapshot(self, assignments: Assignments) -> Snapshot:
        return Snapshot(dict(self.activators), dict(self.nodes), assignments.load())


@dataclass
class Sim:
    """The controller's state, as the sim drives it: the glue of ``Controller._select`` around the same core."""

    cluster: Cluster
    revisions: dict[str, SimRevision]
    config: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    algorithm: Algorithm = field(default_factory=lambda: default_algorithm(SubsettingConfig()))
    assignments: Assignments = field(default_factory=Assignments)
    sizings: dict[str, Sizing] = field(default_factory=dict)
    requests: dict[str, RevisionRequest] = field(default_factory=dict)  # as the controller keeps them to rebalance

    def desired(self, rev: SimRevision, eligible: int) -> Sizing:
        return desired_activators(
            spec_override=rev.spec_override,
            target_burst_capacity=rev.revision.effective_target_burst_capacity(self.config),
            max_node_selection=MAX_NODE_SELECTION,
            ready_pods=rev.ready_pods,
            per_pod_capacity=rev.revision.per_pod_capacity(self.config),
            activator_capacity=self.config.activator_capacity,
            eligible=eligible,
            nodes=len(self.cluster.nodes),
        )

    def recompute(self, snapshot: Snapshot, keys: Iterable[str]) -> list[AssignmentChange]:
        """Select and assign each revision in turn; the changes of those whose activator set changed."""
        changed = []
        for key in keys:
            rev = self.revisions[key]
            request = RevisionRequest(key, rev.revision.pod_spec, frozenset(self.assignments.get(key)))
            self.requests[key] = request
            choice = choose(self.algorithm, snapshot, request, partial(self.desired, rev))
            self.sizings[key] = choice.sizing
            change = self.assignments.set(key, choice.chosen)
            if change.changed:
                changed.append(change)
        return changed

    def forget(self, key: str) -> None:
        self.assignments.remove_revision(key)
        for mapping in (self.revisions, self.sizings, self.requests):
            mapping.pop(key, None)


# -- synthetic cluster and revisions ------------------------------------------------------------------------------


def zone_names(count: int) -> list[str]:
    return [f"zone-{chr(ord('a') + i)}" for i in range(count)]


def make_node(
    name: str, zone: str, *, gpu: bool = False, ssd: bool = False, cordoned: bool = False, ready: bool = True
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, ZONE_LABEL: zone}
    if gpu:
        labels[POOL_LABEL] = "gpu"
    if ssd:
        labels["disktype"] = "ssd"
    spec: dict[str, Any] = {"taints": [GPU_TAINT] if gpu else []}
    if cordoned:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def build_cluster(params: SimParams, rng: random.Random) -> Cluster:
    zones = zone_names(params.zones)
    nodes: dict[str, dict[str, Any]] = {}
    activators: dict[str, Activator] = {}
    for i in range(params.activators):
        node_name = f"node-{i:05d}"
        zone = zones[i % len(zones)]
        ready = rng.random() >= 0.005
        nodes[node_name] = make_node(
            node_name,
            zone,
            gpu=i % 10 == 0,  # every 10th node, so GPU nodes span the zones too
            ssd=rng.random() < 0.3,
            cordoned=rng.random() < 0.01,
            ready=ready,
        )
        name = f"activator-{i:05d}"
        ip = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        activators[name] = Activator(name, ip, node_name, zone, ready=ready and rng.random() >= 0.005)
    return Cluster(nodes, activators, zones)


def make_pod_spec(index: int, shape: str, zones: Sequence[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "user-container", "image": f"registry.example/app-{index}:v1"}]}
    if shape == "gpu":
        spec["nodeSelector"] = {POOL_LABEL: "gpu"}
        spec["tolerations"] = [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
    elif shape == "ssd":
        spec["nodeSelector"] = {"disktype": "ssd"}
    elif shape == "two-zones":
        term = {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": list(zones[:2])}]}
        required = {"nodeSelectorTerms": [term]}
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    elif shape == "tolerate-all":
        spec["tolerations"] = [{"operator": "Exists"}]
    return spec


SHAPES = (("plain", 0.75), ("ssd", 0.10), ("gpu", 0.08), ("two-zones", 0.05), ("tolerate-all", 0.02))


def make_revision(index: int, rng: random.Random, zones: Sequence[str]) -> SimRevision:
    shape = rng.choices([s for s, _ in SHAPES], weights=[w for _, w in SHAPES])[0]
    roll = rng.random()
    if roll < 0.6:
        ready = 0  # scaled to zero: the activator is in the path
    elif roll < 0.9:
        ready = rng.randint(1, 3)
    elif roll < 0.98:
        ready = rng.randint(4, 10)
    else:
        ready = rng.randint(11, 40)
    tbc_roll = rng.random()
    tbc = None if tbc_roll < 0.85 else 0.0 if tbc_roll < 0.93 else -1.0 if tbc_roll < 0.98 else 100.0
    override = rng.choice([None] * 48 + [1, 4]) if tbc_roll < 0.98 else None
    if index % 997 == 0:
        override = 0  # an invalid spec now and then: a condition, never an exception
    revision = Revision(
        namespace=f"ns-{index % 50:02d}",
        name=f"rev-{index:06d}",
        container_concurrency=rng.choice([0, 0, 0, 1, 10, 50, 100]),
        target_burst_capacity=tbc,
        pod_spec=make_pod_spec(index, shape, zones),
    )
    return SimRevision(revision, ready, override, shape)


# -- measurements -------------------------------------------------------------------------------------------------


def spread(assignments: Assignments, activators: Iterable[str]) -> dict[str, float]:
    load = assignments.load()
    loads = [load.get(name, 0) for name in activators]
    mean = statistics.fmean(loads) if loads else 0.0
    return {
        "activators": len(loads),
        "min": min(loads, default=0),
        "max": max(loads, default=0),
        "mean": round(mean, 2),
        "stdev": round(statistics.pstdev(loads), 2) if loads else 0.0,
        "max_over_mean": round(max(loads) / mean, 3) if mean else 0.0,
    }


def zone_coverage(sim: Sim, keys: Iterable[str], eligible_zones: Mapping[str, set[str]]) -> dict[str, Any]:
    zone_of = {name: a.zone for name, a in sim.cluster.activators.items()}
    all_zones = len(sim.cluster.zones)
    n2 = n2_spread = n2_possible = n3 = n3_spread = n3_possible = 0
    for key in keys:
        chosen = sim.assignments.get(key)
        zones = {zone_of[a] for a in chosen}
        possible = len(eligible_zones[sim.revisions[key].shape])
        if len(chosen) >= 2:
            n2 += 1
            n2_spread += len(zones) >= 2
            n2_possible += possible >= 2
        if len(chosen) >= all_zones >= 3:
            n3 += 1
            n3_spread += len(zones) == all_zones
            n3_possible += possible == all_zones
    return {
        "revisions_n_ge_2": n2,
        "span_ge_2_zones": _fraction(n2_spread, n2),
        "span_ge_2_zones_where_possible": _fraction(n2_spread, n2_possible),
        "revisions_n_ge_3": n3,
        "span_all_zones": _fraction(n3_spread, n3),
        "span_all_zones_where_possible": _fraction(n3_spread, n3_possible),
    }


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 1.0


def eligible_zones_by_shape(sim: Sim, snapshot: Snapshot) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for rev in sim.revisions.values():
        if rev.shape not in result:
            probe = sim.algorithm.select(snapshot, RevisionRequest(rev.key, rev.revision.pod_spec), 0)
            result[rev.shape] = {a.zone for a in snapshot.activators.values() if a.name not in probe.rejected}
    return result


def timed(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> tuple[_T, float]:
    start = time.process_time()
    result = fn(*args, **kwargs)
    return result, round(time.process_time() - start, 3)


def run(params: SimParams) -> dict[str, Any]:
    rng = random.Random(params.seed)
    cluster = build_cluster(params, rng)
    revisions = {r.key: r for r in (make_revision(i, rng, cluster.zones) for i in range(params.revisions))}
    sim = Sim(cluster, revisions)
    keys = sorted(revisions)
    snapshot = cluster.snapshot(sim.assignments)
    ready = [a.name for a in cluster.activators.values() if a.ready]
    report: dict[str, Any] = {"params": asdict(params)}
    report["cluster"] = {
        "nodes": len(cluster.nodes),
        "activators_ready": len(ready),
        "shapes": dict(Counter(r.shape for r in revisions.values())),
        "distinct_scheduling_keys": len({scheduling_key(r.revision.pod_spec) for r in revisions.values()}),
    }
    report.update(full_recompute(sim, snapshot, keys, ready))
    changed, cpu = timed(sim.recompute, snapshot, keys)
    report["resync_unchanged"] = {"changed_revisions": len(changed), "cpu_seconds": cpu}
    report["activator_dies"], ready = busiest_activator_dies(sim, keys, ready)
    report["activator_added"] = activator_added(sim, keys, ready, rng, params.new_revisions)
    return report


def full_recompute(sim: Sim, snapshot: Snapshot, keys: list[str], ready: list[str]) -> dict[str, Any]:
    """1. Every revision selected from empty: CPU, spread over the activators, zone coverage."""
    _, cpu = timed(sim.recompute, snapshot, keys)
    eligible_zones = eligible_zones_by_shape(sim, snapshot)
    slots = sum(len(sim.assignments.get(k)) for k in keys)
    full = {
        "revisions": len(keys),
        "slots": slots,
        "cpu_seconds": cpu,
        "cpu_us_per_revision": round(cpu / max(1, len(keys)) * 1e6, 1),
        "n_effective": _histogram(sim.sizings[k].effective for k in keys),
        "conditions": dict(Counter(str(c.reason) for k in keys for c in sim.sizings[k].conditions)),
        "distinct_subsets": len({frozenset(sim.assignments.get(k)) for k in keys}),
    }
    return {
        "full_recompute": full,
        "spread": spread(sim.assignments, ready),
        "zones": zone_coverage(sim, keys, eligible_zones),
    }


def busiest_activator_dies(sim: Sim, keys: list[str], ready: list[str]) -> tuple[dict[str, Any], list[str]]:
    """3. The busiest activator becomes unready: only its revisions are recomputed; then a full resync. The
    figures, and the activators still ready."""
    cluster = sim.cluster
    load = sim.assignments.load()
    victim = min(ready, key=lambda name: (-load.get(name, 0), name))
    cluster.activators[victim] = replace(cluster.activators[victim], ready=False)
    snapshot = cluster.snapshot(sim.assignments)
    affected = sorted(sim.assignments.revisions_of(victim))
    before = {k: frozenset(sim.assignments.get(k)) for k in affected}
    changed, cpu = timed(sim.recompute, snapshot, affected)
    slots_changed = sum(len(before[k] - frozenset(sim.assignments.get(k))) for k in affected)
    still_on_victim = len(sim.assignments.revisions_of(victim))
    full_after, full_cpu = timed(sim.recompute, snapshot, keys)
    ready = [name for name in ready if name != victim]
    return {
        "activator": victim,
        "its_revisions": len(affected),
        "recomputed_revisions": len(affected),
        "changed_revisions": len(changed),
        "slots_changed": slots_changed,
        "revisions_still_on_dead_activator": still_on_victim,
        "incremental_cpu_seconds": cpu,
        "full_resync_changed_revisions_afterwards": len(full_after),
        "full_resync_cpu_seconds": full_cpu,
        "spread_after": spread(sim.assignments, ready),
    }, ready


def activator_added(
    sim: Sim, keys: list[str], ready: list[str], rng: random.Random, new_revisions: int
) -> dict[str, Any]:
    """4. An activator is added (plain node, first zone): a resync, take-up by new revisions, a bounded
    rebalance."""
    cluster = sim.cluster
    new_node, newcomer = "node-new", "activator-new"
    cluster.nodes[new_node] = make_node(new_node, cluster.zones[0])
    cluster.activators[newcomer] = Activator(newcomer, "10.255.255.1", new_node, cluster.zones[0], ready=True)
    snapshot = cluster.snapshot(sim.assignments)
    ready = [*ready, newcomer]
    changes, cpu = timed(sim.recompute, snapshot, keys)
    added: dict[str, Any] = {
        "activator": newcomer,
        "resync_moved_revisions": sum(1 for c in changes if c.removed),
        "resync_grown_revisions": sum(1 for c in changes if not c.removed),
        "resync_cpu_seconds": cpu,
    }
    # 4a. take-up by new revisions alone (then undone, so that 4b starts from the same state)
    new_revs = [make_revision(i, rng, cluster.zones) for i in range(len(keys), len(keys) + new_revisions)]
    sim.revisions.update((rev.key, rev) for rev in new_revs)
    sim.recompute(snapshot, [rev.key for rev in new_revs])
    added["new_revisions"] = len(new_revs)
    added["new_revisions_using_it"] = sum(newcomer in sim.assignments.get(rev.key) for rev in new_revs)
    added["its_load_after_new_revisions"] = sim.assignments.load().get(newcomer, 0)
    for rev in new_revs:
        sim.forget(rev.key)
    # 4b. bounded rebalance up to its fair share
    target = fair_share(sim.assignments.load(), ready)
    result, cpu = timed(rebalance_onto, sim.assignments, sim.algorithm, snapshot, newcomer, target=target,
                        request_of=sim.requests.get)  # fmt: skip
    zone_of = {name: a.zone for name, a in cluster.activators.items()}
    added["rebalance_target_load"] = target
    added["rebalance_moved_revisions"] = len(result.moves)
    added["rebalance_moves_from_other_zones"] = sum(
        zone_of[donor] != zone_of[newcomer] for move in result.moves for donor in move.removed
    )
    added["rebalance_attempts"] = result.attempts
    added["rebalance_cpu_seconds"] = cpu
    added["its_load_after_rebalance"] = sim.assignments.load().get(newcomer, 0)
    added["moved_fraction_of_revisions"] = round(len(result.moves) / len(keys), 5)
    added["spread_after"] = spread(sim.assignments, ready)
    changes, _ = timed(sim.recompute, snapshot, keys)
    added["resync_after_rebalance_changed_revisions"] = len(changes)
    return added


def _histogram(values: Iterable[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def summary(report: Mapping[str, Any], command: str) -> str:
    full, spread_, zones = report["full_recompute"], report["spread"], report["zones"]
    dies, added, resync = report["activator_dies"], report["activator_added"], report["resync_unchanged"]
    p = report["params"]
    return "\n".join(
        [
            "# Subsetting simulation",
            "",
            f"`{command}` -- {p['revisions']} revisions, {p['activators']} activators, {p['zones']} zones, "
            f"seed {p['seed']}; CPU time from `time.process_time`.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| full recompute from empty | {full['cpu_seconds']} s CPU ({full['cpu_us_per_revision']} us/revision), "
            f"{full['slots']} slots |",
            f"| revisions per activator | min {spread_['min']}, mean {spread_['mean']}, max {spread_['max']} "
            f"(max/mean {spread_['max_over_mean']}, stdev {spread_['stdev']}) |",
            f"| N >= 2 spanning >= 2 zones | {zones['span_ge_2_zones']} "
            f"({zones['span_ge_2_zones_where_possible']} of those whose eligible nodes allow it) |",
            f"| N >= 3 spanning all zones | {zones['span_all_zones']} "
            f"({zones['span_all_zones_where_possible']} where possible) |",
            f"| distinct subsets | {full['distinct_subsets']} of {full['revisions']} revisions |",
            f"| resync, nothing changed | {resync['changed_revisions']} revisions changed, {resync['cpu_seconds']} s |",
            f"| busiest activator dies | {dies['its_revisions']} revisions recomputed, {dies['changed_revisions']} "
            f"changed ({dies['slots_changed']} slots), {dies['incremental_cpu_seconds']} s CPU; a full resync "
            f"afterwards changes {dies['full_resync_changed_revisions_afterwards']} |",
            f"| activator added: resync | {added['resync_moved_revisions']} revisions moved "
            f"({added['resync_grown_revisions']} short of eligible activators grew onto it) |",
            f"| activator added: new revisions | {added['new_revisions_using_it']} of {added['new_revisions']} "
            f"use it (load {added['its_load_after_new_revisions']}) |",
            f"| activator added: bounded rebalance | {added['rebalance_moved_revisions']} revisions moved one slot "
            f"({added['moved_fraction_of_revisions']:.3%}; {added['rebalance_moves_from_other_zones']} from other "
            f"zones), its load {added['its_load_after_rebalance']} "
            f"(target {added['rebalance_target_load']}), {added['rebalance_cpu_seconds']} s CPU; a resync "
            f"afterwards changes {added['resync_after_rebalance_changed_revisions']} |",
            "",
            f"N (effective) histogram: {full['n_effective']}; conditions: {full['conditions']}",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.subsetting_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=SimParams.revisions)
    parser.add_argument("--activators", type=int, default=SimParams.activators)
    parser.add_argument("--zones", type=int, default=SimParams.zones)
    parser.add_argument("--seed", type=int, default=SimParams.seed)
    parser.add_argument("--new-revisions", type=int, default=SimParams.new_revisions)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    params = SimParams(args.revisions, args.activators, args.zones, args.seed, args.new_revisions)
    report = run(params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    command = (
        f"python -m loadtest.subsetting_sim --revisions {params.revisions} --activators {params.activators} "
        f"--zones {params.zones} --seed {params.seed} --out {args.out}"
    )
    args.out.with_suffix(".md").write_text(summary(report, command))
    print(summary(report, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
