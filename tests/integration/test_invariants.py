"""Randomized invariants of local scheduling: three activators racing, pods deleted, one activator killed.

One seeded run (``LOCALSCHED_TEST_SEED=<n>`` replays a plan; the seed is printed and in every assertion message)
creates 24 revisions with maxScale 1 to 3 and containerConcurrency 1 or 2, and sends 300 cold-start requests in
bursts of 2 to 10 to the devcluster's three DaemonSet activators, each request holding its pod a moment (the sample
app's ``?sleep``) so that a burst wants more pods than maxScale allows. Five closed-loop clients take the bursts in
order: no timer paces the load. Meanwhile, at seeded points of the run's progress (requests answered), ten random
pods of these revisions are deleted, and one activator is SIGKILLed (at the first pod it writes once a quarter of
the requests are answered, or at half of them) and restarted by its kubelet.

Invariants:

1. **maxScale.** At no event of a pod watch are more of a revision's pods Running, Ready and not terminating than
   its maxScale; at no event of a Deployment watch are its replicas above it; nor did more pods serve at once by
   the answers (a pod serves from its first answer to its last, or until its deletion is seen: a stand-in whose
   activator was killed before handing it over stays Running, but nothing forwards to it any more).
2. **No leaked pod.** Once every request is answered and the killed activator is back, every pod an activator wrote
   (label ``localsched.dev/scheduled-by``) is its ReplicaSet's, or gone, within ``LEAK_DEADLINE``. The grace the
   code gives a stand-in (docs/local-scheduling.md, ``activator/recovering.py``): its creator's cold start hands it
   over or deletes it; the restarted activator deletes its dead predecessor's as it sees them; a 600 s backstop
   catches a stand-in a live creator forgot. Once nothing waits, a cold start here ends within seconds (the pod
   boots, the claim is decided, the hand-over follows), so one still unowned after ``LEAK_DEADLINE`` is a cold
   start that outlived its demand, or a leak. (The revisions stay: deleting them only hands their pods to the
   garbage collector, which takes some 20 s here; a stand-in left then would have been caught by this check.)
3. **Every request answered.** 2xx, or 503 with ``Retry-After`` and a documented reason (``queue_full``,
   ``activation_timeout``: docs/troubleshooting.md). Without an answer, only requests to the killed activator:
   *refused* (a connect error: nothing was sent, a gateway retries it) when their lifetime overlaps its outage (the
   SIGKILL until its pod is Ready again), or *cut* (another transport error) when they were sent before its process
   was gone (in flight, or queued on its listening socket), which no process can answer. Each request opens its own
   connection, so no stale keep-alive blurs the two. The client timeout is above the activation timeout: a hang is
   a timeout.

Every violation is reported with its revision's timeline (pod and replica changes, the test's deletions, the
SIGKILL and the activator's return, in seconds from a wall-clock t=0 that lines up with the daemons' logs); the
whole run, with the activators' cold-start journals of the revisions concerned, goes to a JSON file in tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from devcluster.daemons import container_pid
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import NotFound
from localsched.kube.watching import Event, WatchCache
from localsched.predicates import is_ready
from tests.integration.activators import NodeActivator, daemonset_activators
from tests.integration.kit import most_serving_at_once, wait_for, watching

SEED_ENV = "LOCALSCHED_TEST_SEED"
SYSTEM_NAMESPACE = "localsched-system"
SCHEDULED_BY = "localsched.dev/scheduled-by"
CREATOR = "localsched.dev/activator"
REVISION_LABELS = ("serving.knative.dev/revision", "localsched.dev/revision")  # Knative's; on stand-ins, ours too
MAX_SCALE = "autoscaling.knative.dev/max-scale"

REVISIONS = 24
REQUESTS = 300
CLIENTS = 5
BURST_SIZES = (2, 10)
HOLD_SECONDS = (0.05, 0.4)  # how long a request holds its pod (the sample app's ?sleep)
DELETIONS = 10
DELETE_BETWEEN = (0.08, 0.85)  # of the requests answered
KILL_ARMED, KILL_LATEST = 0.25, 0.5  # of the requests answered
ACTIVATION_TIMEOUT = 120.0  # the activators' default (LOCALSCHED_ACTIVATION_TIMEOUT_SECONDS)
CLIENT_TIMEOUT = ACTIVATION_TIMEOUT + 10.0
LEAK_DEADLINE = 30.0
BACK_DEADLINE = 60.0
# The refusal bodies name no reason label; their wording does (activator/proxying.py, Proxy._refusal).
DOCUMENTED_503 = {"queue_full": "requests queued already", "activation_timeout": "had no capacity within"}


# -- the plan: everything random, drawn from the seed before anything runs ------------------------------------------


@dataclass(frozen=True)
class Shot:
    node: str  # the activator it is sent to
    hold: float


@dataclass(frozen=True)
class Burst:
    revision: str
    shots: tuple[Shot, ...]


@dataclass(frozen=True)
class Plan:
    seed: int
    max_scale: dict[str, int]
    concurrency: dict[str, int]
    bursts: tuple[Burst, ...]
    deletions_at: tuple[int, ...]  # requests answered when a pod is deleted
    victim: str  # the node whose activator is killed


def make_plan(seed: int, nodes: list[str]) -> Plan:
    rng = random.Random(seed)
    names = [f"inv{i:02d}-00001" for i in range(REVISIONS)]
    max_scale = {name: rng.randint(1, 3) for name in names}
    concurrency = {name: rng.randint(1, 2) for name in names}
    bursts: list[Burst] = []
    left = REQUESTS
    while left:
        size = min(left, rng.randint(*BURST_SIZES))
        revision = rng.choice(names)
        bursts.append(Burst(revision, tuple(Shot(rng.choice(nodes), round(rng.uniform(*HOLD_SECONDS), 2))
                                            for _ in range(size))))  # fmt: skip
        left -= size
    low, high = (int(f * REQUESTS) for f in DELETE_BETWEEN)
    deletions = tuple(sorted(rng.sample(range(low, high), DELETIONS)))
    return Plan(seed, max_scale, concurrency, tuple(bursts), deletions, rng.choice(nodes))


def seed_of_run() -> int:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else random.SystemRandom().randrange(2**32)


# -- what the cluster did, from watches -----------------------------------------------------------------------------


def revision_of(pod: Obj) -> str:
    labels = pod["metadata"].get("labels") or {}
    return next((labels[k] for k in REVISION_LABELS if k in labels), "")


def owned_by_replicaset(pod: Obj) -> bool:
    return any(o.get("kind") == "ReplicaSet" and o.get("controller") for o in pod["metadata"].get("ownerReferences")
               or [])  # fmt: skip


def is_serving(pod: Obj) -> bool:
    """Running, Ready and not terminating: in the revision's endpoints, as the API sees it."""
    return (pod.get("status", {}).get("phase") == "Running" and is_ready(pod)
            and not pod["metadata"].get("deletionTimestamp"))  # fmt: skip


