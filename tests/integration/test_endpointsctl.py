"""endpointsctl against the devcluster: the in-cluster Deployment (its manifests and RBAC) and controller processes
of the tests' own, with the real activator DaemonSet as the activators."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devcluster.daemons import container_pid
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Conflict, Invalid
from localsched.kube.slices import endpoints_of
from localsched.kube.watching import WatchCache
from tests.integration.controllers import (
    LEASE,
    SYSTEM_NAMESPACE,
    InClusterLeader,
    in_cluster_leader,
    lease_holder,
    running_controller,
    without_in_cluster_controller,
)
from tests.integration.kit import (
    Cluster,
    condition,
    is_ready,
    metric_value,
    poll_until,
    wait_for,
    watching,
)

ACTIVATOR_SELECTOR = "app.kubernetes.io/name=activator"
OURS = "app.kubernetes.io/managed-by=endpointsctl"
TBC_ZERO = {"autoscaling.knative.dev/target-burst-capacity": "0"}  # N = 2 (Knative's minimum)
THIRDPARTY = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "subsetting-plugin"  # its package
LEASE_SECONDS, RETRY_SECONDS = 4.0, 0.5  # the tests' own controllers: quick handover


# -- helpers ----------------------------------------------------------------------------------------------------------


def chosen(ae: Obj | None) -> list[str]:
    return [a["name"] for a in ((ae or {}).get("status") or {}).get("activators") or []]


def settled(ae: Obj | None) -> bool:
    """Ready and computed for its current spec."""
    if ae is None or condition(ae, "Ready") != "True":
        return False
    return bool(ae["status"].get("observedGeneration") == ae["metadata"].get("generation"))


def addresses(slice_obj: Obj | None) -> list[str]:
    return sorted(e.address for e in endpoints_of(slice_obj or {}))


def rv(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


async def activators_ready(kube: KubeClient, timeout: float = 120) -> dict[str, Obj]:
    """The activator DaemonSet's pods, once there is one Ready on every node."""
    async with (
        watching(kube, r.NODES) as nodes,
        watching(kube, r.PODS, SYSTEM_NAMESPACE, label_selector=ACTIVATOR_SELECTOR) as pods,
    ):

        def all_ready(cache: WatchCache) -> dict[str, Obj] | None:
            ready = {
                p["metadata"]["name"]: p for p in cache if is_ready(p) and not p["metadata"].get("deletionTimestamp")
            }
            on = {p["spec"]["nodeName"] for p in ready.values()}
            return ready if on == {n["metadata"]["name"] for n in nodes} else None

        return await wait_for(pods, all_ready, timeout)


async def create_revisions(kube: KubeClient, namespace: str, names: list[str], **kwargs: Any) -> None:
    for name in names:
        await kube.create(r.REVISIONS, sample_revision(name, namespace, **kwargs), namespace)


async def settle(aes: WatchCache, namespace: str, names: list[str], timeout: float = 60) -> dict[str, Obj]:
    def all_settled(cache: WatchCache) -> dict[str, Obj] | None:
        found = {n: cache.get(n, namespace) for n in names}
        return found if all(map(settled, found.values())) else None  # type: ignore[return-value]

    return await wait_for(aes, all_settled, timeout)


async def edit_taints(kube: KubeClient, node: str, edit: Callable[[list[Obj]], list[Obj]]) -> None:
    """Read-modify-write of a node's taints (a list without a merge key), retried when a heartbeat intervenes."""
    for _ in range(10):
        current = await kube.get(r.NODES, node)
        current["spec"]["taints"] = edit(current["spec"].get("taints") or [])
        try:
            await kube.replace(r.NODES, current)
            return
        except Conflict:
            continue
    raise AssertionError(f"could not update the taints of {node}: 10 conflicts in a row")


async def quiet(kube: KubeClient, timeout: float = 120) -> None:
    """No namespace of an earlier test still terminating: the set of revisions is stable while a test counts."""
    async with watching(kube, r.NAMESPACES) as namespaces:
        await wait_for(namespaces, lambda c: all((n.get("status") or {}).get("phase") != "Terminating" for n in c),
                       timeout)  # fmt: skip


async def set_activators(kube: KubeClient, aes: WatchCache, name: str, namespace: str, n: int) -> Obj:
    """Override N in the spec and wait until the status is computed for that spec."""
    patched = await kube.patch(r.ACTIVATION_ENDPOINTS, name, {"spec": {"activators": n}}, namespace)
    generation = patched["metadata"]["generation"]

    def computed(cache: WatchCache) -> Obj | None:
        ae = cache.get(name, namespace)
        return ae if ae is not None and (ae.get("status") or {}).get("observedGeneration") == generation else None

    return await wait_for(aes, computed)


