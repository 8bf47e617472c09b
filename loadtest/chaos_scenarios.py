"""The chaos suite's scenarios: one fault each, injected under steady load on a fresh warm revision.

Each scenario is a ``prepare`` (extra revisions, before the load starts) and a ``body`` (inject the fault, heal it,
wait for the system to converge), given a :class:`Run`. ``docs/chaos.md`` says what each one shows.
Waits are on conditions with deadlines; the only sleeps hold a fault for its set duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from devcluster import controlplane
from devcluster.activators import metric_value
from devcluster.controlplane import ClusterSpec
from devcluster.daemons import container_pid
from devcluster.samples import sample_revision
from loadtest.chaos_cluster import (
    SYSTEM_NAMESPACE,
    Slices,
    activator_pods,
    compact_etcd,
    endpointsctl_pods,
    holder_pod,
    lease_holder,
    log_lines_since,
    log_marks,
    scrape,
    start_apiserver,
    stop_apiserver,
    wait_deployment,
)
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import KubeError
from localsched.predicates import is_ready

ACTIVATOR_PORT = 8012
DEAD_SECONDS = 15.0  # a killed or hung node stays so this long: NotReady after the 8 s grace, then some
API_DOWN_SECONDS = 30.0
AUTOSCALER_DOWN_SECONDS = 15.0
CONVERGE_SECONDS = 60.0
STANDARD = {"localsched.dev/local-scheduling": "false"}


@dataclass
class Run:
    """One scenario's run: the cluster's handles, its namespace and warm revision, and what it found."""

    spec: ClusterSpec
    kube: KubeClient
    http: httpx.AsyncClient
    namespace: str
    slices: Slices
    activation_timeout: float
    revision: str = "warm-00001"
    fault_at: float = 0.0  # loop time the fault began
    fault_done: float = 0.0  # ... and took effect (the kill returned): requests due before were in flight
    heal_at: float | None = None
    converged_at: float | None = None
    victims: set[str] = field(default_factory=set)  # activator addresses the fault took down
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (loop time, what): relative in the report
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def since_fault(self, at: float | None = None) -> float:
        return round((self.now() if at is None else at) - self.fault_at, 2)

    def mark(self, what: str) -> None:
        self.timeline.append((self.now(), what))

    def relative_timeline(self) -> list[tuple[float, str]]:
        return [(self.since_fault(at), what) for at, what in self.timeline]

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append((what, bool(ok)))
        return bool(ok)

    def begin(self, what: str) -> None:
        self.fault_at = self.fault_done = self.now()
        self.mark(what)

    def took_effect(self) -> None:
        self.fault_done = self.now()

    def healed(self, what: str) -> None:
        self.heal_at = self.now()
        self.mark(what)

    def converged(self, what: str) -> None:
        self.converged_at = self.now()
        self.mark(f"converged: {what}")

    async def hold(self, seconds: float) -> None:
        """Keep the fault on until ``seconds`` after it began (the fault's set duration, not synchronisation)."""
        await asyncio.sleep(max(0.0, self.fault_at + seconds - self.now()))

    async def until(
        self, check: Callable[[], Awaitable[Any]], timeout: float, what: str, *, required: bool = True,
        check_timeout: float = 5.0,
    ) -> Any:  # fmt: skip
        """Poll ``check`` until truthy (marked on the timeline); on timeout a failed check when ``required``.
        ``check_timeout`` bounds one call of ``check``."""
        deadline = self.now() + timeout
        while True:
            try:
                value = await asyncio.wait_for(check(), check_timeout)
            except (httpx.HTTPError, OSError, TimeoutError, RuntimeError, KubeError):
                value = None  # the API server or a daemon not answering yet: keep polling
            if value:
                self.mark(what)
                return value
            if self.now() > deadline:
                self.mark(f"NOT within {timeout:.0f}s: {what}")
                if required:
                    self.check(f"{what} within {timeout:.0f}s", False)
                return None
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    converged_means: str
    body: Callable[[Run], Awaitable[None]]
    prepare: Callable[[Run], Awaitable[None]] | None = None
    after: Callable[[Run], Awaitable[None]] | None = None  # once the load has stopped
    # True: every request of the steady load must be answered 2xx. False: requests in flight at the fault, and
    # requests on connections the victim activator had already accepted, may fail (they may have been processed).
    all_ok: bool = True


# -- small reads --------------------------------------------------------------------------------------------------


async def direct(run: Run, ip: str, revision: str, path: str = "/", timeout: float = 40.0) -> tuple[str, float]:
    """One request straight to the activator at ``ip``: (status or error, seconds)."""
    started = time.monotonic()
    headers = {"Knative-Serving-Namespace": run.namespace, "Knative-Serving-Revision": revision}
    try:
        answer = await run.http.get(f"http://{ip}:{ACTIVATOR_PORT}{path}", headers=headers, timeout=timeout)
        outcome = str(answer.status_code)
    except httpx.TimeoutException:
        outcome = "no answer (hang)"
    except httpx.RemoteProtocolError:
        outcome = "disconnected"
    except httpx.ReadError:
        outcome = "reset"
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    return outcome, round(time.monotonic() - started, 2)


async def served(run: Run, ip: str, revision: str, timeout: float) -> bool:
    """Ask the activator at ``ip`` for ``revision`` until it answers 200 (a 404 while its cache learns of a new
    revision, a refused connection while it restarts); False after ``timeout``. Every answer is kept (figures
    ``answers``), and on a failure the activator's journal of that revision's cold starts."""
    answers: list[tuple[float, str, float]] = []

    async def ok() -> bool:
        answer, seconds = await direct(run, ip, revision, timeout=timeout)
        answers.append((run.since_fault(), answer, seconds))
        return answer == "200"

    done = bool(await run.until(ok, timeout, f"{revision} served by {ip}", required=False, check_timeout=timeout + 5))
    run.figures.setdefault("answers", {})[f"{revision} at {ip}"] = _squeeze(answers)
    if not done:
        run.notes.append(f"{revision} at {ip}: answers (s from the fault, answer, s taken): {_squeeze(answers)}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            journal = (await run.http.get(f"http://{ip}:9090/debug/coldstarts", timeout=5)).json()
            mine = [e for e in journal if e.get("revision") == f"{run.namespace}/{revision}"]
            run.figures.setdefault("journal", {})[f"{revision} at {ip}"] = mine
            run.notes.append(f"{revision} at {ip}: its cold starts (/debug/coldstarts): {mine}")
    return done


def _squeeze(answers: list[tuple[float, str, float]]) -> list[str]:
    """Runs of the same answer as ``answer xN (from t1 to t2)``: polling makes many."""
    runs: list[list[Any]] = []
    for at, answer, seconds in answers:
        if runs and runs[-1][0] == answer:
            runs[-1][1] += 1
            runs[-1][3] = at
        else:
            runs.append([answer, 1, at, at, seconds])
    return [f"{a} x{n} (at {t1:+.1f}..{t2:+.1f}s, first took {s:.1f}s)" for a, n, t1, t2, s in runs]


async def node_ready(kube: KubeClient, name: str) -> bool:
    return is_ready(await kube.get(r.NODES, name))


async def activator_on(kube: KubeClient, node: str) -> Obj | None:
    return next((p for p in await activator_pods(kube) if p["spec"].get("nodeName") == node), None)


async def app_pods(run: Run, revision: str | None = None) -> list[Obj]:
    selector = f"serving.knative.dev/revision={revision or run.revision}"
    return list((await run.kube.list(r.PODS, run.namespace, label_selector=selector)).get("items", []))


def address(pod: Obj) -> str:
    return f"{pod['status']['podIP']}:{ACTIVATOR_PORT}"


async def pick_node(run: Run) -> tuple[str, Obj]:
    """A node that runs an app pod and an activator of the revision's slice, and as few endpointsctl replicas as
    possible (its leader is scenario 4's business): (node, its activator pod)."""
    in_slice = set(run.slices.addresses(run.revision))
    activators = {p["spec"]["nodeName"]: p for p in await activator_pods(run.kube) if is_ready(p)}
    app_nodes = {p["spec"].get("nodeName") for p in await app_pods(run) if is_ready(p)}
    controllers = [p["spec"].get("nodeName") for p in await endpointsctl_pods(run.kube)]
    candidates = sorted((controllers.count(n), n) for n, p in activators.items()
                        if n in app_nodes and address(p) in in_slice)  # fmt: skip
    if not candidates:
        raise RuntimeError(f"no node runs both an app pod and a slice activator: {in_slice}, {app_nodes}")
    node = candidates[0][1]
    run.victims = {address(activators[node])}
    run.notes.append(f"victim: {node} (activator {address(activators[node])}, "
                     f"{controllers.count(node)} endpointsctl replica(s) on it)")  # fmt: skip
    return node, activators[node]


async def node_back(run: Run, node: str) -> bool:
    """The node Ready, its activator Ready and in the slice, every app pod of the warm revision Ready."""
    if not await node_ready(run.kube, node):
        return False
    pod = await activator_on(run.kube, node)
    if pod is None or not is_ready(pod) or address(pod) not in run.slices.addresses(run.revision):
        return False
    return sum(1 for p in await app_pods(run) if is_ready(p)) >= 3


# -- 1, 2: a node dies or hangs ------------------------------------------------------------------------------------


async def node_killed(run: Run) -> None:
    await _node_fault(run, "kill")


async def node_hung(run: Run) -> None:
    await _node_fault(run, "hang")


async def _node_fault(run: Run, how: str) -> None:
    node, activator = await pick_node(run)
    victim_pods = [p["metadata"]["name"] for p in await app_pods(run) if p["spec"].get("nodeName") == node]
    run.notes.append(f"app pod(s) on it: {', '.join(victim_pods)}")
    state_dir = run.spec.state_dir
    run.begin(f"{how} {node}")
    await asyncio.to_thread(controlplane.kill_node if how == "kill" else controlplane.hang_node, node, state_dir)
    run.took_effect()
    run.mark(f"{node} {'killed (its processes gone)' if how == 'kill' else 'hung (SIGSTOP, packets dropped)'}")
    await run.until(lambda: _negate(node_ready(run.kube, node)), DEAD_SECONDS + 10, f"{node} NotReady",
                    required=False)  # fmt: skip
    gone = address(activator)

    async def left_slice() -> bool:
        return gone not in run.slices.addresses(run.revision)

    await run.until(left_slice, max(1.0, DEAD_SECONDS - run.since_fault()), f"{gone} out of the slice",
                    required=False)  # fmt: skip
    await run.hold(DEAD_SECONDS)
    heal = controlplane.revive_node if how == "kill" else controlplane.resume_node
    await asyncio.to_thread(heal, node, state_dir)
    run.healed(f"{'revive' if how == 'kill' else 'resume'} {node}")
    if await run.until(lambda: node_back(run, node), CONVERGE_SECONDS, f"{node} back"):
        run.converged(f"{node} Ready, its activator Ready and in the slice, 3 app pods Ready")


async def _negate(check: Awaitable[bool]) -> bool:
    return not await check


# -- 3: one activator SIGKILLed ------------------------------------------------------------------------------------


async def prepare_queued(run: Run) -> None:
    """A revision at zero whose pod takes 3 s to listen: requests for it queue in the activator meanwhile."""
    await run.kube.create(r.REVISIONS, sample_revision("queued-00001", run.namespace, startup_delay=3.0,
                                                       timeout_seconds=60), run.namespace)  # fmt: skip
    await wait_deployment(run.kube, run.namespace, "queued-00001")


async def activator_killed(run: Run) -> None:
    node, victim = await pick_node(run)
    ip = victim["status"]["podIP"]
    restarts = victim["status"]["containerStatuses"][0].get("restartCount", 0)
    labels = {"namespace": run.namespace}
    queued = [asyncio.create_task(direct(run, ip, "queued-00001")) for _ in range(5)]
    in_flight = [asyncio.create_task(direct(run, ip, run.revision, "/?sleep=3")) for _ in range(5)]

    async def waiting() -> bool:
        text = await scrape(run.http, ip) or ""
        queue = metric_value(text, "activator_queue_depth", revision="queued-00001", **labels)
        return queue >= 5 and metric_value(text, "activator_in_flight_requests", revision=run.revision, **labels) >= 5

    if not await run.until(waiting, 15, "5 queued (cold) and 5 in flight (sleep=3) at the victim", required=False):
        raise RuntimeError("could not get 5 requests queued and 5 in flight at the victim activator")
    pod = await activator_on(run.kube, node)
    assert pod is not None
    run.begin(f"SIGKILL activator {victim['metadata']['name']} on {node}")
    os.kill(container_pid(pod), signal.SIGKILL)
    run.took_effect()
    run.figures["queued_at_kill"] = [o for o, _ in await asyncio.gather(*queued)]
    run.figures["in_flight_at_kill"] = [o for o, _ in await asyncio.gather(*in_flight)]
    run.notes.append(f"5 cold requests queued at the victim: {run.figures['queued_at_kill']}; 5 in flight "
                     f"(sleep=3) through it: {run.figures['in_flight_at_kill']}")  # fmt: skip

    async def restarted() -> bool:
        pod = await activator_on(run.kube, node)
        if pod is None or not is_ready(pod) or address(pod) not in run.slices.addresses(run.revision):
            return False
        return bool(pod["status"]["containerStatuses"][0].get("restartCount", 0) > restarts)

    if await run.until(restarted, CONVERGE_SECONDS, "the activator restarted by its kubelet, Ready, in the slice"):
        run.converged("the restarted activator Ready and in the slice")
    ok = await served(run, ip, "queued-00001", 30)
    run.check("the revision whose requests were queued at the dead activator is served by its successor", ok)


async def queued_pods(run: Run) -> None:
    """What became of the pods of the revision whose requests were queued at the dead activator (once the load
    has stopped, 5 s after its successor served it): who owns each, and is it Ready."""
    pods = []
    for pod in await app_pods(run, "queued-00001"):
        owners = [o.get("kind", "") for o in pod["metadata"].get("ownerReferences") or []]
        pods.append({"pod": pod["metadata"]["name"], "node": pod["spec"].get("nodeName"),
                     "phase": pod["status"].get("phase"), "ready": is_ready(pod), "owner": ",".join(owners) or "none",
                     "deleting": bool(pod["metadata"].get("deletionTimestamp"))})  # fmt: skip
    run.figures["queued_pods_afterwards"] = pods
    run.notes.append(f"queued-00001's pods once the load stopped: {pods}")


# -- 4: the endpointsctl leader SIGKILLed --------------------------------------------------------------------------


async def leader_killed(run: Run) -> None:
    holder = await lease_holder(run.kube)
    pod = holder_pod(holder, await endpointsctl_pods(run.kube))
    if pod is None:
        raise RuntimeError(f"no endpointsctl pod holds the Lease (holder {holder!r})")
    run.figures["slice_before"] = run.slices.content(run.revision)
    run.notes.append(f"leader: {pod['metadata']['name']} on {pod['spec'].get('nodeName')} ({holder})")
    run.begin(f"SIGKILL endpointsctl leader {pod['metadata']['name']}")
    os.kill(container_pid(pod), signal.SIGKILL)
    run.took_effect()

    async def handed_over() -> str | None:
        new = await lease_holder(run.kube)
        leader = holder_pod(new, await endpointsctl_pods(run.kube)) if new and new != holder else None
        if leader is None or not leader.get("status", {}).get("podIP"):
            return None
        text = await scrape(run.http, leader["status"]["podIP"]) or ""
        return new if metric_value(text, "endpointsctl_leader") == 1 else None

    new = await run.until(handed_over, 45, "another replica holds the Lease and says endpointsctl_leader 1")
    if new:
        run.converged(f"new leader {new}")
        run.figures["handover_seconds"] = run.since_fault(run.converged_at)


async def slice_unchanged(run: Run) -> None:
    before, after = run.figures["slice_before"], run.slices.content(run.revision)
    name = f"{run.revision}-activationendpoints"
    changes = [t for t in run.slices.modified.get(name, []) if t >= run.fault_at]
    run.notes.append(f"the slice's resourceVersion {before[0]} -> {after[0]}; {len(changes)} change(s) since the kill")
    run.check("the revision's EndpointSlice did not change (content and resourceVersion)", before == after)


# -- 5: the API server stopped for 30 s ----------------------------------------------------------------------------


async def prepare_cold(run: Run) -> None:
    await run.kube.create(r.REVISIONS, sample_revision("cold-00001", run.namespace), run.namespace)
    await wait_deployment(run.kube, run.namespace, "cold-00001")


async def apiserver_down(run: Run) -> None:
    ip = run.slices.addresses(run.revision)[0].partition(":")[0]
    marks = log_marks(run.spec.state_dir)
    run.begin("stop kube-apiserver")
    await asyncio.to_thread(stop_apiserver, run.spec.state_dir)
    run.took_effect()
    run.mark("kube-apiserver stopped")
    await asyncio.sleep(3)  # the outage's own course: the cold request comes 3 s into it
    run.mark(f"cold request for cold-00001 to {ip}")
    cold, seconds = await direct(run, ip, "cold-00001", timeout=run.activation_timeout + 30)
    run.mark(f"cold request answered {cold} after {seconds:.1f}s")
    run.figures["cold_during_outage"] = {"answer": cold, "seconds": seconds}
    run.check(f"a cold request during the outage is answered 503 within the activation timeout "
              f"({run.activation_timeout:.0f}s) + 5 s, never hangs (got {cold} after {seconds:.1f}s)",
              cold == "503" and seconds <= run.activation_timeout + 5)  # fmt: skip
    await run.hold(API_DOWN_SECONDS)
    await asyncio.to_thread(start_apiserver, run.spec.state_dir)
    run.healed("kube-apiserver started again and ready")
    if await served(run, ip, "cold-00001", CONVERGE_SECONDS):
        run.converged("cold-00001 served from zero again")
    run.check("the cold revision is served after the restart", run.converged_at is not None)
    _relists(run, marks, "since_the_stop")


def _relists(run: Run, marks: dict[Any, int], when: str) -> None:
    gone = log_lines_since(run.spec.state_dir, marks, "too old, re-listing")
    failed = log_lines_since(run.spec.state_dir, marks, "reconnecting in")
    run.figures[f"watch_410_relists_{when}"] = gone
    run.figures[f"watch_failures_{when}"] = failed
    run.notes.append(f"{when.replace('_', ' ')}, from the daemons' logs (no metric counts re-lists): watches "
                     f"re-listed after 410 Gone {gone}; watch failures (a re-list follows the second in a row) "
                     f"{failed}")  # fmt: skip


# -- 6: etcd compacted ---------------------------------------------------------------------------------------------


async def etcd_compacted(run: Run) -> None:
    activators = [p["status"]["podIP"] for p in await activator_pods(run.kube) if is_ready(p)]
    marks = log_marks(run.spec.state_dir)
    run.begin("etcd compaction")
    revision = await compact_etcd(run.http, run.spec)
    run.took_effect()
    run.mark(f"etcd compacted at revision {revision}")
    await _new_revision_everywhere(run, "late-00001", activators, 30)
    _relists(run, marks, "after_the_compaction")
    # Established watches are served from the API server's watch cache, which compaction does not touch: what
    # makes every watch resume from a compacted version is the API server's cache starting afresh.
    await asyncio.to_thread(stop_apiserver, run.spec.state_dir)
    run.mark("kube-apiserver stopped (watches must resume on a compacted store)")
    await asyncio.to_thread(start_apiserver, run.spec.state_dir)
    run.healed("kube-apiserver started again and ready")
    if await _new_revision_everywhere(run, "later-00001", activators, 90):
        run.converged("a revision created right after the restart served by every activator")
    _relists(run, marks, "after_the_restart")


async def _new_revision_everywhere(run: Run, name: str, activators: list[str], timeout: float) -> bool:
    """Create revision ``name`` (at zero) and ask every activator for it at once until each answers 200: when did
    each know it (its first answer other than 404 unknown_revision: no missed event), when did each serve it."""
    await run.kube.create(r.REVISIONS, sample_revision(name, run.namespace), run.namespace)
    created = run.now()
    run.mark(f"{name} created")
    learned = await asyncio.gather(*(_learns(run, ip, name, created, timeout) for ip in activators))
    run.figures[name] = {ip: {"knew_after_s": k, "served_after_s": s, "answers": a}
                         for ip, (k, s, a) in zip(activators, learned, strict=True)}  # fmt: skip
    run.notes.append(f"{name}: seconds from its creation until each activator knew it / served it, and its answers: "
                     f"{run.figures[name]}")  # fmt: skip
    run.check(f"every activator knew {name} (created after the fault) within 30 s: no missed event",
              all(k is not None and k <= 30 for k, _, _ in learned))  # fmt: skip
    await _creation_chain(run, name)
    return run.check(f"every activator served {name} within {timeout:.0f} s", all(s is not None for _, s, _ in learned))


async def _creation_chain(run: Run, name: str) -> None:
    """When the revision's Deployment (the Knative stand-in) and ReplicaSet (kube-controller-manager) appeared,
    after the Revision: local scheduling needs the ReplicaSet (``NoReplicaSet`` sends a cold start the standard
    way)."""
    selector = f"serving.knative.dev/revision={name}"
    revision = await run.kube.get(r.REVISIONS, name, run.namespace)
    deployment = await run.kube.get(r.DEPLOYMENTS, f"{name}-deployment", run.namespace)
    sets = (await run.kube.list(r.REPLICASETS, run.namespace, label_selector=selector)).get("items", [])
    born = timestamps.epoch_seconds(revision["metadata"]["creationTimestamp"])
    chain = {"deployment": timestamps.epoch_seconds(deployment["metadata"]["creationTimestamp"]) - born}
    if sets:
        chain["replicaset"] = min(timestamps.epoch_seconds(s["metadata"]["creationTimestamp"]) for s in sets) - born
    run.figures.setdefault("created_after_revision_s", {})[name] = chain
    run.notes.append(f"{name}: created after the Revision (API timestamps, 1 s resolution): "
                     + ", ".join(f"its {kind} {after:+.0f} s" for kind, after in chain.items()))  # fmt: skip


async def _learns(
    run: Run, ip: str, revision: str, created: float, timeout: float
) -> tuple[float | None, float | None, list[str]]:
    """Ask the activator at ``ip`` for ``revision`` until it answers 200: (seconds from the creation until it
    knew the revision, until it served it, its answers squeezed)."""
    knew = None
    answers: list[tuple[float, str, float]] = []
    while run.now() - created < timeout:
        answer, took = await direct(run, ip, revision, timeout=run.activation_timeout + 10)
        answers.append((run.since_fault(), answer, took))
        if knew is None and answer != "404" and answer.isdigit():
            knew = round(run.now() - took - created, 2)  # it knew when this request arrived
        if answer == "200":
            run.mark(f"{revision} served by {ip}")
            return knew, round(run.now() - created, 2), _squeeze(answers)
        if not answer.isdigit() or answer == "404":
            await asyncio.sleep(0.2)  # paces the asking while the activator's cache catches up
    run.mark(f"NOT within {timeout:.0f}s: {revision} served by {ip}")
    return knew, None, _squeeze(answers)


# -- 7: the autoscaler stand-in killed -----------------------------------------------------------------------------


async def prepare_cold_pair(run: Run) -> None:
    for name, extra in (("local-00001", {}), ("standard-00001", STANDARD)):
        await run.kube.create(r.REVISIONS, sample_revision(name, run.namespace, annotations=extra), run.namespace)
        await wait_deployment(run.kube, run.namespace, name)


async def autoscaler_killed(run: Run) -> None:
    ip = run.slices.addresses(run.revision)[0].partition(":")[0]
    run.begin("SIGKILL the autoscaler stand-in")
    await asyncio.to_thread(controlplane.kill_autoscaler, run.spec.state_dir)
    run.took_effect()
    timeout = run.activation_timeout + 30
    local, standard = await asyncio.gather(direct(run, ip, "local-00001", timeout=timeout),
                                           direct(run, ip, "standard-00001", timeout=timeout))  # fmt: skip
    run.mark(f"cold requests during the outage: local path {local[0]} in {local[1]:.1f}s, standard path "
             f"{standard[0]} in {standard[1]:.1f}s")  # fmt: skip
    run.figures["cold_during_outage"] = {"local": local, "standard": standard}
    run.check(f"a local cold start during the outage is served (got {local[0]})", local[0] == "200")
    await run.hold(AUTOSCALER_DOWN_SECONDS)
    await asyncio.to_thread(controlplane.revive_autoscaler, run.spec.state_dir)
    run.healed("autoscaler stand-in started again")

    async def reporting() -> bool:
        ips = [p["status"]["podIP"] for p in await activator_pods(run.kube)]
        texts = [await scrape(run.http, a) or "" for a in ips]
        return all(metric_value(t, "activator_stat_destination_connected", destination="autoscaler") == 1
                   for t in texts)  # fmt: skip

    if await run.until(reporting, CONVERGE_SECONDS, "every activator reports to the autoscaler again"):
        run.converged("every activator connected to the autoscaler")
    answer = await direct(run, ip, "standard-00001", timeout=run.activation_timeout + 30)
    run.mark(f"standard-path cold request after the revival: {answer[0]} in {answer[1]:.1f}s")
    run.check(f"a standard-path cold start is served once the autoscaler is back (got {answer[0]})", answer[0] == "200")


SCENARIOS = (
    Scenario("node-killed", "node killed, then revived",
             "node Ready again, its activator Ready and back in the slice, all app pods Ready (from the revival)",
             node_killed, all_ok=False),
    Scenario("node-hung", "node hung (SIGSTOP, packets dropped), then resumed",
             "node Ready again, its activator Ready and back in the slice, all app pods Ready (from the resume)",
             node_hung, all_ok=False),
    Scenario("activator-killed", "one activator SIGKILLed, restarted by its kubelet",
             "the restarted activator Ready and back in the slice (from the kill)",
             activator_killed, prepare_queued, after=queued_pods, all_ok=False),
    Scenario("leader-killed", "endpointsctl leader SIGKILLed",
             "handover: another replica holds the Lease and reports endpointsctl_leader 1 (from the kill)",
             leader_killed, after=slice_unchanged),
    Scenario("apiserver-down", f"kube-apiserver stopped for {API_DOWN_SECONDS:.0f} s",
             "a revision at zero is served from zero again (from the restart)", apiserver_down, prepare_cold),
    Scenario("etcd-compacted", "etcd compacted, then the API server restarted on it",
             "a revision created right after the restart is served by every activator (from the restart)",
             etcd_compacted),
    Scenario("autoscaler-killed", f"autoscaler stand-in killed for {AUTOSCALER_DOWN_SECONDS:.0f} s",
             "every activator reports to the autoscaler again (from the revival)", autoscaler_killed,
             prepare_cold_pair),
)  # fmt: skip


__all__ = ["SCENARIOS", "SYSTEM_NAMESPACE", "Run", "Scenario"]
