"""The activator's Prometheus metrics, on an injected registry (tests use their own).

Labels stay bounded: namespace, revision, code class, reason, path. Never pod names or URLs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from activator.throttling import Throttler

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    request_duration: Histogram
    refusals: Counter
    forward_retries: Counter
    cold_starts: Counter
    cold_start_duration: Histogram
    endpoints: Gauge
    local_skips: Counter
    local_pods: Counter
    gc_pauses: Histogram
    open_connections: Gauge
    connections_refused: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        rev = ["namespace", "revision"]
        return cls(
            requests=Counter("activator_requests_total", "Requests answered, by status code class.",
                             [*rev, "code_class"], registry=registry),
            request_duration=Histogram("activator_request_duration_seconds",
                                       "Time from receiving a request to the end of its response.", rev,
                                       buckets=LATENCY_BUCKETS, registry=registry),
            refusals=Counter("activator_refusals_total",
                             "Requests refused by the activator itself, by reason (namespace and revision empty "
                             "when the request named no known revision).", [*rev, "reason"],
                             registry=registry),
            forward_retries=Counter("activator_forward_retries_total",
                                    "Requests retried on another endpoint because the connect failed, by reason.",
                                    ["reason"], registry=registry),
            cold_starts=Counter("activator_cold_starts_total", "Cold starts triggered, by path and outcome.",
                                [*rev, "path", "outcome"], registry=registry),
            cold_start_duration=Histogram("activator_cold_start_duration_seconds",
                                          "From triggering a cold start to the first ready endpoint, by the path "
                                          "taken (cold starts that ended ready only).", ["path"],
                                          buckets=LATENCY_BUCKETS, registry=registry),
            local_skips=Counter("activator_local_scheduling_skips_total",
                                "Cold starts not scheduled on this node, by reason (filter, MaxScale, ...).",
                                ["reason"], registry=registry),
            local_pods=Counter("activator_local_pods_total",
                               "Pods this activator wrote onto its node, by outcome: created, adopted (handed to "
                               "the ReplicaSet), or deleted (not_started, claim_failed, lost_claim, handover_failed, "
                               "failed_deleted, abandoned_deleted).",
                               ["outcome"], registry=registry),
            endpoints=Gauge("activator_ready_endpoints",
                            "Ready endpoints known for each revision this activator has had traffic for.", rev,
                            registry=registry),
            gc_pauses=Histogram("activator_gc_pause_seconds",
                                "Python garbage collections, by generation: every request waits while one runs.",
                                ["generation"], buckets=PAUSE_BUCKETS, registry=registry),
            open_connections=Gauge("activator_open_connections",
                                   "Client connections open on the proxy port (limit: --max-connections).",
                                   registry=registry),
            connections_refused=Counter("activator_connections_refused_total",
                                        "Client connections answered 503 and closed at once because "
                                        "--max-connections were open.", registry=registry),
        )  # fmt: skip


class GcPauses:
    """Times every garbage collection into ``histogram`` (a ``gc.callbacks`` entry, removed by ``close``)."""

    def __init__(self, histogram: Histogram) -> None:
        self.children = [histogram.labels(str(generation)) for generation in range(3)]
        self.started = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.children[info["generation"]].observe(time.perf_counter() - self.started)

    async def close(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class ThrottlerCollector(Collector):
    """Queue depth and in-flight requests per revision, read from the throttlers themselves at scrape time."""

    def __init__(self, throttlers: Callable[[], Iterable[tuple[str, Throttler]]]) -> None:
        self.throttlers = throttlers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue = GaugeMetricFamily("activator_queue_depth", "Requests waiting for capacity.",
                                  labels=["namespace", "revision"])  # fmt: skip
        in_flight = GaugeMetricFamily(
            "activator_in_flight_requests",
            "Requests being forwarded right now: the concurrency signal an autoscaler (KEDA, HPA) can scale on.",
            labels=["namespace", "revision"],
        )
        for key, throttler in self.throttlers():
            namespace, _, name = key.partition("/")
            queue.add_metric([namespace, name], throttler.queue_depth)
            in_flight.add_metric([namespace, name], throttler.in_flight)
        yield queue
        yield in_flight