@pytest_asyncio.fixture(loop_scope="session")
async def activators(kube: KubeClient) -> dict[str, Obj]:
    return await activators_ready(kube)


@pytest_asyncio.fixture(loop_scope="session")
async def leader(kube: KubeClient, activators: dict[str, Obj]) -> InClusterLeader:
    return await in_cluster_leader(kube)


@pytest_asyncio.fixture(loop_scope="session")
async def slices(kube: KubeClient) -> AsyncIterator[WatchCache]:
    resource = await kube.endpointslice_resource()
    async with watching(
        kube, resource, label_selector="endpointslice.kubernetes.io/managed-by=endpointsctl.localsched.dev"
    ) as cache:
        yield cache


# -- the in-cluster controller -----------------------------------------------------------------------------------------


async def test_a_revision_gets_activation_endpoints_a_slice_and_a_service_with_n_activators(
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    leader: InClusterLeader,
    slices: WatchCache,
    http: httpx.AsyncClient,
) -> None:
    await create_revisions(kube, namespace, ["wide-00001"])  # default burst capacity 211: N = ceil(211/100) = 3
    await create_revisions(kube, namespace, ["narrow-00001"], annotations=TBC_ZERO)  # N = 2
    async with (
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
        watching(kube, r.SERVICES, namespace, label_selector=OURS) as services,
        watching(kube, r.ENDPOINTS, namespace, label_selector=OURS) as endpoints,
    ):
        found = await settle(aes, namespace, ["wide-00001", "narrow-00001"])
        wide, narrow = found["wide-00001"], found["narrow-00001"]
        await wait_for(slices, lambda c: c.get("narrow-00001-activationendpoints", namespace))
        await wait_for(services, lambda c: c.get("narrow-00001-activationendpoints", namespace))
        revision = await kube.get(r.REVISIONS, "wide-00001", namespace)

        assert [o["uid"] for o in wide["metadata"]["ownerReferences"]] == [revision["metadata"]["uid"]]
        assert (wide["status"]["desiredActivators"], wide["status"]["actualActivators"]) == (3, 3)
        assert (narrow["status"]["desiredActivators"], narrow["status"]["actualActivators"]) == (2, 2)
        assert sorted(chosen(wide)) == sorted(activators)
        by_name = {a["name"]: a for a in narrow["status"]["activators"]}
        for name, published in by_name.items():
            pod = activators[name]
            assert (published["ip"], published["node"], published["ready"]) == (
                pod["status"]["podIP"], pod["spec"]["nodeName"], True)  # fmt: skip
        assert len({a["zone"] for a in by_name.values()}) == 2  # spread over zones
        assert condition(narrow, "NoHighAvailability") == "False"

        slice_obj = slices.get("narrow-00001-activationendpoints", namespace)
        assert slice_obj is not None
        assert addresses(slice_obj) == sorted(a["ip"] for a in by_name.values())
        assert slice_obj["ports"] == [{"name": "http", "port": 8012, "protocol": "TCP"}]
        assert slice_obj["metadata"]["labels"]["kubernetes.io/service-name"] == "narrow-00001-activationendpoints"
        assert [o["uid"] for o in slice_obj["metadata"]["ownerReferences"]] == [narrow["metadata"]["uid"]]
        service = services.get("narrow-00001-activationendpoints", namespace)
        assert service is not None
        assert "selector" not in service["spec"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", 80, 8012)]

        # Endpoints where the server accepts the addresses; a 1.20 server refuses loopback ones (the devcluster's).
        if all(ipaddress.ip_address(a["ip"]).is_loopback for a in by_name.values()):
            rejected = next(c for c in narrow["status"]["conditions"] if c["type"] == "EndpointsPublished")
            assert (rejected["status"], rejected["reason"]) == ("False", "AddressesRejected")
            assert "loopback" in rejected["message"]
            assert endpoints.get("narrow-00001-activationendpoints", namespace) is None
        else:
            published = await wait_for(endpoints, lambda c: c.get("narrow-00001-activationendpoints", namespace))
            assert sorted(a["ip"] for a in published["subsets"][0]["addresses"]) == addresses(slice_obj)
    assert await leader.metric(http, "endpointsctl_writes_total", kind="ActivationEndpoints", operation="create") >= 2


async def test_deleting_the_revision_garbage_collects_everything_published_for_it(
    kube: KubeClient, namespace: str, activators: dict[str, Obj], leader: InClusterLeader, slices: WatchCache
) -> None:
    await create_revisions(kube, namespace, ["gone-00001"], annotations=TBC_ZERO)
    name = "gone-00001-activationendpoints"
    async with (
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
        watching(kube, r.SERVICES, namespace, label_selector=OURS) as services,
    ):
        await settle(aes, namespace, ["gone-00001"])
        await wait_for(slices, lambda c: c.get(name, namespace))
        await wait_for(services, lambda c: c.get(name, namespace))
        await kube.delete(r.REVISIONS, "gone-00001", namespace)
        # The garbage collector: Revision -> ActivationEndpoints -> EndpointSlice and Service.
        await wait_for(aes, lambda c: c.get("gone-00001", namespace) is None, 120)
        await wait_for(slices, lambda c: c.get(name, namespace) is None, 120)
        await wait_for(services, lambda c: c.get(name, namespace) is None, 120)


async def test_the_crd_refuses_n_below_one_and_n_one_is_reported_as_no_high_availability(
    kube: KubeClient, namespace: str, activators: dict[str, Obj], leader: InClusterLeader
) -> None:
    await create_revisions(kube, namespace, ["single-00001"], annotations=TBC_ZERO)
    async with watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes:
        await settle(aes, namespace, ["single-00001"])
        with pytest.raises(Invalid, match=r"spec\.activators"):
            await kube.patch(r.ACTIVATION_ENDPOINTS, "single-00001", {"spec": {"activators": 0}}, namespace)

        one = await set_activators(kube, aes, "single-00001", namespace, 1)
        assert (one["status"]["desiredActivators"], one["status"]["actualActivators"]) == (1, 1)
        assert condition(one, "NoHighAvailability") == "True"

        too_many = len(activators) + 2
        capped = await set_activators(kube, aes, "single-00001", namespace, too_many)
        assert (capped["status"]["desiredActivators"], capped["status"]["actualActivators"]) == (
            too_many, len(activators))  # fmt: skip
        assert condition(capped, "NotEnoughEligibleActivators") == "True"
        assert condition(capped, "NoHighAvailability") == "False"


async def test_a_killed_activator_leaves_exactly_the_revisions_it_served_and_no_other_is_written(
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    leader: InClusterLeader,
    slices: WatchCache,
    http: httpx.AsyncClient,
    devcluster: Path,
) -> None:
    names = [f"r{i}-00001" for i in range(9)]
    await create_revisions(kube, namespace, names, annotations=TBC_ZERO)
    await quiet(kube)
    async with watching(kube, r.ACTIVATION_ENDPOINTS) as aes:  # every namespace: the load is cluster-wide
        await settle(aes, namespace, names)
        await wait_for(slices, lambda c: all(c.get(f"{n}-activationendpoints", namespace) for n in names))
        await poll_until(lambda: leader.queue_idle(http), 30, "the controller to be idle")
        serving = Counter(a for n in names for a in chosen(aes.get(n, namespace)))
        victim = serving.most_common(1)[0][0]
        victim_ip = activators[victim]["status"]["podIP"]
        affected = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in aes if victim in chosen(o)}
        unaffected = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in aes if chosen(o)} - affected
        assert {(namespace, n) for n in names} & unaffected, "some revision of the test must not use the victim"
        before = {key: (rv(aes.get(key[1], key[0])), rv(slices.get(f"{key[1]}-activationendpoints", key[0])))
                  for key in unaffected}  # fmt: skip
        slice_writes = await leader.metric(http, "endpointsctl_writes_total", kind="EndpointSlice")
        recomputed = await leader.metric(http, "endpointsctl_queued_revisions_total", cause="activator")

        os.kill(container_pid(activators[victim]), signal.SIGKILL)

        def replaced(cache: WatchCache) -> bool:
            return all(victim not in chosen(cache.get(n, ns)) for ns, n in affected)

        await wait_for(aes, replaced, 60)

        def published_without_victim(cache: WatchCache) -> bool:
            return all(victim_ip not in addresses(cache.get(f"{n}-activationendpoints", ns)) for ns, n in affected)

        await wait_for(slices, published_without_victim)
        await poll_until(lambda: leader.queue_idle(http), 30, "the controller to be idle")

        for n in names:
            if (namespace, n) in affected:
                assert len(chosen(aes.get(n, namespace))) == 2, f"{n} got a replacement"
        after = {key: (rv(aes.get(key[1], key[0])), rv(slices.get(f"{key[1]}-activationendpoints", key[0])))
                 for key in unaffected}  # fmt: skip
        written = [key for key in unaffected if after[key] != before[key]]
        assert written == [], f"unaffected revisions were written: {written}"
        # The reverse index: the loss queued exactly the revisions the victim served, not every revision.
        queued = await leader.metric(http, "endpointsctl_queued_revisions_total", cause="activator") - recomputed
        assert queued == len(affected)
        rewritten = await leader.metric(http, "endpointsctl_writes_total", kind="EndpointSlice") - slice_writes
        print(f"\nkilled {victim}: {len(affected)} revisions recomputed and rewritten ({rewritten:.0f} slice writes), "
              f"{len(unaffected)} unaffected, not recomputed, not written")  # fmt: skip
        assert rewritten >= len(affected)
    await activators_ready(kube)  # the kubelet restarts it; leave the cluster as found


