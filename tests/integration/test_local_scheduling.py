"""Local scheduling on a 3-node devcluster, through the DaemonSet's activators (one per node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from devcluster.daemons import container_pid
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.watching import Event, WatchCache
from tests.integration.activators import NodeActivator, daemonset_activators
from tests.integration.kit import create_revision, is_ready, most_serving_at_once, poll_until, wait_for, watching

SCHEDULED_BY = "localsched.dev/scheduled-by"


@dataclass
class RevisionWatch:
    """What a revision went through while watched: the most Ready pods and replicas at once, every pod created,
    and when each pod started terminating (for the serving intervals of :func:`most_serving_at_once`)."""

    pods: WatchCache
    deployments: WatchCache
    max_ready: int = 0  # Ready and not terminating (a terminating pod is in no endpoint list)
    max_ready_with_terminating: int = 0  # reported: a trimmed pod can stay Ready while it shuts down
    max_replicas: int = 0
    created: list[str] = field(default_factory=list)
    first_seen: dict[str, Obj] = field(default_factory=dict)  # each pod as it was created
    at_max: list[str] = field(default_factory=list)
    terminating_at: dict[str, float] = field(default_factory=dict)  # pod -> when its deletion was first seen

    def on_pod(self, event: Event) -> None:
        name = event.obj["metadata"]["name"]
        if event.type == "ADDED":
            self.created.append(name)
            self.first_seen[name] = event.obj
        if event.type == "DELETED" or event.obj["metadata"].get("deletionTimestamp"):
            self.terminating_at.setdefault(name, time.monotonic())
        ready = [p for p in self.pods if is_ready(p)]
        serving = [p for p in ready if not p["metadata"].get("deletionTimestamp")]
        self.max_ready_with_terminating = max(self.max_ready_with_terminating, len(ready))
        if len(serving) > self.max_ready:
            self.max_ready = len(serving)
            self.at_max = [p["metadata"]["name"] for p in serving]

    def on_deployment(self, event: Event) -> None:
        self.max_replicas = max(self.max_replicas, int(event.obj["spec"].get("replicas") or 0))

    def settled(self, namespace: str, deployment: str) -> int | None:
        """The replica count once pods (none terminating, every one its ReplicaSet's: no stand-in left) equal the
        Deployment's replicas, all Ready."""
        d = self.deployments.get(deployment, namespace)
        pods = [p for p in self.pods if not p["metadata"].get("deletionTimestamp")]
        if d is None or len(pods) != len(list(self.pods)) or any(not owned_by_replicaset(p) for p in pods):
            return None
        replicas = int(d["spec"].get("replicas") or 0)
        return replicas if replicas == len(pods) and all(is_ready(p) for p in pods) else None


def owned_by_replicaset(pod: Obj) -> bool:
    return any(o.get("kind") == "ReplicaSet" and o.get("controller") for o in pod["metadata"].get("ownerReferences")
               or [])  # fmt: skip


@contextlib.asynccontextmanager
async def watch_revision(kube: KubeClient, namespace: str, revision: str) -> AsyncIterator[RevisionWatch]:
    selector = f"serving.knative.dev/revision={revision}"
    pods = WatchCache(kube, r.PODS, namespace=namespace, label_selector=selector)
    deployments = WatchCache(kube, r.DEPLOYMENTS, namespace=namespace, label_selector=selector)
    watch = RevisionWatch(pods, deployments)
    pods.add_handler(watch.on_pod)
    deployments.add_handler(watch.on_deployment)
    pods.start()
    deployments.start()
    try:
        await pods.wait_synced(30)
        await deployments.wait_synced(30)
        yield watch
    finally:
        await pods.stop()
        await deployments.stop()


@contextlib.asynccontextmanager
async def fresh_revision(kube: KubeClient, namespace: str, name: str, **options: Any) -> AsyncIterator[RevisionWatch]:
    """A new revision at zero, watched; deleted afterwards (its pods go with it, in the background).

    A cycle of a test starts from a new revision rather than by forcing the last one back to zero: the autoscaler
    owns the replicas and would scale a revision it still sees demand for straight back up, as Knative's would."""
    await create_revision(kube, sample_revision(name, namespace, **options))
    try:
        async with watch_revision(kube, namespace, name) as watch:
            yield watch
    finally:
        await kube.delete(r.REVISIONS, name, namespace)


def node_name_writer(pod: Obj) -> set[str]:
    """The field managers that wrote spec.nodeName (kube-scheduler binds through pods/binding, never like this)."""
    return {m["manager"] for m in pod["metadata"].get("managedFields") or [] if "f:nodeName" in json.dumps(m)}


async def test_cold_request_to_the_activator_on_node_b_gets_its_pod_on_node_b_without_the_scheduler(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    wasted, served_locally, kept_local = [], 0, 0
    for cycle in range(5):
        name = f"local-{cycle:02d}"
        async with fresh_revision(kube, namespace, name) as watch:
            answer = await http.get(f"{activators['node-2'].url}/", headers=activators["node-2"].headers(
                namespace, name))  # fmt: skip
            assert answer.status_code == 200
            served_locally += answer.json()["node"] == "node-2"
            # The activator on node-2 wrote a pod onto node-2 itself: spec.nodeName set at creation by the
            # activator's own request (field manager), never bound by kube-scheduler.
            [local] = [p for p in watch.first_seen.values()
                       if (p["metadata"].get("labels") or {}).get(SCHEDULED_BY) == "node-2"]  # fmt: skip
            assert local["spec"]["nodeName"] == "node-2"
            assert node_name_writer(local) == {"activator"}, "spec.nodeName must come from the activator's create"
            scheduled = await kube.list(r.EVENTS, namespace, field_selector=(
                f"involvedObject.name={local['metadata']['name']},reason=Scheduled"))  # fmt: skip
            assert scheduled["items"] == []
            # Settled: pods == the Deployment's replicas (one), whichever pod the ReplicaSet kept.
            deployment = f"{name}-deployment"
            assert await wait_for(watch.pods, lambda c, d=deployment: watch.settled(namespace, d)) == 1
            kept_local += [p["metadata"]["name"] for p in watch.pods] == [local["metadata"]["name"]]
            wasted.append(len(watch.created) - 1)
    events = await kube.list(r.EVENTS, namespace, field_selector="reason=LocalScheduled")
    assert len(events["items"]) >= 5
    print(
        f"\n5 local cold starts: wasted pod creations {wasted}; first request served by the local pod "
        f"{served_locally}/5; the ReplicaSet kept the local pod {kept_local}/5 (else its own, see "
        "docs/local-scheduling.md)"
    )


@pytest.mark.parametrize(
    ("annotation", "max_scale", "cycles", "per_activator"),
    [
        pytest.param("autoscaling.knative.dev/max-scale", 1, 30, 1, id="max-scale-1"),
        pytest.param("autoscaling.knative.dev/maxScale", 1, 30, 1, id="legacy-maxScale-1"),
        pytest.param("autoscaling.knative.dev/max-scale", 2, 10, 5, id="max-scale-2-bursts"),
    ],
)
async def test_three_activators_racing_never_push_a_revision_past_max_scale(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, annotation: str, max_scale: int, cycles: int,
    per_activator: int,
) -> None:  # fmt: skip
    activators = await daemonset_activators(kube)
    statuses: Counter[int] = Counter()
    most_serving, serving_at_most = 0, set()
    max_replicas = max_ready = max_ready_with_terminating = created = 0
    at_max: list[str] = []
    for cycle in range(cycles):
        name = f"capped-{cycle:02d}"
        async with fresh_revision(kube, namespace, name, annotations={annotation: str(max_scale)}) as watch:
            answers: list[tuple[float, str]] = []

            async def ask(
                activator: NodeActivator, answers: list[tuple[float, str]] = answers, name: str = name
            ) -> None:
                answer = await http.get(f"{activator.url}/", headers=activator.headers(namespace, name))
                statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    answers.append((time.monotonic(), answer.json()["pod"]))

            await asyncio.gather(*(ask(a) for a in activators.values() for _ in range(per_activator)))
            deployment = f"{name}-deployment"
            await wait_for(watch.pods, lambda c, d=deployment: watch.settled(namespace, d))
            serving, pods = most_serving_at_once(answers, watch.terminating_at)
            if serving > most_serving:
                most_serving, serving_at_most = serving, pods
            if watch.max_ready > max_ready:
                max_ready, at_max = watch.max_ready, watch.at_max
            max_replicas = max(max_replicas, watch.max_replicas)
            max_ready_with_terminating = max(max_ready_with_terminating, watch.max_ready_with_terminating)
            created += len(watch.created)
    print(f"\nmaxScale {max_scale} ({annotation}), {cycles} cycles with the autoscaler in place: {dict(statuses)}; "
          f"most pods serving at once {most_serving}; most Ready in the API at once {max_ready} "
          f"({max_ready_with_terminating} counting pods shutting down), most replicas {max_replicas}, "
          f"pods created {created}")  # fmt: skip
    assert statuses == {200: cycles * per_activator * len(activators)}
    assert max_replicas <= max_scale
    assert most_serving <= max_scale, f"serving at once: {serving_at_most}"
    assert max_ready <= max_scale, f"Ready at once: {at_max}"


def _taint(node: Obj) -> list[Obj]:
    return [*(node["spec"].get("taints") or []), {"key": "localsched.dev/test", "value": "x", "effect": "NoSchedule"}]


@contextlib.asynccontextmanager
async def tainted(kube: KubeClient, node: str) -> AsyncIterator[None]:
    before = await kube.get(r.NODES, node)
    await kube.patch(r.NODES, node, {"spec": {"taints": _taint(before)}})
    try:
        yield
    finally:
        current = await kube.get(r.NODES, node)
        rest = [t for t in current["spec"].get("taints") or [] if t["key"] != "localsched.dev/test"]
        await kube.patch(r.NODES, node, {"spec": {"taints": rest or None}})


@contextlib.asynccontextmanager
async def custom_scheduler(kube: KubeClient, namespace: str, name: str, node: str) -> AsyncIterator[None]:
    """A stand-in scheduler called ``name`` that binds its pods to ``node`` through pods/binding."""
    pods = WatchCache(kube, r.PODS, namespace=namespace, field_selector=f"spec.schedulerName={name}")
    bound: set[str] = set()

    def bind(event: Event) -> None:
        pod = event.obj["metadata"]["name"]
        if event.type == "ADDED" and not event.obj["spec"].get("nodeName") and pod not in bound:
            bound.add(pod)
            body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}}  # fmt: skip
            asyncio.get_running_loop().create_task(
                kube.request("POST", r.PODS.path(namespace, pod, "binding"), body=body)
            )

    pods.add_handler(bind)
    pods.start()
    try:
        yield
    finally:
        await pods.stop()


