"""endpointsctl's Prometheus metrics, on an injected registry (tests use their own).

Labels stay bounded: namespace and revision, object kind, operation, reason, result. Never pod names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Metrics:
    reconciles: Counter
    reconcile_duration: Histogram
    subset_size: Gauge
    desired_subset_size: Gauge
    revisions_per_activator: Gauge
    assignment_changes: Counter
    queued: Counter
    rebalances: Counter
    rebalanced_revisions: Counter
    writes: Counter
    write_failures: Counter
    queue_depth: Gauge
    leader: Gauge
    leader_transitions: Counter
    demand_reports: Counter
    demand_refused: Counter
    demand_connections: Gauge
    demand_active_revisions: Gauge
    keda_requests: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        rev = ["namespace", "revision"]
        return cls(
            reconciles=Counter("endpointsctl_reconciles_total", "Revision reconciles, by result.", ["result"],
                               registry=registry),
            reconcile_duration=Histogram("endpointsctl_reconcile_duration_seconds",
                                         "Time to reconcile one revision, API writes included.", ["result"],
                                         buckets=DURATION_BUCKETS, registry=registry),
            subset_size=Gauge("endpointsctl_subset_size", "Activators serving the revision (effective N).", rev,
                              registry=registry),
            desired_subset_size=Gauge("endpointsctl_desired_subset_size",
                                      "Activators the revision should have (desired N).", rev, registry=registry),
            revisions_per_activator=Gauge("endpointsctl_revisions_per_activator",
                                          "Revisions assigned per Ready activator: min, mean and max.", ["stat"],
                                          registry=registry),
            assignment_changes=Counter("endpointsctl_assignment_changes_total",
                                       "Revisions whose set of activators changed, by cause.", ["cause"],
                                       registry=registry),
            queued=Counter("endpointsctl_queued_revisions_total",
                           "Revisions queued for a reconcile, by what changed: revision, activationendpoints, output, "
                           "ready-pods, activator, node, capacity, node-set, config, rebalance, lead, resync.",
                           ["cause"], registry=registry),
            rebalances=Counter("endpointsctl_rebalances_total",
                               "Bounded rebalances run onto a newly Ready activator.", registry=registry),
            rebalanced_revisions=Counter("endpointsctl_rebalanced_revisions_total",
                                         "Revisions that moved one slot onto a newly Ready activator.",
                                         registry=registry),
            writes=Counter("endpointsctl_writes_total",
                           "Successful API writes, by object kind and operation (create, update, status, delete).",
                           ["kind", "operation"], registry=registry),
            write_failures=Counter("endpointsctl_write_failures_total",
                                   "API writes the server refused, by object kind and reason.", ["kind", "reason"],
                                   registry=registry),
            queue_depth=Gauge("endpointsctl_work_queue_depth",
                              "Revisions waiting for a reconcile, and being reconciled.", ["state"],
                              registry=registry),
            leader=Gauge("endpointsctl_leader", "1 while this replica holds the lease and reconciles.",
                         registry=registry),
            leader_transitions=Counter("endpointsctl_leader_transitions_total",
                                       "Times this replica started or stopped leading.", ["transition"],
                                       registry=registry),
            demand_reports=Counter("endpointsctl_demand_reports_total",
                                   "Stat messages (one revision's demand from one activator) taken from the "
                                   "activators' reports on /stats.", registry=registry),
            demand_refused=Counter("endpointsctl_demand_refused_messages_total",
                                   "Websocket messages on /stats that were not demand reports, by reason: "
                                   "undecodable (binary, not a WireStatMessages; the connection is kept), text (the "
                                   "connection is closed).", ["reason"], registry=registry),
            demand_connections=Gauge("endpointsctl_demand_connections",
                                     "Activators connected to /stats to report their demand.", registry=registry),
            demand_active_revisions=Gauge("endpointsctl_demand_active_revisions",
                                          "Revisions with demand > 0 in fresh activator reports (KEDA's IsActive).",
                                          registry=registry),
            keda_requests=Counter("endpointsctl_keda_requests_total",
                                  "Calls to KEDA's external scaler service (streams counted when they start), by "
                                  "method and gRPC status code.", ["method", "code"], registry=registry),
        )  # fmt: skip

    def observe_load(self, loads: Mapping[str, int], ready: list[str]) -> None:
        """Spread of revisions over the Ready activators (activators without revisions count as 0)."""
        values = [loads.get(name, 0) for name in ready]
        if not values:
            for stat in ("min", "mean", "max"):
                self.revisions_per_activator.labels(stat).set(0)
            return
        self.revisions_per_activator.labels("min").set(min(values))
        self.revisions_per_activator.labels("mean").set(sum(values) / len(values))
        self.revisions_per_activator.labels("max").set(max(values))
