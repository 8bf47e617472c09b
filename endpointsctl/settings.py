"""endpointsctl's settings: one frozen, grouped dataclass built once at start-up from flags and ``LOCALSCHED_*`` env.

Every flag ``--some-name`` can also be given as ``LOCALSCHED_SOME_NAME``; a flag wins over its env var. Invalid
values fail fast with a :class:`~localsched.settings.SettingsError` naming the flag or env var and the value.
"""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from endpointsctl.subsetting.registry import DEFAULT_FILTERS, DEFAULT_WEIGHTS, SubsettingConfig
from localsched.settings import LOG_FORMATS, LOG_LEVELS, Reader, Setting, SettingsError, build_parser, env_name

DEFAULT_NAMESPACE = "localsched-system"


@dataclass(frozen=True)
class Identity:
    pod_name: str = ""
    pod_namespace: str = ""
    pod_ip: str = ""


@dataclass(frozen=True)
class Server:
    """The admin server: ``/metrics``, ``/healthz``, ``/readyz``."""

    bind_address: str = "0.0.0.0"
    admin_port: int = 9090
    shutdown_timeout_seconds: float = 10.0  # below the pod's terminationGracePeriodSeconds (30)


@dataclass(frozen=True)
class Sources:
    """Where the controller finds its inputs."""

    activator_namespace: str = DEFAULT_NAMESPACE
    activator_selector: str = "app.kubernetes.io/name=activator"
    activator_port: int = 8012  # the activators' port named `http`, published in every slice
    knative_namespace: str = "knative-serving"  # where config-autoscaler lives


@dataclass(frozen=True)
class Subsetting:
    config: SubsettingConfig = field(default_factory=SubsettingConfig)
    max_node_selection: int = 2  # N when target-burst-capacity is -1; valid 1 <= N < nodes


@dataclass(frozen=True)
class Reconciling:
    workers: int = 4
    resync_seconds: float = 300.0  # every revision is recomputed this often (writes only what changed)
    rebalance: bool = True
    rebalance_delay_seconds: float = 30.0  # a (re)appearing activator must stay Ready this long to be rebalanced onto


@dataclass(frozen=True)
class LeaderElection:
    enabled: bool = True
    lease_name: str = "endpointsctl"
    lease_namespace: str = DEFAULT_NAMESPACE
    identity: str = ""  # unique per process: a restarted process is a new candidate
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0


@dataclass(frozen=True)
class Keda:
    """KEDA's external scaler (gRPC), answered from the demand the activators report on the admin server's /stats."""

    host: str = ""  # empty: the admin server's --bind-address
    port: int = 9091  # 0: no gRPC server (the /stats sink still takes reports)
    staleness_seconds: float = 3.0  # an activator reports every second: a report older than this no longer counts


@dataclass(frozen=True)
class Settings:
    identity: Identity = field(default_factory=Identity)
    server: Server = field(default_factory=Server)
    sources: Sources = field(default_factory=Sources)
    subsetting: Subsetting = field(default_factory=Subsetting)
    reconciling: Reconciling = field(default_factory=Reconciling)
    leader: LeaderElection = field(default_factory=LeaderElection)
    keda: Keda = field(default_factory=Keda)
    kubeconfig: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line (localsched/logs.py)


WEIGHTS_TEXT = ",".join(f"{name}={weight}" for name, weight in DEFAULT_WEIGHTS.items())

