"""Bad input, and the daemons keep serving everything else.

Each bad resource is named where its owner looks -- a 500 ``invalid_revision`` naming the key, a condition or an
Event naming the key, a 503 with Retry-After and the scheduler's FailedScheduling -- while a healthy revision in the
same namespace answers 2xx through an activator during and after, and no daemon restarts or loses its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest_asyncio

from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import JSON_PATCH, MERGE_PATCH, KubeClient, Obj
from localsched.kube.errors import Invalid
from localsched.kube.watching import WatchCache
from tests.integration.activators import NodeActivator, daemonset_activators, running_activator
from tests.integration.conftest import TEST_IP_BASE
from tests.integration.controllers import SYSTEM_NAMESPACE, InClusterLeader, in_cluster_leader, lease_holder
from tests.integration.kit import Cluster, condition, create_revision, poll_until, wait_for, watching

ACTIVATOR_IP = f"{TEST_IP_BASE}.1.250"  # on node-1's range, apart from the addresses its pods get
DAEMONS = "app.kubernetes.io/name in (activator,endpointsctl)"
KNATIVE_NAMESPACE = "knative-serving"
AUTOSCALER_CONFIG = "config-autoscaler"
CRD = "activationendpoints.activation.localsched.dev"
ACTIVATORS_MINIMUM = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/activators/minimum"

# Revision name -> (its annotations, the key a refusal and a condition must name).
BAD_ANNOTATIONS: dict[str, tuple[dict[str, str], str]] = {
    "lots-00001": ({"autoscaling.knative.dev/max-scale": "lots"}, "autoscaling.knative.dev/max-scale"),
    "inverted-00001": (
        {"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "2"},
        "autoscaling.knative.dev/min-scale",
    ),
    "burst-00001": (
        {"autoscaling.knative.dev/target-burst-capacity": "x"},
        "autoscaling.knative.dev/target-burst-capacity",
    ),
    "maybe-00001": ({"localsched.dev/local-scheduling": "maybe"}, "localsched.dev/local-scheduling"),
}


# -- helpers ----------------------------------------------------------------------------------------------------------


def find_condition(obj: Obj | None, kind: str) -> Obj:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


async def daemon_restarts(kube: KubeClient) -> dict[str, int]:
    """Restarts of each activator and endpointsctl container, by pod name: a crash loop shows here."""
    pods = (await kube.list(r.PODS, SYSTEM_NAMESPACE, label_selector=DAEMONS))["items"]
    return {p["metadata"]["name"]: sum(int(c.get("restartCount") or 0) for c in p["status"].get("containerStatuses")
                                       or []) for p in pods if not p["metadata"].get("deletionTimestamp")}  # fmt: skip


async def lease(kube: KubeClient) -> str:
    return lease_holder(await kube.get(r.LEASES, "endpointsctl", SYSTEM_NAMESPACE))


@contextlib.asynccontextmanager
async def kept_serving(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[Callable[[], Awaitable[list[int]]]]:
    """Requests for a healthy revision, one after another, for as long as the block runs; yields a function that
    stops them and returns their status codes (at least one)."""
    codes: list[int] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while True:
            codes.append((await http.get(url, headers=headers)).status_code)
            if stop.is_set():
                return
            await asyncio.sleep(0.02)  # paces the traffic (40 requests a second); noqa: sleep-ok

    task = asyncio.create_task(loop(), name="healthy-traffic")

    async def finish() -> list[int]:
        stop.set()
        await task
        return codes

    try:
        yield finish
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def healthy_revision(kube: KubeClient, http: httpx.AsyncClient, namespace: str, url: str) -> dict[str, str]:
    """A revision that works, served once through ``url`` (a cold start); returns its routing headers."""
    await create_revision(kube, sample_revision("healthy-00001", namespace))
    headers = {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": "healthy-00001"}
    answer = await http.get(url, headers=headers)
    assert answer.status_code == 200, answer.text
    return headers


def all_2xx(codes: list[int]) -> bool:
    return bool(codes) and all(200 <= c < 300 for c in codes)


@pytest_asyncio.fixture(loop_scope="session")
async def activators(kube: KubeClient) -> dict[str, NodeActivator]:
    return await daemonset_activators(kube)


@pytest_asyncio.fixture(loop_scope="session")
async def leader(kube: KubeClient, activators: dict[str, NodeActivator]) -> InClusterLeader:
    return await in_cluster_leader(kube)


# -- A Revision with invalid annotations ------------------------------------------------------------------------------


async def test_a_revision_with_invalid_annotations_is_refused_naming_the_key_and_nothing_else_stops(
    kube: KubeClient,
    namespace: str,
    http: httpx.AsyncClient,
    activators: dict[str, NodeActivator],
    leader: InClusterLeader,
) -> None:
    restarts, holder = await daemon_restarts(kube), await lease(kube)
    front = activators["node-1"]
    healthy = await healthy_revision(kube, http, namespace, f"{front.url}/")
    for name, (bad, _) in BAD_ANNOTATIONS.items():
        await kube.create(r.REVISIONS, sample_revision(name, namespace, annotations=bad), namespace)

    async with kept_serving(http, f"{front.url}/", healthy) as healthy_codes:
        answers: dict[str, tuple[int, bool]] = {}
        for name, (_, key) in BAD_ANNOTATIONS.items():
            for activator in activators.values():

                async def known(a: NodeActivator = activator, n: str = name) -> httpx.Response | None:
                    answer = await http.get(f"{a.url}/", headers=a.headers(namespace, n))
                    return answer if answer.status_code != 404 else None  # until its watch has the Revision

                answer = await poll_until(known, 30, f"{activator.node}'s activator to know {name}")
                answers[f"{name} via {activator.node}"] = (answer.status_code, key in answer.text)
        during = await healthy_codes()
    # endpointsctl: a condition and an Event naming the key on each bad revision's ActivationEndpoints.
    async with (
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
        watching(kube, r.EVENTS, namespace) as events,
    ):

        def named(cache: WatchCache) -> dict[str, Obj] | None:
            found = {n: find_condition(cache.get(n, namespace), "InvalidSpec") for n in BAD_ANNOTATIONS}
            ok = all(c.get("status") == "True" and key in c.get("message", "")
                     for n, c in found.items() for key in [BAD_ANNOTATIONS[n][1]])  # fmt: skip
            return found if ok else None

        try:
            invalid = await wait_for(aes, named, 30)
        except AssertionError:
            now = {n: find_condition(aes.get(n, namespace), "InvalidSpec") for n in BAD_ANNOTATIONS}
            raise AssertionError(f"not every bad revision has InvalidSpec=True naming its key: {now}") from None
        assert {c["reason"] for c in invalid.values()} == {"RevisionInvalid"}
        assert condition(aes.get("healthy-00001", namespace) or {}, "Ready") == "True"
        assert condition(aes.get("healthy-00001", namespace) or {}, "InvalidSpec") == "False"

        def recorded(cache: WatchCache) -> set[str] | None:
            warned = {
                e["involvedObject"]["name"]
                for e in cache
                if e.get("type") == "Warning"
                and e["involvedObject"].get("kind") == "ActivationEndpoints"
                and BAD_ANNOTATIONS.get(e["involvedObject"]["name"], ({}, "\0"))[1] in e.get("message", "")
            }
            return warned if warned == set(BAD_ANNOTATIONS) else None  # fmt: skip

        await wait_for(events, recorded, 30)

    expected = {f"{name} via {node}": (500, True) for name in BAD_ANNOTATIONS for node in activators}
    assert answers == expected, "(status, names the key) per revision and activator"
    assert all_2xx(during), f"the healthy revision while the bad ones were refused: {during}"
    for name in BAD_ANNOTATIONS:
        refused = await front.metric(http, "activator_refusals_total", namespace=namespace, revision=name,
                                     reason="invalid_revision")  # fmt: skip
        assert refused >= 1, f"{name}: not counted as invalid_revision"

    after = [(await http.get(f"{a.url}/", headers=healthy)).status_code for a in activators.values()]
    assert after == [200] * len(activators), "the healthy revision through each activator, afterwards"
    assert await daemon_restarts(kube) == restarts, "an activator or endpointsctl restarted"
    assert await lease(kube) == holder, "endpointsctl's leader changed"


# -- A Revision that fits no node -------------------------------------------------------------------------------------


async def test_a_revision_that_fits_no_node_times_out_with_503_skips_local_scheduling_and_its_pod_stays_pending(
    cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    timeout = 3.0
    await create_revision(kube, sample_revision("huge-00001", namespace, cpu="1000"))
    async with running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP,
                                 activation_timeout_seconds=str(timeout)) as activator:  # fmt: skip
        healthy = await healthy_revision(kube, http, namespace, f"{activator.url}/")
        async with kept_serving(http, f"{activator.url}/", healthy) as healthy_codes:
            started = time.monotonic()
            answer = await http.get(f"{activator.url}/", headers=activator.headers(namespace, "huge-00001"))
            took = time.monotonic() - started
            during = await healthy_codes()
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("Retry-After") == "1"
        assert "no capacity" in answer.text, answer.text
        assert timeout - 0.5 <= took <= timeout + 5, f"answered after {took:.1f}s (activation timeout {timeout}s)"
        assert all_2xx(during), f"the healthy revision during the doomed cold start: {during}"
        assert await activator.metric(http, "activator_refusals_total", revision="huge-00001",
                                      reason="activation_timeout") == 1  # fmt: skip
        assert await activator.metric(http, "activator_local_scheduling_skips_total", reason="InsufficientCPU") == 1

        async def journal() -> Obj | None:
            entries = (await http.get(f"http://{activator.ip}:{activator.admin_port}/debug/coldstarts")).json()
            return next((e for e in entries if e["revision"] == f"{namespace}/huge-00001" and e["outcome"]), None)

        entry = await poll_until(journal, 10, "the cold start's journal entry")
        assert (entry.get("notes", {}).get("local_skip"), entry["outcome"]) == ("InsufficientCPU", "timeout"), entry

        # The standard path: the autoscaler heard of the demand, the ReplicaSet made a pod, the scheduler placed
        # it nowhere.
        async with (
            watching(kube, r.PODS, namespace, label_selector="serving.knative.dev/revision=huge-00001") as pods,
            watching(kube, r.EVENTS, namespace) as events,
        ):
            [pod] = await wait_for(pods, lambda c: list(c) or None, 30)
            name = pod["metadata"]["name"]

            def failed_scheduling(cache: WatchCache) -> Obj | None:
                return next((e for e in cache if e["involvedObject"].get("name") == name
                             and e.get("reason") == "FailedScheduling"), None)  # fmt: skip

            event = await wait_for(events, failed_scheduling, 30)
            assert "default-scheduler" in (event.get("reportingComponent"), event.get("source", {}).get("component"))
            assert "Insufficient cpu" in event["message"], event["message"]
            pod = pods.get(name, namespace) or {}
            assert (pod["status"].get("phase"), pod["spec"].get("nodeName")) == ("Pending", None)
        answer = await http.get(f"{activator.url}/", headers=healthy)
        assert answer.status_code == 200, "the healthy revision, afterwards"
        assert activator.process.returncode is None


# -- An ActivationEndpoints with a spec its schema forbids ----------------------------------------------------------


@contextlib.asynccontextmanager
async def crd_without_activators_minimum(kube: KubeClient, namespace: str, probe: str) -> AsyncIterator[None]:
    """The ActivationEndpoints CRD without ``minimum: 1`` on ``spec.activators`` while the block runs: what an
    object stored before a schema change, or under a CRD installed without validation, looks like. Restored on
    the way out, and waited for both ways (the server applies a CRD change asynchronously)."""

    async def accepts_zero() -> bool:
        try:
            await kube.request("PATCH", r.ACTIVATION_ENDPOINTS.path(namespace, probe), params={"dryRun": "All"},
                               body={"spec": {"activators": 0}}, content_type=MERGE_PATCH)  # fmt: skip
        except Invalid:
            return False
        return True

    async def refuses_zero() -> bool:
        return not await accepts_zero()

    await kube.patch(r.CRDS, CRD, [{"op": "remove", "path": ACTIVATORS_MINIMUM}], content_type=JSON_PATCH)
    try:
        await poll_until(accepts_zero, 15, "the relaxed CRD schema to be in force")
        yield
    finally:
        await kube.patch(r.CRDS, CRD, [{"op": "add", "path": ACTIVATORS_MINIMUM, "value": 1}], content_type=JSON_PATCH)
        await poll_until(refuses_zero, 15, "the CRD schema to be restored")


async def test_an_activation_endpoints_with_a_spec_its_schema_forbids_says_so_and_its_revision_is_still_served(
    kube: KubeClient,
    namespace: str,
    http: httpx.AsyncClient,
    activators: dict[str, NodeActivator],
    leader: InClusterLeader,
) -> None:
    """``spec.activators: 0`` stored where the schema did not forbid it: InvalidSpec, the computed N in use. Once
    the schema forbids it again, the API server refuses every status write for the object (it validates the
    whole object), so endpointsctl says so in an Event instead, and the revision is still served."""
    name = "stored-00001"
    await kube.create(r.REVISIONS, sample_revision(name, namespace), namespace)
    async with (
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
        watching(kube, r.EVENTS, namespace) as events,
    ):

        def settled(cache: WatchCache) -> Obj | None:
            ae = cache.get(name, namespace)
            ok = ae and condition(ae, "Ready") == "True" and ae["status"].get("observedGeneration") == ae[
                "metadata"]["generation"]  # fmt: skip
            return ae if ok else None

        computed = (await wait_for(aes, settled, 30))["status"]["desiredActivators"]
        async with crd_without_activators_minimum(kube, namespace, name):
            stored = await kube.patch(r.ACTIVATION_ENDPOINTS, name, {"spec": {"activators": 0}}, namespace)
            generation = stored["metadata"]["generation"]

            def judged(cache: WatchCache) -> Obj | None:
                ae = cache.get(name, namespace) or {}
                seen = (ae.get("status") or {}).get("observedGeneration") == generation
                return ae if seen and find_condition(ae, "InvalidSpec").get("status") == "True" else None

            try:
                ae = await wait_for(aes, judged, 20)
            except AssertionError:
                now = (aes.get(name, namespace) or {}).get("status")
                raise AssertionError(f"no InvalidSpec for spec.activators=0; status now: {now}") from None
        invalid = find_condition(ae, "InvalidSpec")
        assert (invalid["reason"], invalid.get("severity")) == ("InvalidSpec", "Error")
        assert "activators" in invalid["message"], invalid["message"]
        assert "got 0" in invalid["message"], invalid["message"]
        assert condition(ae, "Ready") == "True", "the computed N is served meanwhile"
        assert (ae["status"]["desiredActivators"], ae["status"]["sizingSource"]) == (computed, "Capacity")
        assert ae["status"]["actualActivators"] == min(computed, len(activators))

        # The schema forbids 0 again and the object keeps it: a ready pod (a cold start through an activator, which
        # serves the revision) changes N, and the new status cannot be written.
        front = activators["node-1"]
        assert (await http.get(f"{front.url}/", headers=front.headers(namespace, name))).status_code == 200

        def refused(cache: WatchCache) -> Obj | None:
            return next((e for e in cache if e["involvedObject"].get("name") == name
                         and e.get("reason") == "StatusRefused"), None)  # fmt: skip

        try:
            event = await wait_for(events, refused, 20)
        except AssertionError:
            now = (aes.get(name, namespace) or {}).get("status")
            raise AssertionError(f"no StatusRefused event; the status now: {now}") from None
        assert event["type"] == "Warning"
        assert "spec.activators" in event["message"], event["message"]

        # Fixing it (a value the schema takes) clears the condition.
        await kube.patch(r.ACTIVATION_ENDPOINTS, name, {"spec": {"activators": 1}}, namespace)
        fixed = await wait_for(aes, lambda c: (ae := c.get(name, namespace)) and condition(ae, "InvalidSpec") == "False"
                               and ae["status"].get("desiredActivators") == 1 and ae, 20)  # fmt: skip
        assert fixed["status"]["sizingSource"] == "Spec"


# -- config-autoscaler with garbage ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def restored_autoscaler_config(kube: KubeClient) -> AsyncIterator[dict[str, str]]:
    """config-autoscaler is the session's: whatever the block does to it, its data is put back afterwards."""
    original = dict((await kube.get(r.CONFIGMAPS, AUTOSCALER_CONFIG, KNATIVE_NAMESPACE)).get("data") or {})
    try:
        yield original
    finally:
        current = await kube.get(r.CONFIGMAPS, AUTOSCALER_CONFIG, KNATIVE_NAMESPACE)
        current["data"] = original
        await kube.replace(r.CONFIGMAPS, current)