@contextlib.asynccontextmanager
async def filled(kube: KubeClient, namespace: str, node: str, cpu: str) -> AsyncIterator[None]:
    filler = {
        "metadata": {"name": f"filler-{node}"},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "sleep",
                    "image": "none",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": cpu}},
                }
            ],
        },
    }
    await kube.create(r.PODS, filler, namespace)  # fmt: skip
    async with watching(kube, r.PODS, namespace) as pods:
        await wait_for(
            pods, lambda c: (p := c.get(f"filler-{node}", namespace)) and p["status"].get("phase") == "Running"
        )
    yield


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("taint", "TaintNotTolerated", id="tainted-node"),
        pytest.param("node_selector", "NodeSelectorMismatch", id="node-selector-excludes-the-node"),
        pytest.param("custom_scheduler", "CustomScheduler", id="custom-scheduler"),
        pytest.param("does_not_fit", "InsufficientCPU", id="pod-does-not-fit"),
        pytest.param("opted_out", "DisabledForRevision", id="revision-opts-out-by-annotation"),
    ],
)
async def test_a_node_the_pod_may_not_use_gets_no_local_pod_and_the_request_is_still_served(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, case: str, reason: str
) -> None:
    activators = await daemonset_activators(kube)
    node3: NodeActivator = activators["node-3"]
    extra: dict[str, object] = {}
    context: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    cpu = "100m"
    annotations: dict[str, str] = {}
    if case == "opted_out":
        annotations = {"localsched.dev/local-scheduling": "false"}
    elif case == "taint":
        context = tainted(kube, "node-3")
    elif case == "node_selector":
        extra = {"nodeSelector": {"kubernetes.io/hostname": "node-1"}}
    elif case == "custom_scheduler":
        extra = {"schedulerName": "test-scheduler"}
        context = custom_scheduler(kube, namespace, "test-scheduler", "node-1")
    else:
        context = filled(kube, namespace, "node-3", "3")
        cpu = "1500m"
    name = "picky-00001"
    before = await node3.metric(http, "activator_local_scheduling_skips_total", reason=reason)
    async with context:
        await create_revision(kube, sample_revision(name, namespace, cpu=cpu, pod_spec_extra=extra,
                                                    annotations=annotations))  # fmt: skip
        answer = await http.get(f"{node3.url}/", headers=node3.headers(namespace, name))
        assert answer.status_code == 200
        pods = await kube.list(r.PODS, namespace, label_selector=f"serving.knative.dev/revision={name}")
        if case != "opted_out":  # node-3 may not run it at all; an opted-out revision may land there by the scheduler
            assert answer.json()["node"] != "node-3"
            assert all(p["spec"].get("nodeName") != "node-3" for p in pods["items"])
        assert not any(SCHEDULED_BY in (p["metadata"].get("labels") or {}) for p in pods["items"])
    assert await node3.metric(http, "activator_local_scheduling_skips_total", reason=reason) == before + 1