async def test_a_node_tainted_against_a_revision_takes_its_activator_out_of_that_revision_only(
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    leader: InClusterLeader,
    slices: WatchCache,
    http: httpx.AsyncClient,
) -> None:
    taint = {"key": "localsched.dev/test-taint", "value": namespace, "effect": "NoSchedule"}
    tolerant = {"tolerations": [{"key": taint["key"], "operator": "Exists", "effect": "NoSchedule"}]}
    await create_revisions(kube, namespace, ["plain-00001", "wide-00001"], annotations=TBC_ZERO)
    await create_revisions(kube, namespace, ["tolerant-00001"], annotations=TBC_ZERO, pod_spec_extra=tolerant)
    await quiet(kube)
    async with watching(kube, r.ACTIVATION_ENDPOINTS) as aes:  # every namespace: the load is cluster-wide
        await settle(aes, namespace, ["plain-00001", "wide-00001", "tolerant-00001"])
        for name in ("wide-00001", "tolerant-00001"):
            await set_activators(kube, aes, name, namespace, len(activators))
        found = await settle(aes, namespace, ["plain-00001", "wide-00001", "tolerant-00001"])
        target = chosen(found["plain-00001"])[0]
        node = activators[target]["spec"]["nodeName"]
        tolerant_before = (rv(found["tolerant-00001"]), rv(slices.get("tolerant-00001-activationendpoints", namespace)))
        await poll_until(lambda: leader.queue_idle(http), 30, "the controller to be idle")
        served = sum(1 for ae in aes if target in chosen(ae))  # the only activator on that node
        recomputed = await leader.metric(http, "endpointsctl_queued_revisions_total", cause="node")

        await edit_taints(kube, node, lambda taints: [*taints, taint])
        try:

            def moved_off(cache: WatchCache) -> dict[str, Obj] | None:
                plain, wide = cache.get("plain-00001", namespace), cache.get("wide-00001", namespace)
                if plain is None or wide is None or target in chosen(plain) + chosen(wide):
                    return None
                return {"plain-00001": plain, "wide-00001": wide}

            found = await wait_for(aes, moved_off, 60)
            assert len(chosen(found["plain-00001"])) == 2  # another activator took the place
            assert len(chosen(found["wide-00001"])) == len(activators) - 1
            assert condition(found["wide-00001"], "NotEnoughEligibleActivators") == "True"
            tolerant_now = aes.get("tolerant-00001", namespace)
            assert target in chosen(tolerant_now)
            assert (rv(tolerant_now), rv(slices.get("tolerant-00001-activationendpoints", namespace))) == (
                tolerant_before), "a revision tolerating the taint was written"  # fmt: skip
            queued = await leader.metric(http, "endpointsctl_queued_revisions_total", cause="node") - recomputed
            assert queued == served  # through the reverse index: the revisions of the node's activator, no others
        finally:
            await edit_taints(kube, node, lambda taints: [t for t in taints if t["key"] != taint["key"]])
        await wait_for(aes, lambda c: len(chosen(c.get("wide-00001", namespace))) == len(activators), 60)