async def test_garbage_in_config_autoscaler_is_reported_naming_the_key_and_the_last_good_values_stay_in_use(
    kube: KubeClient,
    namespace: str,
    http: httpx.AsyncClient,
    activators: dict[str, NodeActivator],
    leader: InClusterLeader,
) -> None:
    restarts, holder = await daemon_restarts(kube), await lease(kube)
    front = activators["node-2"]
    healthy = await healthy_revision(kube, http, namespace, f"{front.url}/")
    # A good value first: activator-capacity 1000 gives N = 2 where Knative's default (100) gives 3 or more, so the
    # value in use afterwards tells the last good configuration from the defaults.
    good = {"activator-capacity": "1000"}
    garbage: list[tuple[dict[str, str | None], str]] = [
        ({"target-burst-capacity": "banana"}, "target-burst-capacity"),
        ({"target-burst-capacity": None, "activator-capacity": "-5"}, "activator-capacity"),
        ({"activator-capacity": "1000", "container-concurrency-target-default": "0"},
         "container-concurrency-target-default"),
    ]  # fmt: skip

    async def set_config(data: dict[str, str | None]) -> None:
        await kube.patch(r.CONFIGMAPS, AUTOSCALER_CONFIG, {"data": data}, KNATIVE_NAMESPACE)

    def configuration(cache: WatchCache, revision: str) -> tuple[str, str, int]:
        ae = cache.get(revision, namespace) or {}
        found = find_condition(ae, "InvalidConfiguration")
        return found.get("status", ""), found.get("message", ""), int((ae.get("status") or {}).get(
            "desiredActivators") or 0)  # fmt: skip

    async with (
        restored_autoscaler_config(kube),
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
        watching(kube, r.EVENTS, namespace) as events,
        kept_serving(http, f"{front.url}/", healthy) as healthy_codes,
    ):
        await set_config(good)
        await wait_for(aes, lambda c: configuration(c, "healthy-00001") == ("False", "", 2), 30)

        seen: list[str] = []
        for data, key in garbage:
            await set_config(data)
            try:
                _, message, desired = await wait_for(
                    aes, lambda c, k=key: (found := configuration(c, "healthy-00001"))[0] == "True"
                    and k in found[1] and found, 30)  # fmt: skip
            except AssertionError:
                now = configuration(aes, "healthy-00001")
                raise AssertionError(f"no InvalidConfiguration naming {key}; now {now}") from None
            assert desired == 2, f"with {key} invalid, N = {desired}: not the last good configuration's 2"
            seen.append(message)

            if key == "target-burst-capacity":
                # A revision created meanwhile is served, sized by the last good configuration.
                await create_revision(kube, sample_revision("newcomer-00001", namespace))
                newcomer = await wait_for(aes, lambda c: (ae := c.get("newcomer-00001", namespace))
                                          and condition(ae, "Ready") == "True" and ae, 30)  # fmt: skip
                assert newcomer["status"]["desiredActivators"] == 2
                assert condition(newcomer, "InvalidConfiguration") == "True"

        def warned(cache: WatchCache) -> Obj | None:
            return next((e for e in cache if e["involvedObject"].get("name") == "healthy-00001"
                         and e.get("type") == "Warning"
                         and "target-burst-capacity" in e.get("message", "")), None)  # fmt: skip

        event = await wait_for(events, warned, 30)
        assert event["reason"] == "InvalidAutoscalerConfig", event
        assert "banana" in event["message"], event
        during = await healthy_codes()
    assert all_2xx(during), f"the healthy revision while config-autoscaler was garbage: {during}"
    async with watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes:
        await wait_for(aes, lambda c: configuration(c, "healthy-00001")[0] == "False", 30)
    assert all("keeping the last valid configuration" in m for m in seen), seen
    assert (await http.get(f"{front.url}/", headers=healthy)).status_code == 200
    assert await daemon_restarts(kube) == restarts, "an activator or endpointsctl restarted"
    assert await lease(kube) == holder, "endpointsctl's leader changed"
