"""The devcluster's pod network: loopback addresses, or a network namespace per node on a bridge.

``loopback`` (any user, Kubernetes 1.20 only): node ``i`` and its pods get addresses ``A.B.i.x`` in 127.0.0.0/8,
all in this machine's one network stack. From 1.21 on the API server rejects such addresses in EndpointSlices
(as it does in Endpoints on every version), and a dead node's pods refuse connections at once.

``netns`` (root): what a CNI bridge plugin builds on a real cluster, on one machine. A bridge ``<tag>`` holds the
host address ``A.B.0.1/16``, where the API server and the autoscaler stand-in listen; node ``i`` is the network
namespace ``<tag>-node-i``, joined to the bridge by a veth pair (``<tag>n<i>`` on the host, ``eth0`` inside) with
the node address ``A.B.i.1/16``, and its pod range ``A.B.i.0/24`` is routed locally in the namespace (a ``local``
route, so every pod process binds its own pod IP without an address being added per pod, and the namespace
answers ARP for the whole range). Pods and nodes reach each other over the bridge's layer 2; nothing is forwarded
or masqueraded, so this machine's own routing and firewall are not touched. An ``unreachable`` route for
``A.B.0.0/16`` with a high metric sits under the bridge's connected route: should the bridge go, traffic to pod
addresses fails here instead of leaving the machine by its default route.

Faults become network faults: a killed node's link goes down (its pods' peers time out, as with a dead machine),
a hung node drops every packet in its own namespace, a partitioned node drops only its traffic to the API server.

Everything made is recorded in ``state.json`` (``network``) before it is made, and :func:`teardown` removes it
all, also after a crash; :func:`leftovers` lists what is left of a tag (a test checks it is nothing).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from typing import Any

MODES = ("loopback", "netns")
IPTABLES_TAG = "localsched-devcluster"
UNREACHABLE_METRIC = 4000


class NetworkError(RuntimeError):
    pass


def netns_possible() -> str | None:
    """Why a netns network cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (Debian: apt-get install iproute2 iptables)"
    return _probe()


@cache
def _probe() -> str | None:
    """Root is not always enough (a container without CAP_NET_ADMIN or CAP_SYS_ADMIN): make a namespace, run a
    process in it, and remove it, once."""
    name = f"lsdc-probe-{os.getpid()}"
    failed = _run("ip", "netns", "add", name, check=False)
    if failed.returncode == 0:
        failed = _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up", check=False)
        _run("ip", "netns", "del", name, check=False)
    return None if failed.returncode == 0 else f"cannot make or enter a network namespace: {failed.stderr.strip()}"


def choose_mode(requested: str) -> str:
    """``auto`` is ``netns`` where it can be built, else ``loopback``."""
    if requested == "auto":
        return "netns" if netns_possible() is None else "loopback"
    if requested not in MODES:
        raise NetworkError(f"unknown network {requested!r}; expected auto, {' or '.join(MODES)}")
    if requested == "netns" and (why := netns_possible()):
        raise NetworkError(f"cannot build the netns network: {why}; use --network loopback (Kubernetes 1.20 only)")
    return requested


def layout(requested: str, ip_base: str | None, *, loopback: str, netns: str) -> tuple[str, str]:
    """(mode, ip_base) for a cluster: ``requested`` resolved (see :func:`choose_mode`), and ``ip_base`` or the
    default range of that mode (each cluster on this machine has its own: the demo, the tests, the benchmarks)."""
    mode = choose_mode(requested)
    return mode, ip_base or (loopback if mode == "loopback" else netns)


