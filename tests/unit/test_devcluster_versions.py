"""Version-dependent choices of the devcluster (devcluster/versions.py) and its network's layout rules."""

from __future__ import annotations

import pytest

from devcluster import versions
from devcluster.network import Network, NetworkError


def test_the_version_is_read_from_a_binarys_output_and_from_the_servers() -> None:
    assert versions.from_server({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}) == (1, 30)
    assert versions.parse("Kubernetes v1.20.2\n") == (1, 20)
    assert versions.parse("Kubernetes v1.36.0-alpha.1") == (1, 36)
    with pytest.raises(versions.VersionError, match="no Kubernetes version"):
        versions.parse("etcd Version: 3.4.23")


@pytest.mark.parametrize(
    ("version", "scheduler_port", "manager_port", "eviction"),
    [((1, 20), True, True, True), ((1, 23), False, True, True), ((1, 24), False, False, True),
     ((1, 26), False, False, True), ((1, 27), False, False, False), ((1, 36), False, False, False)],
)  # fmt: skip
def test_removed_flags_are_passed_only_to_the_releases_that_still_have_them(
    version: tuple[int, int], scheduler_port: bool, manager_port: bool, eviction: bool
) -> None:
    manager = versions.controller_manager_flags(version, loopback_pods=False)
    assert ("--port=0" in versions.scheduler_flags(version)) is scheduler_port
    assert ("--port=0" in manager) is manager_port
    assert any(f.startswith("--pod-eviction-timeout") for f in manager) is eviction


def test_loopback_pods_turn_off_what_the_api_server_would_reject() -> None:
    loopback = versions.controller_manager_flags((1, 20), loopback_pods=True)
    netns = versions.controller_manager_flags((1, 20), loopback_pods=False)
    assert any("-endpoint," in f for f in loopback)
    assert not any("-endpoint" in f for f in netns)
    assert versions.apiserver_flags((1, 20), loopback_pods=True) == ["--endpoint-reconciler-type", "none"]
    assert versions.apiserver_flags((1, 30), loopback_pods=False) == []


def test_the_loopback_network_is_refused_where_the_api_server_rejects_its_addresses() -> None:
    versions.check_network((1, 20), "loopback")
    versions.check_network((1, 30), "netns")
    with pytest.raises(versions.VersionError, match="--network netns"):
        versions.check_network((1, 21), "loopback")


def test_each_network_wants_its_own_kind_of_range() -> None:
    assert Network("netns", "10.244", "lsdc17000").host_ip == "10.244.0.1"
    assert Network("loopback", "127.20", "lsdc17000").host_ip == "127.0.0.1"
    assert Network("netns", "10.244", "lsdc17000").node_command(2) == ["ip", "netns", "exec", "lsdc17000-node-2"]
    assert Network("loopback", "127.20", "lsdc17000").node_command(2) == []
    with pytest.raises(NetworkError, match="outside 127"):
        Network("netns", "127.20", "lsdc17000")
    with pytest.raises(NetworkError, match="in 127"):
        Network("loopback", "10.244", "lsdc17000")
    with pytest.raises(NetworkError, match="private range"):
        Network("netns", "8.8", "lsdc17000")
    with pytest.raises(NetworkError, match="15 characters"):
        Network("netns", "10.244", "localsched-devcluster")