SETTINGS: tuple[Setting, ...] = (
    Setting("--kubeconfig", "kubeconfig file (empty: $KUBECONFIG, else the in-cluster service account)", None),
    Setting("--log-level", "least severe log level written", "INFO", choices=LOG_LEVELS),
    Setting("--log-format", "log lines: text, or json (one object per line)", "text", choices=LOG_FORMATS),
    Setting("--bind-address", "address of the admin server", Server.bind_address),
    Setting("--admin-port", "port for /metrics, /healthz, /readyz and the activators' /stats reports",
            Server.admin_port),
    Setting("--shutdown-timeout-seconds", "grace for the admin and gRPC servers on shutdown",
            Server.shutdown_timeout_seconds),
    Setting("--activator-namespace", "namespace of the activator pods", DEFAULT_NAMESPACE,
            fallback_env="POD_NAMESPACE"),
    Setting("--activator-selector", "label selector of the activator pods", Sources.activator_selector),
    Setting("--activator-port", "activator port published in the slices", Sources.activator_port),
    Setting("--knative-namespace", "namespace of Knative's config-autoscaler", Sources.knative_namespace),
    Setting("--subsetting-algorithm", "algorithm, by name in entry-point group localsched.subsetting",
            "least-loaded"),
    Setting("--subsetting-weights", "score plugin weights, Name=weight,... (0 disables one)", WEIGHTS_TEXT),
    Setting("--subsetting-filters", "filter plugins, in order, comma-separated", ",".join(DEFAULT_FILTERS)),
    Setting("--max-node-selection", "activators per revision when its target-burst-capacity is -1",
            Subsetting.max_node_selection),
    Setting("--workers", "concurrent reconciles, 1 to 64 (one per revision at a time)", Reconciling.workers),
    Setting("--resync-seconds", "every revision is recomputed this often (only changes are written)",
            Reconciling.resync_seconds),
    Setting("--rebalance", "move single slots onto new activators (bounded churn)", Reconciling.rebalance),
    Setting("--rebalance-delay-seconds", "how long a new activator stays Ready before slots move onto it",
            Reconciling.rebalance_delay_seconds),
    Setting("--leader-elect", "use Lease leader election (off: this process always leads)", LeaderElection.enabled),
    Setting("--lease-name", "Lease name", LeaderElection.lease_name),
    Setting("--lease-namespace", "Lease namespace", DEFAULT_NAMESPACE, fallback_env="POD_NAMESPACE"),
    Setting("--identity", "leader election identity, before a random suffix (empty: the hostname)", "",
            fallback_env="POD_NAME"),
    Setting("--lease-duration-seconds", "how long a lease lasts unrenewed", LeaderElection.lease_duration_seconds),
    Setting("--renew-deadline-seconds", "the leader steps down if it has not renewed within this",
            LeaderElection.renew_deadline_seconds),
    Setting("--retry-period-seconds", "between acquire/renew attempts", LeaderElection.retry_period_seconds),
    Setting("--keda-host", "address of KEDA's external scaler gRPC server (empty: --bind-address)", Keda.host),
    Setting("--keda-port", "port of KEDA's external scaler gRPC server (0: none)", Keda.port),
    Setting("--demand-staleness-seconds", "an activator's demand report counts this long", Keda.staleness_seconds),
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    return build_parser("endpointsctl", "localsched endpointsctl: the ActivationEndpoints controller", SETTINGS)


def parse_weights(text: str) -> dict[str, int]:
    """``Stickiness=3,LeastLoaded=1`` -> ``{"Stickiness": 3, "LeastLoaded": 1}`` (ValueError when malformed)."""
    weights: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, number = item.partition("=")
        name, number = name.strip(), number.strip()
        if not sep or not name or not number.isdigit():
            raise ValueError(f"{item!r} is not Name=weight with a whole number weight >= 0")
        if name in weights:
            raise ValueError(f"{name!r} is given twice")
        weights[name] = int(number)
    return weights


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate; raises SettingsError naming the bad key and value."""
    environ = os.environ if env is None else env
    args = parser().parse_args(argv)
    read = Reader(args, environ)
    text, whole, seconds, flag_bool = read.text, read.whole, read.number, read.flag

    def source(flag: str) -> str:
        """The name the user set a flag by (the flag, else its env var): error messages name that one."""
        return flag if getattr(args, flag.lstrip("-").replace("-", "_"), None) is not None else env_name(flag)

    identity = Identity(
        pod_name=environ.get("POD_NAME", ""),
        pod_namespace=environ.get("POD_NAMESPACE", ""),
        pod_ip=environ.get("POD_IP", ""),
    )
    own_namespace = identity.pod_namespace or DEFAULT_NAMESPACE

    algorithm = text("--subsetting-algorithm", "least-loaded").strip()
    if not algorithm:
        raise SettingsError(f"{source('--subsetting-algorithm')} is empty: name an algorithm")
    weights_text = text("--subsetting-weights", "")
    filters_text = text("--subsetting-filters", "")
    try:
        weights = parse_weights(weights_text) if weights_text else dict(DEFAULT_WEIGHTS)
    except ValueError as exc:
        raise SettingsError(f"{source('--subsetting-weights')}={weights_text!r} is invalid: {exc}") from None
    filters = parse_names(filters_text) if filters_text else DEFAULT_FILTERS
    try:
        config = SubsettingConfig(algorithm=algorithm, weights=weights, filters=filters)
    except ValueError as exc:
        key = source("--subsetting-filters") if "filters" in str(exc) else source("--subsetting-weights")
        raise SettingsError(f"{key} is invalid: {exc}") from None

    leader = LeaderElection(
        enabled=flag_bool("--leader-elect", LeaderElection.enabled),
        lease_name=text("--lease-name", LeaderElection.lease_name),
        lease_namespace=text("--lease-namespace", own_namespace),
        identity=unique_identity(text("--identity", "") or identity.pod_name or socket.gethostname()),
        lease_duration_seconds=seconds("--lease-duration-seconds", LeaderElection.lease_duration_seconds),
        renew_deadline_seconds=seconds("--renew-deadline-seconds", LeaderElection.renew_deadline_seconds),
        retry_period_seconds=seconds("--retry-period-seconds", LeaderElection.retry_period_seconds),
    )
    if not leader.retry_period_seconds < leader.renew_deadline_seconds < leader.lease_duration_seconds:
        raise SettingsError(
            f"{source('--renew-deadline-seconds')}={leader.renew_deadline_seconds:g} is invalid: leader election "
            f"needs retry period ({leader.retry_period_seconds:g}) < renew deadline < lease duration "
            f"({leader.lease_duration_seconds:g}), so a leader steps down before its lease can expire"
        )
    if leader.enabled and not leader.lease_name:
        raise SettingsError(f"{source('--lease-name')} is empty")

    server = Server(
        bind_address=text("--bind-address", Server.bind_address),
        admin_port=whole("--admin-port", Server.admin_port, 1, 65535),
        shutdown_timeout_seconds=seconds("--shutdown-timeout-seconds", Server.shutdown_timeout_seconds),
    )
    keda = Keda(
        host=text("--keda-host", Keda.host).strip() or server.bind_address,
        port=whole("--keda-port", Keda.port, 0, 65535),
        staleness_seconds=seconds("--demand-staleness-seconds", Keda.staleness_seconds),
    )
    if keda.port == server.admin_port:
        raise SettingsError(
            f"{source('--keda-port')}={keda.port} is invalid: the admin server (--admin-port) already listens there"
        )

    return Settings(
        identity=identity,
        server=server,
        sources=Sources(
            activator_namespace=text("--activator-namespace", own_namespace),
            activator_selector=text("--activator-selector", Sources.activator_selector),
            activator_port=whole("--activator-port", Sources.activator_port, 1, 65535),
            knative_namespace=text("--knative-namespace", Sources.knative_namespace),
        ),
        subsetting=Subsetting(
            config=config,
            max_node_selection=whole("--max-node-selection", Subsetting.max_node_selection, 1),
        ),
        reconciling=Reconciling(
            workers=whole("--workers", Reconciling.workers, 1, 64),
            resync_seconds=seconds("--resync-seconds", Reconciling.resync_seconds),
            rebalance=flag_bool("--rebalance", Reconciling.rebalance),
            rebalance_delay_seconds=seconds("--rebalance-delay-seconds", Reconciling.rebalance_delay_seconds),
        ),
        leader=leader,
        keda=keda,
        kubeconfig=text("--kubeconfig", "") or None,
        log_level=read.choice("--log-level", "INFO", LOG_LEVELS),
        log_format=read.choice("--log-format", "text", LOG_FORMATS),
    )


def unique_identity(prefix: str) -> str:
    """``{prefix}_{random}``, like kube-controller-manager: a restarted process never inherits its old lease."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
