"""The devcluster: a real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, plus simulated nodes.

Every component is a detached process in its own process group, recorded in ``state.json`` under the state
directory, so ``devcluster up`` can return while the cluster keeps running and ``devcluster down`` (or a test
session's teardown) can stop exactly what was started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devcluster import binaries, kubeconfig, network, pki, versions
from devcluster.network import Network
from localsched.predicates import node_is_ready

DEFAULT_STATE_DIR = Path(os.environ.get("LOCALSCHED_STATE_DIR", Path.home() / ".local/state/localsched/devcluster"))


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeSpec:
    name: str
    zone: str
    ip_prefix: str  # pods on this node get ip_prefix.2 .. ip_prefix.254; the node itself is ip_prefix.1
    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 110


@dataclass(frozen=True)
class ClusterSpec:
    state_dir: Path = DEFAULT_STATE_DIR
    nodes: int = 3
    zones: tuple[str, ...] = ("zone-a", "zone-b", "zone-c")
    port_base: int = 17000
    ip_base: str = "127.20"  # node i (1-based) gets A.B.i.0/24: loopback addresses, or a private range for netns
    network: str = "loopback"  # or "netns" (devcluster/network.py); the CLI resolves "auto"
    node_cpu: str = "4"
    node_memory: str = "8Gi"
    node_monitor_grace_seconds: int = 8
    kubelet_timing: str = "realistic"  # or "instant" (devcluster/kubelet.py, docs/kubelet-model.md)
    relist_seconds: float | None = None  # the simulated kubelets' PLEG relist period (default 1 s)
    # Benchmarks: the control plane on one half of the CPUs, the nodes (kubelets, their pods) on the other, as on
    # a real cluster where they are different machines; see cpu_halves().
    split_cpus: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def etcd_port(self) -> int:
        return self.port_base + 1

    @property
    def etcd_peer_port(self) -> int:
        return self.port_base + 2

    @property
    def apiserver_port(self) -> int:
        return self.port_base + 3

    @property
    def autoscaler_port(self) -> int:
        """The autoscaler stand-in's websocket (devcluster/autoscaler_standin.py), where activators report."""
        return self.port_base + 4

    @property
    def net(self) -> Network:
        return Network(self.network, self.ip_base, tag=f"lsdc{self.port_base}")

    @property
    def autoscaler_url(self) -> str:
        return f"ws://{self.net.host_ip}:{self.autoscaler_port}/"

    @property
    def server(self) -> str:
        return f"https://{self.net.host_ip}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    def node_specs(self) -> list[NodeSpec]:
        return [
            NodeSpec(
                name=f"node-{i}",
                zone=self.zones[(i - 1) % len(self.zones)],
                ip_prefix=f"{self.ip_base}.{i}",
                cpu=self.node_cpu,
                memory=self.node_memory,
            )
            for i in range(1, self.nodes + 1)
        ]


def say(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


# -- process bookkeeping ------------------------------------------------------------------------------------------


class State:
    """``state.json``: what runs, with which pid, and how the cluster was laid out."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("processes", {})

    @property
    def processes(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.data["processes"]
        return result

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live pids in process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cpu_halves() -> tuple[str, str] | None:
    """(control plane CPUs, node CPUs) as taskset lists, splitting this process's CPUs in two; None on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """``cmd`` on ``cpus`` (every thread and child it starts), through util-linux's taskset."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpus, *cmd] if cpus and taskset else cmd


def start_process(
    state: State, name: str, cmd: list[str], *, env: dict[str, str] | None = None, cpus: str | None = None
) -> int:
    cmd = pinned(cmd, cpus)
    logs = state.path.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name.replace('/', '-')}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env or os.environ.copy(),
            cwd=state.path.parent,
        )
    state.processes[name] = {"pid": proc.pid, "cmd": cmd, "log": str(log_path), "status": "running"}
    state.save()
    return proc.pid