# -- controllers of the tests' own ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_replicas(
    cluster: Cluster, kube: KubeClient, http: httpx.AsyncClient, tmp_path: Path, namespace: str
) -> AsyncIterator[tuple[WatchCache, WatchCache, Callable[[WatchCache], Any], Any, Any]]:
    """Two controller replicas (the in-cluster one scaled away); yields the lease and AE caches, a function naming
    the replica holding the lease, the leader, and the standby."""
    timing = {"lease_duration_seconds": str(LEASE_SECONDS), "renew_deadline_seconds": "3",
              "retry_period_seconds": str(RETRY_SECONDS), "rebalance": "false"}  # fmt: skip
    async with without_in_cluster_controller(kube), watching(kube, r.LEASES, SYSTEM_NAMESPACE) as leases, \
            running_controller(cluster, kube, http, tmp_path, identity="replica-a", settings=timing) as a, \
            running_controller(cluster, kube, http, tmp_path, identity="replica-b", settings=timing) as b, \
            watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes:  # fmt: skip
        by_prefix = {"replica-a_": a, "replica-b_": b}

        def holder_process(cache: WatchCache) -> Any:
            holder = lease_holder(cache.get(LEASE, SYSTEM_NAMESPACE))
            return next((p for prefix, p in by_prefix.items() if holder.startswith(prefix)), None)

        leader = await wait_for(leases, holder_process, 30)
        yield leases, aes, holder_process, leader, (b if leader is a else a)


