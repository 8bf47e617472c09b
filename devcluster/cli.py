"""``devcluster``: a real Kubernetes control plane with simulated nodes on one machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from devcluster import binaries, controlplane, demo
from devcluster.controlplane import DEFAULT_STATE_DIR, ClusterError, ClusterSpec


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    spec = ClusterSpec(
        state_dir=_state_dir(args),
        nodes=args.nodes,
        zones=tuple(z for z in args.zones.split(",") if z),
        port_base=args.port_base,
        ip_base=args.ip_base,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="where the cluster keeps its state")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and simulated nodes")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--zones", default="zone-a,zone-b,zone-c")
    up.add_argument("--port-base", type=int, default=int(os.environ.get("DEVCLUSTER_PORT_BASE", "17000")))
    up.add_argument("--ip-base", default=os.environ.get("DEVCLUSTER_IP_BASE", "127.20"))
    up.add_argument("--node-cpu", default="4")
    up.add_argument("--node-memory", default="8Gi")
    up.add_argument(
        "--kubelet-timing",
        choices=("realistic", "instant"),
        default="realistic",
        help="how the simulated kubelets report pod status (docs/kubelet-model.md)",
    )
    up.add_argument("--relist-seconds", type=float, default=None, help="their PLEG relist period (default 1)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything the cluster started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs").set_defaults(func=cmd_status)
    for name, text in (("kill-node", "kill a node: its kubelet and pods die, heartbeats stop"),
                       ("hang-node", "hang a node: its kubelet and pods are stopped (SIGSTOP)"),
                       ("resume-node", "resume a hung node (SIGCONT)"),
                       ("revive-node", "start a killed node's kubelet again")):  # fmt: skip
        node = sub.add_parser(name, help=text)
        node.add_argument("name")
        node.set_defaults(func=cmd_node)
    sub.add_parser("restart-apiserver", help="stop and start kube-apiserver").set_defaults(func=cmd_restart_apiserver)
    sub.add_parser("binaries", help="find or build the control-plane binaries").set_defaults(func=cmd_binaries)
    sub.add_parser("demo", help="create the sample revision at zero and say how to reach it").set_defaults(
        func=cmd_demo
    )
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except (ClusterError, binaries.BinariesError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
