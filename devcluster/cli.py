"""``devcluster``: a real Kubernetes control plane with simulated nodes on one machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster import applying, binaries, controlplane, demo, network, versions
from devcluster.controlplane import DEFAULT_STATE_DIR, ClusterError, ClusterSpec
from localsched.kube.client import KubeClient


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    mode, ip_base = network.layout(args.network, args.ip_base, loopback="127.20", netns="10.244")
    spec = ClusterSpec(
        state_dir=_state_dir(args),
        nodes=args.nodes,
        zones=tuple(z for z in args.zones.split(",") if z),
        port_base=args.port_base,
        ip_base=ip_base,
        network=mode,
        node_cpu=args.node_cpu,
        node_memory=args.node_memory,
        kubelet_timing=args.kubelet_timing,
        relist_seconds=args.relist_seconds,
    )
    controlplane.up(spec)
    print(f"export KUBECONFIG={spec.kubeconfig}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    leftover = controlplane.down(_state_dir(args))
    if leftover:
        print(f"processes still alive: {leftover}", file=sys.stderr)
        return 1
    print("devcluster is down; no process left behind")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(controlplane.status(_state_dir(args)), indent=2))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    action = {
        "kill-node": controlplane.kill_node,
        "hang-node": controlplane.hang_node,
        "resume-node": controlplane.resume_node,
        "revive-node": controlplane.revive_node,
        "partition-node": controlplane.partition_node,
        "heal-node": controlplane.heal_node,
    }[args.command]
    action(args.name, _state_dir(args))
    print(f"{args.command}: {args.name}")
    return 0


def cmd_restart_apiserver(args: argparse.Namespace) -> int:
    controlplane.restart_apiserver(_state_dir(args))
    return 0


def cmd_binaries(args: argparse.Namespace) -> int:
    return binaries.main()


def cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(demo.run(_state_dir(args)))


def cmd_install(args: argparse.Namespace) -> int:
    async def run() -> list[str]:
        async with await KubeClient.from_environment(str(_kubeconfig(args))) as client:
            return await (applying.uninstall(client) if args.command == "uninstall" else applying.install(client))

    done = asyncio.run(run())
    print(f"{'deleted' if args.command == 'uninstall' else 'applied'} {len(done)} objects: {', '.join(done)}")
    return 0


def _kubeconfig(args: argparse.Namespace) -> Path:
    path = _state_dir(args) / "admin.kubeconfig"
    if not path.exists():
        raise ClusterError(f"no cluster in {_state_dir(args)}: run `devcluster up` first")
    return path


def _command(
    sub: Any, name: str, summary: str, description: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in ``devcluster --help``, ``description`` in its own ``--help``."""
    command: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description)
    command.set_defaults(func=func)
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devcluster",
        description="A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler) with simulated nodes, Knative stand-ins and localsched installed, on one machine.",
        epilog="Start with `devcluster up`, then `devcluster demo`; `devcluster down` stops everything. "
        "`devcluster COMMAND --help` says more about each command.",
    )
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), metavar="DIR",
                        help="directory of the cluster's state: certificates, kubeconfigs, etcd's data, logs, and "
                        "state.json listing the processes it started (env LOCALSCHED_STATE_DIR; "
                        "default %(default)s)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(sub, "up", "start the cluster and install localsched (nothing to do if it runs)",
                  "Start etcd, the Kubernetes control plane, the Knative stand-ins and the simulated nodes, install "
                  "localsched from manifests/, and wait until every node is Ready. A cluster that already runs is "
                  "left as it is: the options below apply to a new one. Prints the KUBECONFIG to export.",
                  cmd_up)  # fmt: skip
    up.add_argument("--nodes", type=int, default=3, metavar="N",
                    help="number of simulated nodes, node-1 to node-N (default %(default)s)")  # fmt: skip
    up.add_argument("--zones", default="zone-a,zone-b,zone-c",
                    help="comma-separated zones, given to the nodes in turn as their topology.kubernetes.io/zone "
                    "label (default %(default)s)")  # fmt: skip
    up.add_argument("--port-base", type=int, default=int(os.environ.get("DEVCLUSTER_PORT_BASE", "17000")),
                    metavar="PORT",
                    help="where the cluster's ports start: etcd is at +1 (its peer port +2), kube-apiserver at +3, "
                    "the autoscaler stand-in at +4 (env DEVCLUSTER_PORT_BASE; default %(default)s)")  # fmt: skip
    up.add_argument("--network", choices=("auto", *network.MODES),
                    default=os.environ.get("DEVCLUSTER_NETWORK", "auto"),
                    help="the pod network: netns, a network namespace per node on a bridge, with pod addresses any "
                    "Kubernetes version accepts (root); loopback, addresses in 127.0.0.0/8 (any user, Kubernetes "
                    "1.20 only); auto, netns where it can be built (env DEVCLUSTER_NETWORK; default %(default)s; "
                    "docs/devcluster.md)")  # fmt: skip
    up.add_argument("--ip-base", default=os.environ.get("DEVCLUSTER_IP_BASE"), metavar="A.B",
                    help="first two octets of the cluster's addresses: node i is A.B.i.1, its pods A.B.i.2 to "
                    "A.B.i.254; with netns the host side is A.B.0.1 (env DEVCLUSTER_IP_BASE; default 127.20 for "
                    "loopback, 10.244 for netns)")  # fmt: skip
    up.add_argument("--node-cpu", default="4", metavar="QUANTITY",
                    help="CPU each node offers (capacity and allocatable, a Kubernetes quantity); a pod that does "
                    "not fit fails with OutOfcpu, as on a kubelet (default %(default)s)")  # fmt: skip
    up.add_argument("--node-memory", default="8Gi", metavar="QUANTITY",
                    help="memory each node offers, a Kubernetes quantity (default %(default)s)")  # fmt: skip
    up.add_argument("--kubelet-timing", choices=("realistic", "instant"), default="realistic",
                    help="how the simulated kubelets report pod status: realistic, with the 1.20-era kubelet's "
                    "relist, API client limit and status syncs; instant, at once, for tests whose outcome does not "
                    "depend on timing (default %(default)s; docs/kubelet-model.md)")  # fmt: skip
    up.add_argument("--relist-seconds", type=float, default=None, metavar="SECONDS",
                    help="the simulated kubelets' PLEG relist period, in either timing; 0 reports container starts "
                    "and exits at once, roughly as Evented PLEG would (default: 1 for realistic, 0 for "
                    "instant)")  # fmt: skip

    _command(sub, "down", "stop everything the cluster started",
             "Stop every process the cluster started. Its state and etcd's data stay for the next `up`. Exits 1 "
             "if a process is still alive afterwards.", cmd_down)  # fmt: skip
    _command(sub, "status", "print what runs, as JSON",
             "Print, as JSON, the API server's address, the kubeconfig, and each process the cluster started with "
             "its pid and whether it still runs.", cmd_status)  # fmt: skip
    for name, summary, description in (
        ("kill-node", "kill a node: its kubelet and pods die, heartbeats stop",
         "Kill a node: its simulated kubelet and every pod on it are SIGKILLed and its heartbeats stop, so it "
         "turns NotReady after the controller-manager's grace (8 s). `revive-node` starts it again."),
        ("hang-node", "hang a node: its kubelet and pods are stopped (SIGSTOP)",
         "Hang a node: its simulated kubelet and pods are SIGSTOPped (alive but silent, no heartbeats) and, when "
         "run as root with iptables, packets to its addresses are dropped, so connecting to its pods times out "
         "instead of being refused. `resume-node` undoes it."),
        ("resume-node", "resume a hung node (SIGCONT)",
         "Resume a hung node: its kubelet and pods continue (SIGCONT) and its packets flow again."),
        ("revive-node", "start a killed node's kubelet again",
         "Start a killed node's simulated kubelet again; its pods are started anew, as after a reboot."),
        ("partition-node", "cut a node off from the API server only (netns network)",
         "Drop, in the node's namespace, its packets to the API server: its heartbeats and its pods' API calls "
         "time out while its pods keep serving. `heal-node` undoes it."),
        ("heal-node", "reconnect a partitioned node to the API server",
         "Let a partitioned node reach the API server again."),
    ):  # fmt: skip
        node = _command(sub, name, summary, description, cmd_node)
        node.add_argument("name", help="the node, e.g. node-2 (`kubectl get nodes` lists them)")
    _command(sub, "restart-apiserver", "stop and start kube-apiserver",
             "Stop and start kube-apiserver, leaving etcd and everything else running (for clients that must "
             "survive an API server restart).", cmd_restart_apiserver)  # fmt: skip
    _command(sub, "binaries", "find or build the control-plane binaries",
             "Find kube-apiserver, kube-controller-manager and kube-scheduler in $KUBEBUILDER_ASSETS, else in the "
             "cache ($LOCALSCHED_CACHE_DIR, default ~/.cache/localsched), else build v1.20.2 once from Debian's "
             "source package and cache it (minutes); etcd comes from Debian's etcd-server package. `up` does "
             "this itself.", cmd_binaries)  # fmt: skip
    _command(sub, "demo", "create the sample revision at zero and say how to reach it",
             "On the running cluster, create the sample revision demo/hello-00001 at zero replicas, wait until "
             "every node's activator is Ready, and print how to send it a request and watch it scale.",
             cmd_demo)  # fmt: skip
    _command(sub, "install", "apply manifests/ again, as `kubectl apply -k manifests/` would",
             "Apply the kustomize base in manifests/ to the running cluster (create, else merge-patch), the way "
             "`kubectl apply -k manifests/` does on Kubernetes 1.22+. The devcluster's 1.20 API server takes two "
             "objects adapted (devcluster/applying.py for_server). `up` does this itself; docs/install.md.",
             cmd_install)  # fmt: skip
    _command(sub, "uninstall", "delete what manifests/ installs, as `kubectl delete -k manifests/` would",
             "Delete every object of the kustomize base from the running cluster, the last first (the CRD, and "
             "with it every ActivationEndpoints, goes last). docs/install.md, Uninstall.", cmd_install)  # fmt: skip
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except (ClusterError, binaries.BinariesError, network.NetworkError, versions.VersionError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