async def test_of_two_replicas_exactly_one_reconciles_and_killing_it_hands_over_within_the_lease_time(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    http: httpx.AsyncClient,
    slices: WatchCache,
    tmp_path: Path,
) -> None:
    async with two_replicas(cluster, kube, http, tmp_path, namespace) as (leases, aes, holder_process, first, standby):
        await create_revisions(kube, namespace, ["before-00001"], annotations=TBC_ZERO)
        await settle(aes, namespace, ["before-00001"])
        assert await first.metric(http, "endpointsctl_leader") == 1
        assert await standby.metric(http, "endpointsctl_leader") == 0
        assert await first.metric(http, "endpointsctl_reconciles_total") > 0
        assert await standby.metric(http, "endpointsctl_reconciles_total") == 0
        assert await standby.metric(http, "endpointsctl_writes_total") == 0
        published = (
            rv(aes.get("before-00001", namespace)),
            rv(slices.get("before-00001-activationendpoints", namespace)),
        )

        first.kill()
        killed_at = time.monotonic()
        # Handover: the standby sees the Lease unchanged for its duration, then takes it (retry period pacing).
        await wait_for(leases, lambda c: holder_process(c) is standby, LEASE_SECONDS + 2 * RETRY_SECONDS + 2)
        print(f"\nhandover {time.monotonic() - killed_at:.2f}s after the kill (lease {LEASE_SECONDS}s)")

        await create_revisions(kube, namespace, ["after-00001"], annotations=TBC_ZERO)
        await settle(aes, namespace, ["after-00001"])
        assert await standby.metric(http, "endpointsctl_leader") == 1
        assert (
            await standby.metric(http, "endpointsctl_writes_total", kind="ActivationEndpoints", operation="create") == 1
        )
        # The new leader resumed the published assignment: nothing of the first revision was written again.
        assert (rv(aes.get("before-00001", namespace)),
                rv(slices.get("before-00001-activationendpoints", namespace))) == published  # fmt: skip