def wall_clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def describe(pod: Obj) -> str:
    meta, status = pod["metadata"], pod.get("status", {})
    labels = meta.get("labels") or {}
    kind = "rs" if owned_by_replicaset(pod) else "stand-in" if SCHEDULED_BY in labels else "unowned"
    creator = (meta.get("annotations") or {}).get(CREATOR, labels.get(SCHEDULED_BY))
    by = f" by {creator}" if SCHEDULED_BY in labels else ""
    state = " TERMINATING" if meta.get("deletionTimestamp") else ""
    return (f"{meta['name']} [{kind}{by}] on {pod['spec'].get('nodeName') or '-'} {status.get('phase')} "
            f"ready={is_ready(pod)}{state}")  # fmt: skip


@dataclass
class Observer:
    """Invariant 1 at every watch event, and a timeline per revision to explain a violation."""

    plan: Plan
    pods: WatchCache
    t0: float  # time.monotonic() at the start: the timeline's offsets count from it
    t0_wall: str = field(default_factory=lambda: wall_clock(time.time()))  # to line up with the daemons' logs
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (seconds, revision or "*", what)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (revision, what)
    most_serving: dict[str, int] = field(default_factory=dict)
    most_replicas: dict[str, int] = field(default_factory=dict)
    terminating_at: dict[str, float] = field(default_factory=dict)  # pod -> when its deletion was first seen
    created: list[str] = field(default_factory=list)
    stand_ins: list[str] = field(default_factory=list)
    _last: dict[str, str] = field(default_factory=dict)  # pod -> as last noted
    _over: dict[str, list[str]] = field(default_factory=dict)  # revision -> the last pods serving above maxScale
    _replicas: dict[str, int] = field(default_factory=dict)  # revision -> as last noted

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def note(self, revision: str, what: str) -> None:
        self.timeline.append((self.now(), revision, what))

    def on_pod(self, event: Event) -> None:
        pod, revision = event.obj, revision_of(event.obj)
        if revision not in self.plan.max_scale:
            return
        name = pod["metadata"]["name"]
        if event.type == "ADDED":
            self.created.append(name)
            if SCHEDULED_BY in (pod["metadata"].get("labels") or {}):
                self.stand_ins.append(name)
        if event.type == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            self.terminating_at.setdefault(name, time.monotonic())
        seen = "DELETED " + name if event.type == "DELETED" else describe(pod)
        if self._last.get(name) != seen:
            self._last[name] = seen
            self.note(revision, seen)
        serving = sorted(p["metadata"]["name"] for p in self.pods if revision_of(p) == revision and is_serving(p))
        self.most_serving[revision] = max(self.most_serving.get(revision, 0), len(serving))
        cap = self.plan.max_scale[revision]
        if len(serving) > cap and self._over.get(revision) != serving:  # once per set of pods
            self._over[revision] = serving
            what = f"{len(serving)} pods serving (Running, Ready, not terminating) at {self.now()}s, maxScale {cap}"
            self.violations.append((revision, f"{what}: {serving}"))

    def on_deployment(self, event: Event) -> None:
        revision = event.obj["metadata"]["name"].removesuffix("-deployment")
        if revision not in self.plan.max_scale or event.type == "DELETED":
            return
        replicas = int(event.obj["spec"].get("replicas") or 0)
        if replicas == self._replicas.get(revision):
            return
        self._replicas[revision] = replicas
        self.note(revision, f"deployment replicas={replicas}")
        self.most_replicas[revision] = max(self.most_replicas.get(revision, 0), replicas)
        if replicas > self.plan.max_scale[revision]:
            what = f"Deployment replicas {replicas} at {self.now()}s, maxScale {self.plan.max_scale[revision]}"
            self.violations.append((revision, what))