@dataclass(frozen=True)
class Network:
    mode: str
    ip_base: str  # "A.B": node i is A.B.i.1, its pods A.B.i.2 .. A.B.i.254
    tag: str  # the prefix of every name this network makes (bridge, links, namespaces)

    def __post_init__(self) -> None:
        first = ipaddress.ip_address(f"{self.ip_base}.0.1")
        if (self.mode == "loopback") != first.is_loopback:
            wanted = "in 127.0.0.0/8" if self.mode == "loopback" else "outside 127.0.0.0/8 (a private range)"
            raise NetworkError(f"the {self.mode} network wants addresses {wanted}; got {self.ip_base}.0.0/16")
        if self.mode == "netns" and not first.is_private:
            raise NetworkError(f"the netns network wants a private range (e.g. 10.244); got {self.ip_base}.0.0/16")
        if len(f"{self.tag}n255") > 15:
            raise NetworkError(f"network tag {self.tag!r} too long for Linux link names (15 characters)")

    @property
    def host_ip(self) -> str:
        """Where the API server and the autoscaler stand-in listen, as nodes and pods reach them."""
        return "127.0.0.1" if self.mode == "loopback" else f"{self.ip_base}.0.1"

    @property
    def cidr(self) -> str:
        return f"{self.ip_base}.0.0/16"

    def namespace(self, index: int) -> str:
        return f"{self.tag}-node-{index}"

    def host_link(self, index: int) -> str:
        return f"{self.tag}n{index}"

    def node_command(self, index: int) -> list[str]:
        """What runs in front of a node's processes: entering its namespace (nothing on loopback)."""
        return [] if self.mode == "loopback" else ["ip", "netns", "exec", self.namespace(index)]

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "ip_base": self.ip_base, "tag": self.tag}

    @classmethod
    def recorded(cls, data: dict[str, Any] | None) -> Network | None:
        return cls(data["mode"], data["ip_base"], data["tag"]) if data else None


def enter_for(ip: str) -> list[str]:
    """What runs a process that binds ``ip`` where that address lives: in the namespace of the node whose pod
    range holds it (netns network), or as it is (a loopback address, or a cluster this machine does not host)."""
    if ipaddress.ip_address(ip).is_loopback or netns_possible() is not None:
        return []
    node_range = ip.rsplit(".", 1)[0] + ".0/24"
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split(" ")[0]
        if not (name.startswith("lsdc") and "-node-" in name):
            continue
        local = _run("ip", "-n", name, "route", "show", "table", "local", node_range, check=False).stdout
        if node_range in local:
            return ["ip", "netns", "exec", name]
    return []


def node_index(ip_prefix: str) -> int:
    """Node ``i``'s index from its prefix ``A.B.i``."""
    return int(ip_prefix.rsplit(".", 1)[1])