async def test_a_pod_left_unclaimed_by_an_activator_killed_right_after_creating_it_is_cleaned_up_once_it_restarts(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    node1 = activators["node-1"]
    activator_pod = await kube.get(r.PODS, node1.pod, "localsched-system")
    pid = container_pid(activator_pod)
    restarts = activator_pod["status"]["containerStatuses"][0]["restartCount"]
    name = "crash-00001"
    await create_revision(kube, sample_revision(name, namespace, startup_delay=0.5))
    async with watch_revision(kube, namespace, name) as watch:

        def kill_on_create(event: Event) -> None:
            labels = event.obj["metadata"].get("labels") or {}
            if event.type == "ADDED" and labels.get(SCHEDULED_BY) == "node-1":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        watch.pods.add_handler(kill_on_create)
        with contextlib.suppress(httpx.TransportError):
            await http.get(f"{node1.url}/", headers=node1.headers(namespace, name))
        [created] = await wait_for(watch.pods, lambda c: [p for p in c if (p["metadata"].get("labels") or {})
                                                           .get(SCHEDULED_BY) == "node-1"] or None)  # fmt: skip
        async with watching(kube, r.PODS, "localsched-system") as system:
            restarted = await wait_for(system, lambda c: (p := c.get(node1.pod, "localsched-system")) and is_ready(p)
                                       and p["status"]["containerStatuses"][0]["restartCount"] > restarts and p,
                                       timeout=60)  # fmt: skip
        # The restarted activator finds the stand-in its previous self never handed over, and deletes it: it never
        # served anyone else, and nothing was claimed for it (the claim waits for the kubelet to run it).
        ours = created["metadata"]["name"]
        await wait_for(watch.pods, lambda c: c.get(ours, namespace) is None, timeout=60)
        settled_at = lambda _: (n := watch.settled(namespace, f"{name}-deployment")) is not None and [n]  # noqa: E731
        assert await wait_for(watch.pods, settled_at) == [0]
        # No pod leaked; and the revision cold-starts again through the restarted activator, on its node.
        node1 = NodeActivator(node1.node, restarted["status"]["podIP"], node1.pod)
        answer = await http.get(f"{node1.url}/", headers=node1.headers(namespace, name))
        assert answer.status_code == 200
        assert answer.json()["node"] == "node-1"
        assert await wait_for(watch.pods, lambda c: watch.settled(namespace, f"{name}-deployment")) == 1
    # Counted by the restarted process (its counters start at zero; an earlier test may have restarted this one).
    assert await node1.metric(http, "activator_local_pods_total", outcome="abandoned_deleted") >= 1


async def _ready_in_api_at(pods: WatchCache, name: str, namespace: str) -> float:
    await wait_for(pods, lambda c: (p := c.get(name, namespace)) is not None and is_ready(p), timeout=60)
    return time.monotonic()


@pytest.mark.parametrize("path", ["local", "standard"])
async def test_the_first_byte_is_forwarded_before_the_pod_is_ready_in_the_api(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, path: str
) -> None:
    """The activator checks a new pod's IP itself (the revision's readiness probe, every 50 ms); the kubelet probes
    here only every 10 s once its first probe, at Running, found the app still starting (STARTUP_DELAY)."""
    activators = await daemonset_activators(kube)
    node2 = activators["node-2"]
    annotations = {"devcluster.localsched.dev/probe-period-ms": "10000"}  # no queue-proxy-like fast probing
    if path == "standard":
        annotations["localsched.dev/local-scheduling"] = "false"
    name = f"early-{path}-00001"
    revision = sample_revision(name, namespace, startup_delay=1.5, annotations=annotations)
    revision["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 10
    await create_revision(kube, revision)
    async with watch_revision(kube, namespace, name) as watch:
        answer = await http.get(f"{node2.url}/", headers=node2.headers(namespace, name))
        answered_at = time.monotonic()
        assert answer.status_code == 200
        pod = answer.json()["pod"]
        pod_obj = watch.pods.get(pod, namespace)
        assert pod_obj is not None
        assert not is_ready(pod_obj), "the answer came from a pod the API did not call Ready yet"
        ready_at = await _ready_in_api_at(watch.pods, pod, namespace)
    print(f"\n{path}: first byte {ready_at - answered_at:.1f}s before the API called {pod} Ready")
    assert answered_at < ready_at
    if path == "local":
        assert SCHEDULED_BY in (pod_obj["metadata"].get("labels") or {})


async def test_a_failed_pod_left_by_a_dead_activator_is_deleted_when_it_comes_back(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient
) -> None:
    activators = await daemonset_activators(kube)
    node1 = activators["node-1"]
    activator_pod = await kube.get(r.PODS, node1.pod, "localsched-system")
    os.kill(container_pid(activator_pod), signal.SIGKILL)
    leftover = {"metadata": {"name": "leftover", "labels": {SCHEDULED_BY: "node-1"}}, "spec": {"nodeName": "node-1",
                "containers": [{"name": "x", "image": "none", "command": ["sleep", "60"],
                                "resources": {"requests": {"cpu": "64"}}}]}}  # fmt: skip
    await kube.create(r.PODS, leftover, namespace)
    async with watching(kube, r.PODS, namespace) as pods:
        await wait_for(pods, lambda c: c.get("leftover", namespace) is None, timeout=60)

    async def counted() -> bool:
        return await node1.metric(http, "activator_local_pods_total", outcome="failed_deleted") >= 1

    await poll_until(counted, 30, "the restarted activator to count the cleanup")
