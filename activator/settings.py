"""The activator's settings: one frozen, grouped dataclass built once at start-up from flags and env."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from localsched.settings import LOG_FORMATS, LOG_LEVELS, Reader, Setting, SettingsError, build_parser


@dataclass(frozen=True)
class Identity:
    node_name: str
    pod_ip: str
    pod_name: str
    pod_namespace: str


@dataclass(frozen=True)
class Server:
    bind_address: str = "0.0.0.0"
    port: int = 8012
    admin_port: int = 9090
    drain_seconds: float = 5.0  # keep serving after SIGTERM while readiness fails, so routing moves away
    shutdown_timeout_seconds: float = 45.0  # then in-flight and queued requests get this long to finish
    # A connection that sends no complete request head this long after it opened or after its last response is
    # closed: idle keep-alive connections, and clients that trickle their headers (activator/listening.py).
    idle_timeout_seconds: float = 60.0
    max_connections: int = 4096  # client connections open at once; one more is answered 503 and closed
    max_body_bytes: int = 0  # a request body larger than this is refused with 413 (0: no limit, as Knative)


@dataclass(frozen=True)
class Throttling:
    queue_limit: int = 1000  # queued requests per revision; beyond it, 503 with Retry-After
    activation_timeout_seconds: float = 120.0  # how long a request may wait for capacity
    retry_after_seconds: int = 1
    probe_interval_seconds: float = 0.05  # the activator's own readiness checks of new pods (queue-proxy: 50 ms)


@dataclass(frozen=True)
class Forwarding:
    connect_timeout_seconds: float = 1.0  # what decides that an endpoint is dead (a hung node does not answer)
    max_attempts: int = 3
    suspect_seconds: float = 10.0


@dataclass(frozen=True)
class Reporting:
    # Knative's autoscaler Service, as Knative's own activator dials it; empty: report to no autoscaler.
    autoscaler_url: str = "ws://autoscaler.knative-serving.svc.cluster.local:8080"
    # endpointsctl's replicas, for KEDA: "namespace/service" of the headless Service listing them ("" for none;
    # by default endpointsctl-stats in the activator's own namespace)
    demand_service: str = "endpointsctl-stats"
    interval_seconds: float = 1.0
    buffer: int = 30  # reports kept per destination while it is away (the oldest are dropped)


@dataclass(frozen=True)
class Settings:
    identity: Identity
    server: Server
    throttling: Throttling
    forwarding: Forwarding
    reporting: Reporting = Reporting()
    local_scheduling: bool = True  # off: cold starts take the standard path (scale the Deployment from zero)
    claim_at: str = "auto"  # when a local pod's replica is claimed: create, running, or auto (by server version)
    cluster_domain: str = "cluster.local"
    kubeconfig: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line (localsched/logs.py)


CLAIM_AT = ("auto", "create", "running")

SETTINGS: tuple[Setting, ...] = (
    Setting("--node-name", "the node this activator runs on and schedules cold starts onto; required",
            "", fallback_env="NODE_NAME", per_pod=True),
    Setting("--pod-ip", "this pod's IP", "", fallback_env="POD_IP", per_pod=True),
    Setting("--bind-address", "address the proxy and the admin server listen on", Server.bind_address),
    Setting("--port", "port of the proxy (Knative's activator port)", Server.port),
    Setting("--admin-port", "port for /metrics, /healthz, /readyz", Server.admin_port),
    Setting("--drain-seconds", "after SIGTERM, keep serving this long while /readyz fails, so routing moves "
            "away", Server.drain_seconds),
    Setting("--shutdown-timeout-seconds", "then give in-flight and queued requests this long to finish",
            Server.shutdown_timeout_seconds),
    Setting("--idle-timeout-seconds", "close a connection that sends no complete request head this long after "
            "it opened or after its last response (idle keep-alive, or trickled headers)", Server.idle_timeout_seconds),
    Setting("--max-connections", "client connections open at once; one more is answered 503 at once and closed",
            Server.max_connections),
    Setting("--max-body-bytes", "refuse a request body larger than this with 413 (0: no limit)",
            Server.max_body_bytes),
    Setting("--queue-limit", "requests that may wait per revision; beyond it, 503 with Retry-After",
            Throttling.queue_limit),
    Setting("--activation-timeout-seconds", "how long a request may wait for capacity (a cold start) before a "
            "503", Throttling.activation_timeout_seconds),
    Setting("--probe-interval-seconds", "how often a new pod's IP is probed until it answers",
            Throttling.probe_interval_seconds),
    Setting("--connect-timeout-seconds", "connect timeout to a revision's pod: what decides that an endpoint is "
            "dead", Forwarding.connect_timeout_seconds),
    Setting("--max-attempts", "attempts per request on connect failures, 1 to 10 (the first try counts)",
            Forwarding.max_attempts),
    Setting("--suspect-seconds", "how long an endpoint that failed to connect stays out of rotation",
            Forwarding.suspect_seconds),
    Setting("--autoscaler-url", "websocket of Knative's autoscaler for demand reports (empty: none)",
            Reporting.autoscaler_url),
    Setting("--demand-service", "[namespace/]headless Service of the endpointsctl replicas to report demand to, "
            "for KEDA (empty: none)", Reporting.demand_service),
    Setting("--report-interval-seconds", "how often demand is reported to each destination",
            Reporting.interval_seconds),
    Setting("--report-buffer", "reports kept per destination while it is unreachable", Reporting.buffer),
    Setting("--local-scheduling", "schedule cold starts onto this node (off: the standard path, scaling the "
            "Deployment up from zero)", True),
    Setting("--claim-at", "claim a local pod's replica at its creation, once it runs, or auto (by server version)",
            "auto", choices=CLAIM_AT),
    Setting("--cluster-domain", "cluster domain, for routing by Host header", "cluster.local"),
    Setting("--kubeconfig", "kubeconfig file (empty: $KUBECONFIG, else the in-cluster service account)", None),
    Setting("--log-level", "least severe log level written", "INFO", choices=LOG_LEVELS),
    Setting("--log-format", "log lines: text, or json (one object per line)", "text", choices=LOG_FORMATS),
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    return build_parser("activator", "localsched activator: node-local cold-start proxy", SETTINGS)


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate; raises SettingsError naming the bad key and value."""
    environ = os.environ if env is None else env
    args = parser().parse_args(argv)

    read = Reader(args, environ)
    text, whole, number = read.text, read.whole, read.number

    node = text("--node-name", environ.get("NODE_NAME", ""))
    if not node:
        raise SettingsError("--node-name / LOCALSCHED_NODE_NAME / NODE_NAME is required (downward API spec.nodeName)")
    return Settings(
        identity=Identity(
            node_name=node,
            pod_ip=text("--pod-ip", environ.get("POD_IP", "")),
            pod_name=environ.get("POD_NAME", ""),
            pod_namespace=environ.get("POD_NAMESPACE", ""),
        ),
        server=Server(
            bind_address=text("--bind-address", Server.bind_address),
            port=whole("--port", Server.port, 1, 65535),
            admin_port=whole("--admin-port", Server.admin_port, 1, 65535),
            drain_seconds=number("--drain-seconds", Server.drain_seconds, allow_zero=True),
            shutdown_timeout_seconds=number("--shutdown-timeout-seconds", Server.shutdown_timeout_seconds),
            idle_timeout_seconds=number("--idle-timeout-seconds", Server.idle_timeout_seconds),
            max_connections=whole("--max-connections", Server.max_connections, 1),
            max_body_bytes=whole("--max-body-bytes", Server.max_body_bytes, 0),
        ),
        throttling=Throttling(
            queue_limit=whole("--queue-limit", Throttling.queue_limit, 1),
            activation_timeout_seconds=number("--activation-timeout-seconds", Throttling.activation_timeout_seconds),
            probe_interval_seconds=number("--probe-interval-seconds", Throttling.probe_interval_seconds),
        ),
        forwarding=Forwarding(
            connect_timeout_seconds=number("--connect-timeout-seconds", Forwarding.connect_timeout_seconds),
            max_attempts=whole("--max-attempts", Forwarding.max_attempts, 1, 10),
            suspect_seconds=number("--suspect-seconds", Forwarding.suspect_seconds),
        ),
        reporting=Reporting(
            autoscaler_url=_websocket_url("--autoscaler-url", text("--autoscaler-url", Reporting.autoscaler_url)),
            demand_service=_service(
                text("--demand-service", Reporting.demand_service), environ.get("POD_NAMESPACE") or "localsched-system"
            ),
            interval_seconds=number("--report-interval-seconds", Reporting.interval_seconds),
            buffer=whole("--report-buffer", Reporting.buffer, 1, 10000),
        ),
        local_scheduling=read.flag("--local-scheduling", True),
        claim_at=read.choice("--claim-at", "auto", CLAIM_AT),
        cluster_domain=text("--cluster-domain", "cluster.local"),
        kubeconfig=text("--kubeconfig", "") or None,
        log_level=read.choice("--log-level", "INFO", LOG_LEVELS),
        log_format=read.choice("--log-format", "text", LOG_FORMATS),
    )


def _websocket_url(flag: str, url: str) -> str:
    if url and not url.startswith(("ws://", "wss://")):
        raise SettingsError(f"{flag}={url!r} is invalid: a ws:// or wss:// URL, or empty for none")
    return url


def _service(value: str, namespace: str) -> str:
    """``namespace/name`` (a bare name is in ``namespace``), or empty."""
    if not value:
        return ""
    ns, _, name = value.rpartition("/")
    if not name or "/" in ns:
        raise SettingsError(f"--demand-service={value!r} is invalid: [namespace/]name of a Service, or empty")
    return f"{ns or namespace}/{name}"