# -- building and tearing down ------------------------------------------------------------------------------------


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def _routes_over(cidr: str) -> list[str]:
    """Routes of this machine that overlap ``cidr`` (the devcluster must not take a range that is in use)."""
    network = ipaddress.ip_network(cidr)
    found = []
    for route in json.loads(_run("ip", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or ":" in dst:
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.overlaps(network) and not other.is_loopback:
            found.append(f"{dst} dev {route.get('dev', '?')}")
    return found


def build(network: Network, indexes: list[int]) -> None:
    """Make the bridge and one namespace per node (``indexes``: the nodes' ``i``)."""
    if network.mode == "loopback":
        return
    # What a cluster on the same ports left when it died with its state (a test session's temporary state dir,
    # say): the tag is this cluster's, and no cluster on the same ports can be running beside this one.
    teardown(network)
    in_use = _routes_over(network.cidr)
    if in_use:
        raise NetworkError(f"{network.cidr} is already routed on this machine ({'; '.join(in_use)}): choose another "
                           "--ip-base, or run `devcluster down` if an earlier devcluster left it")  # fmt: skip
    bridge = network.tag
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{network.host_ip}/16", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    _run("ip", "route", "add", "unreachable", network.cidr, "metric", str(UNREACHABLE_METRIC))
    for index in indexes:
        add_node(network, index)


def add_node(network: Network, index: int) -> None:
    ns, link = network.namespace(index), network.host_link(index)
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", link, "master", network.tag, "up")
    inside = ("ip", "-n", ns)
    _run(*inside, "link", "set", "lo", "up")
    _run(*inside, "addr", "add", f"{network.ip_base}.{index}.1/16", "dev", "eth0")
    _run(*inside, "link", "set", "eth0", "up")
    _run(*inside, "route", "add", "local", f"{network.ip_base}.{index}.0/24", "dev", "lo")


def teardown(network: Network) -> None:
    """Remove everything ``network`` made (namespaces, links, the bridge, routes, rules); missing parts are fine."""
    _host_drop_rules(network, remove_all=True)
    if network.mode == "loopback":
        return
    for ns in _namespaces(network.tag):
        _run("ip", "netns", "del", ns, check=False)  # its veth end, addresses, routes and rules go with it
    for link in _links(network.tag):
        _run("ip", "link", "del", link, check=False)
    while _run("ip", "route", "del", "unreachable", network.cidr, "metric", str(UNREACHABLE_METRIC),
               check=False).returncode == 0:  # fmt: skip
        pass


def leftovers(network: Network) -> list[str]:
    """Whatever of ``network`` still exists: namespaces, links, routes, rules in this machine's firewall."""
    rules = [f"iptables rule {rule}" for rule in _host_drop_rules(network)]
    if network.mode == "loopback":
        return rules
    found = [f"netns {ns}" for ns in _namespaces(network.tag)] + [f"link {link}" for link in _links(network.tag)]
    routes = _run("ip", "route", "show", network.cidr, check=False).stdout.strip()
    return rules + found + [f"route {line}" for line in routes.splitlines() if line]


def _namespaces(tag: str) -> list[str]:
    names = [line.split()[0] for line in _run("ip", "netns", "list", check=False).stdout.splitlines() if line]
    return [name for name in names if name.startswith(f"{tag}-node-")]


def _links(tag: str) -> list[str]:
    links = json.loads(_run("ip", "-j", "link", "show", check=False).stdout or "[]")
    return [link["ifname"] for link in links if link["ifname"] == tag or link["ifname"].startswith(f"{tag}n")]


# -- faults ---------------------------------------------------------------------------------------------------------


def cut_link(network: Network, index: int, down: bool) -> None:
    """A dead node's network: its link down, so its peers' packets go nowhere (they time out); up again."""
    if network.mode == "netns":
        _run("ip", "link", "set", network.host_link(index), "down" if down else "up")


def drop_all(network: Network, index: int, drop: bool) -> bool:
    """A hung node: every packet in or out of its namespace dropped (False where that cannot be done)."""
    if network.mode == "loopback":
        return _host_drop(network, f"{network.ip_base}.{index}.0/24", drop)
    rules = (["INPUT", "-j", "DROP"], ["OUTPUT", "-o", "eth0", "-j", "DROP"])
    for rule in rules:
        _ns_rule(network, index, rule, add=drop)
    return True


def partition(network: Network, index: int, api_port: int, cut: bool) -> None:
    """A node cut off from the API server only (its kubelet and pods' API calls time out; pods still serve)."""
    if network.mode == "loopback":
        raise NetworkError("partition-node needs the netns network (the loopback network shares one stack)")
    rule = ["OUTPUT", "-d", network.host_ip, "-p", "tcp", "--dport", str(api_port), "-j", "DROP"]
    _ns_rule(network, index, rule, add=cut)


def _ns_rule(network: Network, index: int, rule: list[str], add: bool) -> None:
    iptables = ("ip", "netns", "exec", network.namespace(index), "iptables")
    if add:
        _run(*iptables, "-I", *rule)
        return
    while _run(*iptables, "-D", *rule, check=False).returncode == 0:
        pass


def _host_drop(network: Network, cidr: str, add: bool) -> bool:
    """Loopback network: packets to a node's range dropped in this machine's OUTPUT chain (root only)."""
    if netns_possible() is not None:
        return False
    rule = ["OUTPUT", "-d", cidr, "-m", "comment", "--comment", f"{IPTABLES_TAG}:{network.tag}", "-j", "DROP"]
    if add:
        return _run("iptables", "-I", *rule, check=False).returncode == 0
    while _run("iptables", "-D", *rule, check=False).returncode == 0:
        pass
    return True


def _host_drop_rules(network: Network, remove_all: bool = False) -> list[str]:
    """This machine's OUTPUT rules tagged with ``network``'s tag (removed when ``remove_all``)."""
    if netns_possible() is not None:
        return []
    listed = _run("iptables", "-S", "OUTPUT", check=False).stdout.splitlines()
    rules = [line for line in listed if f"{IPTABLES_TAG}:{network.tag} " in f"{line} "]
    if remove_all:
        for line in rules:
            _run("iptables", *line.replace("-A", "-D", 1).split(), check=False)
    return rules