def stop_group(pid: int, *, grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid`` (continuing it first if stopped), then SIGKILL what is left."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_members(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until(lambda: not group_members(pid), 5.0, f"process group {pid} to exit")


# -- health checks ------------------------------------------------------------------------------------------------


def _http_ok(url: str, *, token: str | None = None, ca: Path | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- the cluster --------------------------------------------------------------------------------------------------


def up(spec: ClusterSpec, *, fresh: bool = False) -> State:
    """Start every component (idempotent for a cluster that already runs) and wait until nodes are Ready.

    ``fresh`` starts a cluster that is not running from empty: etcd's data, the nodes' pod directories and the
    logs of an earlier run are removed first (benchmarks start so; ``make demo`` keeps what it had)."""
    started = time.monotonic()
    state = State(spec.state_dir)
    running = [p for p in state.processes.values() if p["status"] == "running"]
    if (
        running
        and all(alive(p["pid"]) for p in running)
        and _http_ok(f"{spec.server}/readyz", token=state.data.get("admin_token"), ca=spec.state_dir / "pki/ca.crt")
    ):
        say(f"already running (state: {spec.state_dir})")
        return state
    if state.processes:
        down(spec.state_dir, quiet=True)
        state = State(spec.state_dir)
    if fresh:
        for leftover in ("etcd", "nodes", "logs"):
            shutil.rmtree(spec.state_dir / leftover, ignore_errors=True)
    bins = binaries.ensure()
    version = versions.of_binary(bins.kube_apiserver)
    versions.check_network(version, spec.network)
    keys = keys_of(spec)
    state.data.update(
        {
            "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
            "server": spec.server,
            "kubeconfig": str(spec.kubeconfig),
            "admin_token": keys.tokens["admin"],
            "nodes": {n.name: asdict(n) for n in spec.node_specs()},
            "network": spec.net.record(),  # recorded before it is built: `down` removes it even after a crash
            "kubernetes_version": versions.describe(version),
        }
    )
    state.save()
    say(f"Kubernetes {versions.describe(version)}; {spec.network} network, pods in {spec.ip_base}.0.0/16")
    network.build(spec.net, [network.node_index(n.ip_prefix) for n in spec.node_specs()])
    ca = keys.ca_cert.read_bytes()
    configs = {
        user: kubeconfig.write(
            spec.state_dir / f"{file}.kubeconfig", server=spec.server, ca_cert=ca, token=keys.tokens[user], user=user
        )
        for user, file in (
            ("admin", "admin"),
            ("system:kube-controller-manager", "controller-manager"),
            ("system:kube-scheduler", "scheduler"),
            ("localsched-nodesim", "nodesim"),
        )
    }

    say("starting etcd")
    data_dir = spec.state_dir / "etcd"
    start_process(state, "etcd", [
        str(bins.etcd), "--name", "devcluster", "--data-dir", str(data_dir),
        "--listen-client-urls", f"http://127.0.0.1:{spec.etcd_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{spec.etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{spec.etcd_peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{spec.etcd_peer_port}",
        "--initial-cluster", f"devcluster=http://127.0.0.1:{spec.etcd_peer_port}",
        "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn",
    ], cpus=cpus_for(spec, "control-plane"))  # fmt: skip
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{spec.etcd_port}/health"), 30, "etcd to be healthy")

    say("starting kube-apiserver")
    start_apiserver(spec, state, bins, keys)

    say("starting kube-controller-manager and kube-scheduler")
    loopback_pods = spec.network == "loopback"
    start_process(state, "kube-controller-manager", [
        str(bins.kube_controller_manager), "--kubeconfig", str(configs["system:kube-controller-manager"]),
        *versions.controller_manager_flags(version, loopback_pods=loopback_pods),
        "--service-account-private-key-file", str(keys.sa_key), "--root-ca-file", str(keys.ca_cert),
        "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
        "--node-monitor-period=1s", f"--node-monitor-grace-period={spec.node_monitor_grace_seconds}s", "--v=1",
    ], cpus=cpus_for(spec, "control-plane"))  # fmt: skip
    start_process(state, "kube-scheduler", [
        str(bins.kube_scheduler), "--kubeconfig", str(configs["system:kube-scheduler"]),
        *versions.scheduler_flags(version), "--leader-elect=false", "--secure-port=0", "--v=1",
    ], cpus=cpus_for(spec, "control-plane"))  # fmt: skip

    say("installing the Knative stand-ins (Revision CRD and reconciler, autoscaler)")
    python = sys.executable
    env = dict(os.environ, KUBECONFIG=str(spec.kubeconfig), **spec.extra_env)
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    run_bootstrap(python, dict(env, DEVCLUSTER_AUTOSCALER_URL=spec.autoscaler_url))
    start_process(state, "knative-standin", [python, "-m", "devcluster.knative_standin"], env=env,
                  cpus=cpus_for(spec, "control-plane"))  # fmt: skip
    start_autoscaler(state, spec, env)

    say(f"starting {spec.nodes} simulated node(s)")
    node_env = dict(env, KUBECONFIG=str(configs["localsched-nodesim"]))
    for node in spec.node_specs():
        start_node(state, node, node_env, python, spec)
    wait_nodes_ready(spec, [n.name for n in spec.node_specs()], timeout=60)
    state.data["up_seconds"] = round(time.monotonic() - started, 2)
    state.save()
    say(f"cluster is up in {state.data['up_seconds']:.1f}s; export KUBECONFIG={spec.kubeconfig}")
    return state


def start_apiserver(spec: ClusterSpec, state: State, bins: binaries.Binaries, keys: pki.Pki) -> None:
    version = versions.of_binary(bins.kube_apiserver)
    host = spec.net.host_ip  # on the bridge with the netns network: the `kubernetes` Service's endpoint
    start_process(state, "kube-apiserver", [
        str(bins.kube_apiserver),
        "--etcd-servers", f"http://127.0.0.1:{spec.etcd_port}",
        "--advertise-address", host, "--bind-address", host,
        "--secure-port", str(spec.apiserver_port),
        "--tls-cert-file", str(keys.serving_cert), "--tls-private-key-file", str(keys.serving_key),
        "--client-ca-file", str(keys.ca_cert),
        "--token-auth-file", str(keys.tokens_file), "--authorization-mode", "RBAC",
        "--service-account-key-file", str(keys.sa_pub),
        "--service-account-signing-key-file", str(keys.sa_key),
        "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged=true",
        *versions.apiserver_flags(version, loopback_pods=spec.network == "loopback"), "--profiling=false", "--v=1",
    ], cpus=cpus_for(spec, "control-plane"))  # fmt: skip
    token = keys.tokens["admin"]
    wait_until(
        lambda: _http_ok(f"{spec.server}/readyz", token=token, ca=keys.ca_cert), 60, "kube-apiserver to be ready"
    )


def keys_of(spec: ClusterSpec) -> pki.Pki:
    """The cluster's certificates and tokens; the API server's names the address nodes and pods reach it at."""
    return pki.ensure(spec.state_dir / "pki", ips=(spec.net.host_ip,))


def start_apiserver_again(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Start a stopped kube-apiserver of a running cluster on its port, and wait until it is ready."""
    state = State(state_dir)
    spec = spec_of(state)
    start_apiserver(spec, state, binaries.ensure(), keys_of(spec))


def restart_apiserver(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop and start kube-apiserver (for tests that must survive an API server restart)."""
    stop_group(State(state_dir).processes["kube-apiserver"]["pid"])
    start_apiserver_again(state_dir)


def cpus_for(spec: ClusterSpec, side: str) -> str | None:
    """The CPUs of ``side`` ("control-plane" or "nodes") when the spec splits them, else None (all CPUs)."""
    halves = cpu_halves() if spec.split_cpus else None
    if halves is None:
        return None
    return halves[0] if side == "control-plane" else halves[1]


def spec_of(state: State) -> ClusterSpec:
    raw = dict(state.data["spec"])
    raw["state_dir"] = Path(raw["state_dir"])
    raw["zones"] = tuple(raw["zones"])
    return ClusterSpec(**raw)


def start_node(state: State, node: NodeSpec, env: dict[str, str], python: str, spec: ClusterSpec) -> None:
    timing = ["--timing", spec.kubelet_timing]
    if spec.relist_seconds is not None:
        timing += ["--relist-seconds", str(spec.relist_seconds)]
    inside = spec.net.node_command(network.node_index(node.ip_prefix))  # its network namespace, if any
    start_process(state, f"node/{node.name}", [
        *inside, python, "-m", "devcluster.nodesim", "--node", node.name, "--zone", node.zone,
        "--ip-prefix", node.ip_prefix, "--cpu", node.cpu, "--memory", node.memory, "--pods", str(node.pods),
        "--state-dir", str(state.path.parent / "nodes" / node.name), *timing,
    ], env=env, cpus=cpus_for(spec, "nodes"))  # fmt: skip


def start_autoscaler(state: State, spec: ClusterSpec, env: dict[str, str]) -> None:
    """The stand-in for Knative's autoscaler: the activators report to it, it owns the revisions' replicas."""
    host = spec.net.host_ip
    start_process(state, "autoscaler-standin", [sys.executable, "-m", "devcluster.autoscaler_standin",
                  "--host", host, "--port", str(spec.autoscaler_port)], env=env,
                  cpus=cpus_for(spec, "control-plane"))  # fmt: skip
    wait_until(lambda: _http_ok(f"http://{host}:{spec.autoscaler_port}/healthz"), 30, "the autoscaler stand-in")


def run_bootstrap(python: str, env: dict[str, str]) -> None:
    result = subprocess.run([python, "-m", "devcluster.bootstrap"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"bootstrap failed:\n{result.stdout}{result.stderr}")


def wait_nodes_ready(spec: ClusterSpec, names: list[str], timeout: float) -> None:
    token = State(spec.state_dir).data["admin_token"]
    ca = spec.state_dir / "pki/ca.crt"
    context = ssl.create_default_context(cafile=str(ca))

    def ready() -> bool:
        request = urllib.request.Request(f"{spec.server}/api/v1/nodes")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                items = json.load(response)["items"]
        except (urllib.error.URLError, OSError):
            return False
        ready_names = {
            n["metadata"]["name"]
            for n in items
            if node_is_ready(n)
            and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n.get("spec", {}).get("taints") or [])
        }
        return set(names) <= ready_names

    wait_until(ready, timeout, f"nodes {', '.join(names)} to be Ready", interval=0.2)


def down(state_dir: Path = DEFAULT_STATE_DIR, *, quiet: bool = False) -> list[int]:
    """Stop every process the cluster started and remove its network; return the pids still alive (none)."""
    state = State(state_dir)
    order = sorted(state.processes, key=lambda n: (n == "etcd", n == "kube-apiserver", n))
    for name in order:
        info = state.processes[name]
        if not quiet:
            say(f"stopping {name} (pid {info['pid']})")
        stop_group(info["pid"])
    net = _network(state)
    if net is not None:
        network.teardown(net)
        if left := network.leftovers(net):
            say(f"warning: could not remove {', '.join(left)}")
    leftover = [info["pid"] for info in state.processes.values() if group_members(info["pid"])]
    state.data["processes"] = {}
    state.save()
    return leftover


def _network(state: State) -> Network | None:
    """The network a cluster made: as recorded, or (state of an older devcluster) its loopback layout."""
    recorded = Network.recorded(state.data.get("network"))
    if recorded is None and "spec" in state.data:
        return spec_of(state).net
    return recorded


def _node(state: State, name: str) -> tuple[dict[str, Any], Network, int]:
    """A node's process record, the cluster's network, and the node's index in it."""
    info = _node_process(state, name)
    net = _network(state) or spec_of(state).net
    return info, net, network.node_index(state.data["nodes"][name]["ip_prefix"])


def kill_node(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """A dead node: the simulated kubelet and every pod process on it are SIGKILLed, heartbeats stop, and (netns
    network) its link goes down, so connections to its pods time out as with a dead machine."""
    state = State(state_dir)
    info, net, index = _node(state, name)
    network.cut_link(net, index, down=True)
    try:
        os.killpg(info["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_until(lambda: not group_members(info["pid"]), 10, f"{name}'s processes to exit")
    info["status"] = "killed"
    state.save()


def hang_node(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """A hung node: the simulated kubelet and its pods are SIGSTOPped (alive, unresponsive, no heartbeats), and
    its packets dropped, so connecting to its pods times out instead of being refused."""
    state = State(state_dir)
    info, net, index = _node(state, name)
    os.killpg(info["pid"], signal.SIGSTOP)
    if not network.drop_all(net, index, drop=True):
        say("warning: iptables unavailable (needs root): a hung node's stopped pods still accept connections")
    info["status"] = "hung"
    state.save()


def resume_node(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    state = State(state_dir)
    info, net, index = _node(state, name)
    network.drop_all(net, index, drop=False)
    os.killpg(info["pid"], signal.SIGCONT)
    info["status"] = "running"
    state.save()


def partition_node(name: str, state_dir: Path = DEFAULT_STATE_DIR, *, heal: bool = False) -> None:
    """A node cut off from the API server only (netns network): its heartbeats and its pods' API calls time out,
    its pods keep serving the traffic that reaches them; ``heal`` reconnects it."""
    state = State(state_dir)
    info, net, index = _node(state, name)
    network.partition(net, index, spec_of(state).apiserver_port, cut=not heal)
    info["status"] = "running" if heal else "partitioned"
    state.save()


def heal_node(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    partition_node(name, state_dir, heal=True)


def revive_node(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Start a killed node's simulated kubelet again (its pods are restarted, as after a reboot)."""
    state = State(state_dir)
    info, net, index = _node(state, name)
    if group_members(info["pid"]):
        stop_group(info["pid"])
    network.drop_all(net, index, drop=False)
    network.cut_link(net, index, down=False)
    node = NodeSpec(**state.data["nodes"][name])
    env = dict(os.environ, KUBECONFIG=str(state_dir / "nodesim.kubeconfig"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start_node(state, node, env, sys.executable, spec_of(state))


def kill_autoscaler(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """The autoscaler stand-in dies (SIGKILL): the activators lose their report connection."""
    state = State(state_dir)
    info = state.processes["autoscaler-standin"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info["pid"], signal.SIGKILL)
    wait_until(lambda: not group_members(info["pid"]), 10, "the autoscaler stand-in to exit")
    info["status"] = "killed"
    state.save()


def revive_autoscaler(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Start the autoscaler stand-in again (on its port; it learns the revisions' demand anew)."""
    state = State(state_dir)
    spec = spec_of(state)
    env = dict(os.environ, KUBECONFIG=str(spec.kubeconfig), **spec.extra_env)
    start_autoscaler(state, spec, env)


def _node_process(state: State, name: str) -> dict[str, Any]:
    info = state.processes.get(f"node/{name}")
    if info is None:
        known = sorted(k.removeprefix("node/") for k in state.processes if k.startswith("node/"))
        raise ClusterError(f"no simulated node {name!r}; nodes: {', '.join(known) or 'none (is the cluster up?)'}")
    return info


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    state = State(state_dir)
    return {
        "server": state.data.get("server"),
        "kubeconfig": state.data.get("kubeconfig"),
        "processes": {
            name: {"pid": info["pid"], "status": info["status"] if alive(info["pid"]) else "exited"}
            for name, info in state.processes.items()
        },
    }
