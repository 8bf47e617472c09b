"""The activator's settings: one frozen, grouped dataclass built once at start-up from flags and env."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from localsched.settings import LOG_LEVELS, Reader, SettingsError, add, add_version


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="activator", description="localsched activator: node-local cold-start proxy")
    for flag, text, default in (
        ("--node-name", "this node (downward API spec.nodeName; env NODE_NAME also read)", ""),
        ("--pod-ip", "this pod's IP (env POD_IP also read)", ""),
        ("--bind-address", "address to listen on", Server.bind_address),
        ("--port", "proxy port", Server.port),
        ("--admin-port", "port for /metrics, /healthz, /readyz", Server.admin_port),
        ("--drain-seconds", "after SIGTERM, keep serving this long while unready", Server.drain_seconds),
        ("--shutdown-timeout-seconds", "then wait this long for requests", Server.shutdown_timeout_seconds),
        ("--queue-limit", "queued requests per revision", Throttling.queue_limit),
        ("--activation-timeout-seconds", "max wait for capacity", Throttling.activation_timeout_seconds),
        (
            "--probe-interval-seconds",
            "how often a new pod's IP is probed until it answers",
            Throttling.probe_interval_seconds,
        ),
        ("--connect-timeout-seconds", "upstream connect timeout", Forwarding.connect_timeout_seconds),
        ("--max-attempts", "attempts per request on connect failures", Forwarding.max_attempts),
        ("--suspect-seconds", "how long a failed endpoint stays out of rotation", Forwarding.suspect_seconds),
        (
            "--autoscaler-url",
            "websocket of Knative's autoscaler for demand reports (empty: none)",
            Reporting.autoscaler_url,
        ),
        (
            "--demand-service",
            "[namespace/]headless Service of the endpointsctl replicas to report to, for KEDA (empty: none)",
            Reporting.demand_service,
        ),
        ("--report-interval-seconds", "how often demand is reported", Reporting.interval_seconds),
        ("--report-buffer", "reports kept per destination while it is unreachable", Reporting.buffer),
        ("--local-scheduling", "schedule cold starts onto this node", True),
        ("--claim-at", "claim a local pod's replica at its creation (create), once it runs (running), or auto", "auto"),
        ("--cluster-domain", "cluster domain for Host-based routing", "cluster.local"),
        ("--kubeconfig", "kubeconfig (else $KUBECONFIG, else in-cluster)", None),
        ("--log-level", "log level", "INFO"),
    ):
        add(p, flag, text, default)
    add_version(p)
    return p


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate; raises SettingsError naming the bad key and value."""
    environ = os.environ if env is None else env
    args = parser().parse_args(argv)

    read = Reader(args, environ)
    text, whole, number = read.text, read.whole, read.number

    node = text("--node-name", environ.get("NODE_NAME", ""))
    if not node:
        raise SettingsError("--node-name / LOCALSCHED_NODE_NAME / NODE_NAME is required (downward API spec.nodeName)")
    level = text("--log-level", "INFO").upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"--log-level={level!r} is invalid: one of {', '.join(LOG_LEVELS)}")
    claim_at = text("--claim-at", "auto")
    if claim_at not in ("auto", "create", "running"):
        raise SettingsError(f"--claim-at={claim_at!r} is invalid: auto, create or running")
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
        claim_at=claim_at,
        cluster_domain=text("--cluster-domain", "cluster.local"),
        kubeconfig=text("--kubeconfig", "") or None,
        log_level=level,
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
