"""One devcluster per test session; each test gets its own namespace.

Set ``LOCALSCHED_TEST_KUBECONFIG`` to run the suite against another cluster (a kind cluster, say) instead; the
tests that need devcluster's node controls (kill, hang) are skipped there.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from devcluster import controlplane, network
from devcluster.controlplane import ClusterSpec
from devcluster.daemons import default_account_ready
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from tests.integration.kit import Cluster

TEST_PORT_BASE = int(os.environ.get("LOCALSCHED_TEST_PORT_BASE", "27000"))
# The devcluster's network: netns where it can be built (root), else loopback addresses (devcluster/network.py).
# On an external cluster the tests' own activators run on this machine's loopback addresses, as they always have.
TEST_NETWORK, TEST_IP_BASE = (
    ("loopback", os.environ.get("LOCALSCHED_TEST_IP_BASE", "127.30"))
    if os.environ.get("LOCALSCHED_TEST_KUBECONFIG")
    else network.layout(
        os.environ.get("LOCALSCHED_TEST_NETWORK", "auto"),
        os.environ.get("LOCALSCHED_TEST_IP_BASE"),
        loopback="127.30",
        netns="10.246",
    )
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get("LOCALSCHED_TEST_KUBECONFIG")
    if external:
        yield Cluster(kubeconfig=external, state_dir=None)
        return
    state_dir = Path(tmp_path_factory.mktemp("devcluster"))
    spec = ClusterSpec(
        state_dir=state_dir, nodes=3, port_base=TEST_PORT_BASE, ip_base=TEST_IP_BASE, network=TEST_NETWORK
    )
    # One test devcluster on this machine at a time: concurrent sessions wait here for the previous one.
    with open("/tmp/localsched-test-devcluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            controlplane.up(spec)
            yield Cluster(kubeconfig=str(spec.kubeconfig), state_dir=state_dir)
        finally:
            leftover = controlplane.down(state_dir, quiet=True)
            assert not leftover, f"devcluster down left processes behind: {leftover}"
            left = network.leftovers(spec.net)
            assert not left, f"devcluster down left network parts behind: {left}"


@pytest.fixture
def devcluster(cluster: Cluster) -> Iterator[Path]:
    """The devcluster's state dir, for tests that kill or hang nodes; skipped on an external cluster.

    A node the test left killed, hung or partitioned (it failed before its own cleanup) is brought back afterwards,
    so one failure does not take the rest of the session down with it."""
    if cluster.state_dir is None:
        pytest.skip("needs devcluster's node controls")
    yield cluster.state_dir
    for key, info in controlplane.State(cluster.state_dir).processes.items():
        node = key.removeprefix("node/")
        if key.startswith("node/") and info.get("status") == "hung":
            controlplane.resume_node(node, cluster.state_dir)
        elif key.startswith("node/") and info.get("status") == "killed":
            controlplane.revive_node(node, cluster.state_dir)
        elif key.startswith("node/") and info.get("status") == "partitioned":
            controlplane.heal_node(node, cluster.state_dir)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.from_environment(cluster.kubeconfig, user_agent="localsched-tests") as client:
        yield client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for talking to pods and activators at their pod addresses."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5), trust_env=False) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(kube: KubeClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace whose default service account has its token (pods can be admitted)."""
    name = f"t-{request.node.name[5:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    await kube.create(r.NAMESPACES, {"metadata": {"name": name, "labels": {"localsched.dev/test": "true"}}})
    await default_account_ready(kube, name)
    yield name
    await kube.delete(r.NAMESPACES, name)