# -- the failures injected ------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    """Pod deletions at the plan's progress points; the victim activator's SIGKILL, and its return."""

    plan: Plan
    kube: KubeClient
    namespace: str
    observer: Observer
    victim_pod: Obj  # the victim activator's pod before the kill
    rng: random.Random = field(init=False)
    answered: int = 0
    deletions: deque[int] = field(init=False)
    deleted: list[str] = field(default_factory=list)
    killed_at: float | None = None  # the SIGKILL
    dead_at: float | None = None  # the process gone (its pidfd readable): its listening socket closed
    running_at: float | None = None  # the kubelet reports the restarted container running
    back_at: float | None = None  # ... and the pod Ready
    kill_reason: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _seen: str = ""

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.plan.seed}/chaos")  # the choices made while running
        self.deletions = deque(self.plan.deletions_at)

    @property
    def victim_uid(self) -> str:
        return str(self.victim_pod["metadata"]["uid"])

    @property
    def window(self) -> Window:
        return Window(self.killed_at or math.inf, self.dead_at or math.inf, self.back_at or math.inf)

    def on_answer(self) -> None:
        self.answered += 1
        while self.deletions and self.answered >= self.deletions[0] and self._delete_a_pod():
            self.deletions.popleft()
        if self.killed_at is None and self.answered >= KILL_LATEST * REQUESTS:
            self._kill(f"at {self.answered} requests answered")

    def on_pod(self, event: Event) -> None:
        """Kill the victim as a pod it wrote appears, once armed: it dies in the middle of that cold start."""
        labels = event.obj["metadata"].get("labels") or {}
        armed = self.killed_at is None and self.answered >= KILL_ARMED * REQUESTS
        if armed and event.type == "ADDED" and labels.get(SCHEDULED_BY) == self.plan.victim:
            self._kill(f"as its pod {event.obj['metadata']['name']} appeared ({self.answered} requests answered)")

    def on_activator(self, event: Event) -> None:
        """Note the victim's way back; it is back once Ready in a restarted container."""
        pod = event.obj
        if self.killed_at is None or self.back_at is not None or pod["metadata"]["uid"] != self.victim_uid:
            return
        container = (pod["status"].get("containerStatuses") or [{}])[0]
        restarts = container.get("restartCount", 0)
        seen = f"activator {pod['metadata']['name']}: restarts {restarts}, {list(container.get('state') or {})}"
        seen += f", ready={is_ready(pod)}"
        if seen != self._seen:
            self._seen = seen
            self.observer.note("*", seen)
        restarted = restarts > self.victim_pod["status"]["containerStatuses"][0]["restartCount"]
        if restarted and "running" in (container.get("state") or {}) and self.running_at is None:
            self.running_at = time.monotonic()
        if restarted and is_ready(pod):
            self.back_at = time.monotonic()
            self.observer.note("*", f"activator {pod['metadata']['name']} on {self.plan.victim} Ready again")

    def _kill(self, why: str) -> None:
        """SIGKILL the victim, and learn when it is gone: until then its listening socket still completes
        handshakes, and what it queued is reset when it dies (a request cut, not refused)."""
        loop = asyncio.get_running_loop()
        self.kill_reason = why
        try:
            pidfd = os.pidfd_open(container_pid(self.victim_pod))
        except ProcessLookupError:
            self.killed_at = self.dead_at = time.monotonic()
        else:
            self.killed_at = time.monotonic()
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            loop.add_reader(pidfd, self._died, pidfd)
        self.observer.note(
            "*",
            f"SIGKILL activator {self.victim_pod['metadata']['name']} on {self.plan.victim} {why}",
        )

    def _died(self, pidfd: int) -> None:
        self.dead_at = time.monotonic()
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        self.observer.note("*", f"activator {self.victim_pod['metadata']['name']} process gone")

    def _delete_a_pod(self) -> bool:
        ours = [p for p in self.observer.pods if revision_of(p) in self.plan.max_scale]
        pods = sorted(p["metadata"]["name"] for p in ours if not p["metadata"].get("deletionTimestamp"))
        if not pods:
            return False  # none right now: at the next answer
        name = self.rng.choice(pods)
        pod = self.observer.pods.get(name, self.namespace)
        self.deleted.append(name)
        self.observer.note(revision_of(pod) if pod else "*", f"test deletes {describe(pod) if pod else name}")
        task = asyncio.get_running_loop().create_task(self._delete(name), name=f"delete:{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _delete(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.kube.delete(r.PODS, name, self.namespace)


# -- the load -------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    revision: str
    node: str
    hold: float
    sent: float
    ended: float = 0.0
    status: int | None = None
    body: str = ""
    retry_after: str | None = None
    pod: str = ""
    error: str = ""  # without an answer: what the client raised
    connect_error: bool = False


@dataclass(frozen=True)
class Window:
    """The victim activator's outage, in monotonic seconds: killed, its process gone, Ready again."""

    killed: float
    dead: float
    back: float


def category(outcome: Outcome, victim: str, down: Window) -> str:
    """What invariant 3 makes of a request's outcome; a violation starts with "VIOLATION".

    Without an answer, a request to the victim is *refused* if it was refused while the victim was down, *cut* if
    any other transport error ended it after the SIGKILL and it was sent before the process was gone (in flight,
    or accepted by the dying process's listening socket)."""
    if outcome.status is not None:
        if 200 <= outcome.status < 300:
            return "2xx"
        reason = next((k for k, phrase in DOCUMENTED_503.items() if phrase in outcome.body), None)
        if outcome.status == 503 and outcome.retry_after and reason:
            return f"503 {reason}"
        return f"VIOLATION {outcome.status} (Retry-After {outcome.retry_after}): {outcome.body.strip()[:200]!r}"
    if outcome.node == victim and outcome.ended >= down.killed and outcome.sent <= down.back:
        if outcome.connect_error:
            return "refused while down"
        if outcome.sent < down.dead:
            return "cut by the kill"
    return f"VIOLATION no answer: {outcome.error}"


async def send(http: httpx.AsyncClient, activator: NodeActivator, namespace: str, revision: str, shot: Shot,
               chaos: Chaos, outcomes: list[Outcome]) -> None:  # fmt: skip
    outcome = Outcome(revision, shot.node, shot.hold, time.monotonic())
    try:
        answer = await http.get(f"{activator.url}/", params={"sleep": shot.hold},
                                headers=activator.headers(namespace, revision))  # fmt: skip
        outcome.status, outcome.body = answer.status_code, answer.text
        outcome.retry_after = answer.headers.get("Retry-After")
        if answer.status_code == 200:
            outcome.pod = answer.json().get("pod", "")
    except httpx.ConnectError as exc:
        outcome.error, outcome.connect_error = f"{type(exc).__name__}: {exc}", True
    except httpx.TimeoutException as exc:  # a connect timeout, or a hang: no answer within the client's timeout
        outcome.error = f"{type(exc).__name__} after {time.monotonic() - outcome.sent:.1f}s (a hang)"
    except httpx.TransportError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.ended = time.monotonic()
        outcomes.append(outcome)
        chaos.on_answer()


async def client(http: httpx.AsyncClient, activators: dict[str, NodeActivator], namespace: str,
                 bursts: deque[Burst], chaos: Chaos, outcomes: list[Outcome]) -> None:  # fmt: skip
    """A closed-loop client: the next burst once every request of its last one is answered."""
    while bursts:
        burst = bursts.popleft()
        await asyncio.gather(*(send(http, activators[s.node], namespace, burst.revision, s, chaos, outcomes)
                               for s in burst.shots))  # fmt: skip


# -- setting up, and the end -----------------------------------------------------------------------------------------


async def create_revisions(kube: KubeClient, namespace: str, plan: Plan) -> None:
    """Every revision of the plan, at zero, with its ReplicaSet (a local cold start needs its template)."""
    await asyncio.gather(*(kube.create(r.REVISIONS, sample_revision(
        name, namespace, container_concurrency=plan.concurrency[name], cpu="50m",
        annotations={MAX_SCALE: str(plan.max_scale[name])}), namespace) for name in plan.max_scale))  # fmt: skip
    async with watching(kube, r.REPLICASETS, namespace) as replicasets:
        await wait_for(replicasets, lambda c: {revision_of(rs) for rs in c} >= set(plan.max_scale) or None)


@contextlib.asynccontextmanager
async def watched(kube: KubeClient, plan: Plan, namespace: str) -> AsyncIterator[tuple[Observer, WatchCache]]:
    """The namespace's pods and Deployments under the observer, and the activators' pods."""
    pods = WatchCache(kube, r.PODS, namespace=namespace, timeout_seconds=30)
    deployments = WatchCache(kube, r.DEPLOYMENTS, namespace=namespace, timeout_seconds=30)
    system = WatchCache(kube, r.PODS, namespace=SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/name=activator",
                        timeout_seconds=30)  # fmt: skip
    observer = Observer(plan, pods, time.monotonic())
    pods.add_handler(observer.on_pod)
    deployments.add_handler(observer.on_deployment)
    caches = (pods, deployments, system)
    for cache in caches:
        cache.start()
    try:
        for cache in caches:
            await cache.wait_synced(30)
        yield observer, system
    finally:
        for cache in caches:
            await cache.stop()


def leaked(pods: WatchCache) -> list[Obj]:
    return [p for p in pods if SCHEDULED_BY in (p["metadata"].get("labels") or {}) and not owned_by_replicaset(p)]


async def leak_check(observer: Observer) -> float:
    """Invariant 2: seconds until no pod an activator wrote is left without its ReplicaSet (a violation after
    ``LEAK_DEADLINE``)."""
    started = time.monotonic()
    try:
        await observer.pods.wait_for(lambda c: not leaked(c), LEAK_DEADLINE)
    except TimeoutError:
        for pod in leaked(observer.pods):
            meta = pod["metadata"]
            observer.violations.append((revision_of(pod), (
                f"leaked: {describe(pod)}, created {meta['creationTimestamp']} by "
                f"{(meta.get('annotations') or {}).get(CREATOR)}, still without its ReplicaSet {LEAK_DEADLINE:.0f}s "
                f"after the last answer; conditions {pod.get('status', {}).get('conditions')}")))  # fmt: skip
    return time.monotonic() - started


def check_answers(plan: Plan, observer: Observer, outcomes: list[Outcome]) -> None:
    """Invariant 1 from the answers: pods serve before the API calls them Ready."""
    for revision, cap in plan.max_scale.items():
        answers = [(o.ended, o.pod) for o in outcomes if o.revision == revision and o.pod]
        most, pods = most_serving_at_once(answers, observer.terminating_at)
        if most > cap:
            observer.violations.append((revision, f"{most} pods answered while none of them was seen terminating "
                                                  f"(maxScale {cap}): {sorted(pods)}"))  # fmt: skip


async def journals(http: httpx.AsyncClient, activators: dict[str, NodeActivator], keys: set[str]) -> list[Obj]:
    """The activators' cold starts of these revisions (``ns/rev``), for the evidence."""
    found: list[Obj] = []
    for activator in activators.values():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = await http.get(f"http://{activator.ip}:9090/debug/coldstarts")
            found += [{"activator": activator.node, **c} for c in answer.json() if c.get("revision") in keys]
    return found


def report(plan: Plan, observer: Observer, chaos: Chaos, outcomes: list[Outcome], elapsed: float,
           leak_seconds: float) -> str:  # fmt: skip
    categories = Counter(category(o, plan.victim, chaos.window) for o in outcomes)
    caps = dict(sorted(Counter(plan.max_scale.values()).items()))
    most: dict[int, tuple[int, int]] = {}  # maxScale -> the most serving pods and replicas of such a revision
    for revision, cap in plan.max_scale.items():
        serving, replicas = most.get(cap, (0, 0))
        most[cap] = (max(serving, observer.most_serving.get(revision, 0)),
                     max(replicas, observer.most_replicas.get(revision, 0)))  # fmt: skip
    killed, dead, running, back = (round((t or math.inf) - observer.t0, 3) for t in (
        chaos.killed_at, chaos.dead_at, chaos.running_at, chaos.back_at))  # fmt: skip
    return "; ".join([
        f"seed {plan.seed} ({SEED_ENV}={plan.seed} replays the plan); t=0s at {observer.t0_wall} (local time)",
        f"{len(outcomes)} requests to {len(plan.max_scale)} revisions (maxScale: revisions {caps}) in "
        f"{len(plan.bursts)} bursts over {elapsed:.1f}s: {dict(sorted(categories.items()))}",
        f"pods created {len(observer.created)} ({len(observer.stand_ins)} by activators), deleted by the test "
        f"{len(chaos.deleted)}",
        f"activator on {plan.victim} killed at {killed}s {chaos.kill_reason}, gone at {dead}s, running again at "
        f"{running}s, Ready at {back}s",
        f"most pods serving at once in the API and most replicas, by maxScale: {dict(sorted(most.items()))}",
        f"every activator-written pod its ReplicaSet's or gone {leak_seconds:.1f}s after the last answer",
    ])  # fmt: skip


def evidence(plan: Plan, observer: Observer, outcomes: list[Outcome], cold_starts: list[Obj], path: Path) -> str:
    """The violations with each revision's timeline; everything in ``path`` as JSON."""
    revisions = {rev for rev, _ in observer.violations}
    lines = [f"{rev}: {what}" for rev, what in observer.violations]
    for rev in sorted(revisions):
        lines.append(f"--- {rev} (maxScale {plan.max_scale.get(rev)}, containerConcurrency "
                     f"{plan.concurrency.get(rev)}) timeline:")  # fmt: skip
        lines += [f"  {at:8.3f}s {what}" for at, who, what in observer.timeline if who in (rev, "*")][-60:]
    everything = {"seed": plan.seed, "violations": observer.violations, "timeline": observer.timeline,
                  "outcomes": [asdict(o) for o in outcomes], "cold_starts": cold_starts}  # fmt: skip
    path.write_text(json.dumps(everything, indent=1))
    return "\n".join(lines) + f"\n(full timeline, outcomes and the activators' cold starts: {path})"


# -- the test -------------------------------------------------------------------------------------------------------


async def test_random_bursts_deletions_and_an_activator_restart_never_break_max_scale_leak_pods_or_drop_requests(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    activators = await daemonset_activators(kube)
    plan = make_plan(seed_of_run(), sorted(activators))
    print(f"\nseed {plan.seed}: {SEED_ENV}={plan.seed} replays this plan")
    victim_pod = await kube.get(r.PODS, activators[plan.victim].pod, SYSTEM_NAMESPACE)
    await create_revisions(kube, namespace, plan)
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)  # a connection per request
    async with watched(kube, plan, namespace) as (observer, system), httpx.AsyncClient(
        timeout=httpx.Timeout(CLIENT_TIMEOUT, connect=5), limits=limits, trust_env=False
    ) as load:  # fmt: skip
        chaos = Chaos(plan, kube, namespace, observer, victim_pod)
        observer.pods.add_handler(chaos.on_pod)
        system.add_handler(chaos.on_activator)
        bursts = deque(plan.bursts)
        await asyncio.gather(*(client(load, activators, namespace, bursts, chaos, outcomes) for _ in range(CLIENTS)))
        elapsed = time.monotonic() - observer.t0
        await asyncio.gather(*chaos.tasks)
        try:  # the kubelet restarts it: leave the cluster as found, and let it clean up after its predecessor
            await system.wait_for(lambda _: chaos.back_at, BACK_DEADLINE)
        except TimeoutError:
            observer.violations.append(("*", f"the killed activator was not Ready again within {BACK_DEADLINE}s"))
        leak_seconds = await leak_check(observer)
        check_answers(plan, observer, outcomes)
        summary = report(plan, observer, chaos, outcomes, elapsed, leak_seconds)
        print(summary)
        print("\n".join(f"  {at:8.3f}s {what}" for at, who, what in observer.timeline if who == "*"))
        for o in outcomes:
            if (what := category(o, plan.victim, chaos.window)).startswith("VIOLATION"):
                observer.violations.append((o.revision, f"request to {o.node} sent at {o.sent - observer.t0:.3f}s, "
                                                         f"ended at {o.ended - observer.t0:.3f}s: {what}"))  # fmt: skip
        if observer.violations:
            keys = {f"{namespace}/{rev}" for rev, _ in observer.violations}
            cold_starts = await journals(http, activators, keys)
            details = evidence(plan, observer, outcomes, cold_starts, tmp_path / "invariants-evidence.json")
            raise AssertionError(f"{len(observer.violations)} invariant violations; {summary}\n{details}")