async def test_a_paused_leader_that_lost_its_lease_does_not_reconcile_when_it_resumes(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    async with two_replicas(cluster, kube, http, tmp_path, namespace) as (leases, aes, holder_process, paused, standby):
        await create_revisions(kube, namespace, ["early-00001"], annotations=TBC_ZERO)
        await settle(aes, namespace, ["early-00001"])

        async def idle() -> bool:
            return await paused.metric(http, "endpointsctl_work_queue_depth") == 0

        await poll_until(idle, 30, "the leader to be idle")
        reconciles = await paused.metric(http, "endpointsctl_reconciles_total")
        writes = await paused.metric(http, "endpointsctl_writes_total")

        paused.process.send_signal(signal.SIGSTOP)  # alive, holding the lease, silent: a long GC, a frozen VM
        try:
            await wait_for(leases, lambda c: holder_process(c) is standby, LEASE_SECONDS + 2 * RETRY_SECONDS + 2)
            await create_revisions(kube, namespace, ["late-00001"], annotations=TBC_ZERO)
            await settle(aes, namespace, ["late-00001"])  # the new leader did it
        finally:
            paused.process.send_signal(signal.SIGCONT)

        async def stepped_down() -> bool:
            return await paused.metric(http, "endpointsctl_leader") == 0

        await poll_until(stepped_down, 10, "the resumed replica to step down")
        # It saw the revision events queued while it was paused, and reconciled none of them.
        assert await paused.metric(http, "endpointsctl_reconciles_total") == reconciles
        assert await paused.metric(http, "endpointsctl_writes_total") == writes
        assert holder_process(leases) is standby


async def test_a_returning_activator_is_taken_back_into_use_one_slot_at_a_time(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    http: httpx.AsyncClient,
    tmp_path: Path,
    devcluster: Path,
) -> None:
    names = [f"b{i}-00001" for i in range(9)]
    settings = {"leader_elect": "false", "rebalance_delay_seconds": "1"}
    await quiet(kube)
    async with without_in_cluster_controller(kube), running_controller(
        cluster, kube, http, tmp_path, identity="rebalancer", settings=settings
    ) as controller, watching(kube, r.ACTIVATION_ENDPOINTS) as aes:  # fmt: skip
        await create_revisions(kube, namespace, names, annotations=TBC_ZERO)
        await settle(aes, namespace, names)
        victim = Counter(a for n in names for a in chosen(aes.get(n, namespace))).most_common(1)[0][0]

        os.kill(container_pid(activators[victim]), signal.SIGKILL)
        await wait_for(aes, lambda c: all(victim not in chosen(ae) for ae in c), 60)
        without = {(ae["metadata"]["namespace"], ae["metadata"]["name"]): frozenset(chosen(ae)) for ae in aes}
        rebalances = await controller.metric(http, "endpointsctl_rebalances_total")

        await activators_ready(kube)  # the kubelet restarts it; Ready for the rebalance delay, it is rebalanced onto

        async def rebalanced() -> bool:
            text = await controller.metrics(http)
            done = metric_value(text, "endpointsctl_rebalances_total") > rebalances
            return done and metric_value(text, "endpointsctl_work_queue_depth") == 0

        await poll_until(rebalanced, 30, "a rebalance onto the returning activator")
        moved_count = await controller.metric(http, "endpointsctl_rebalanced_revisions_total")
        await wait_for(aes, lambda c: sum(victim in chosen(ae) for ae in c) == moved_count, 30)
        now = {(ae["metadata"]["namespace"], ae["metadata"]["name"]): frozenset(chosen(ae)) for ae in aes}
        moved = {key for key in without if key in now and now[key] != without[key]}
        print(f"\n{victim} back: {len(moved)} of {len(now)} revisions moved one slot onto it")
        assert moved, "the returning activator was not taken back into use"
        slots = sum(len(c) for c in now.values())
        assert len(moved) <= slots // len(activators)  # at most its fair share
        for key in moved:
            assert now[key] - without[key] == {victim}  # one slot each, onto the returning activator
            assert len(without[key] - now[key]) == 1
    await activators_ready(kube)


async def test_an_algorithm_from_a_separate_package_is_selected_by_configuration(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    activators: dict[str, Obj],
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    # Offline when the venv can build wheels itself; else pip fetches the build backend (setuptools) from its index.
    for isolation in (["--no-build-isolation", "--no-index"], []):
        install = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(site),
            str(THIRDPARTY), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await install.communicate()
        if install.returncode == 0:
            break
    assert install.returncode == 0, output.decode()
    nodes = {n["metadata"]["name"]: n for n in (await kube.list(r.NODES))["items"]}
    zone_of = {name: nodes[p["spec"]["nodeName"]]["metadata"]["labels"]["topology.kubernetes.io/zone"]
               for name, p in activators.items()}  # fmt: skip
    preferred = sorted(zone_of.values())[-1]
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PREFERRED_ZONE": preferred}  # fmt: skip
    names = [f"p{i}-00001" for i in range(6)]
    async with without_in_cluster_controller(kube), running_controller(
        cluster, kube, http, tmp_path, identity="thirdparty", env=env,
        settings={"subsetting_algorithm": "preferred-zone", "leader_elect": "false"},
    ), watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes:  # fmt: skip
        await create_revisions(kube, namespace, names, annotations=TBC_ZERO)
        found = await settle(aes, namespace, names)
    for name, ae in found.items():
        assert ae["status"]["algorithm"] == "preferred-zone"
        assert preferred in {zone_of[a] for a in chosen(ae)}, f"{name} has no activator in {preferred}"
    # least-loaded would spread 12 slots over the activators: the preferred zone's in 4 of the 6, not all.
