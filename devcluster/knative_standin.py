"""TEST SCAFFOLDING — a stand-in for Knative Serving's revision reconciler, which cannot run on the devcluster.

For every ``serving.knative.dev/v1`` Revision it creates what Knative would and what localsched reads:

* ``{rev}-deployment``: the revision's pod spec with Knative's labels (``serving.knative.dev/revision`` ...),
  ``PORT`` set to the container port and a readiness probe (the user's, else TCP on the port). A probe port of 0
  (how Knative's defaulting writes "the user port") becomes the user port, as Knative's reconciler rewrites it. It
  is created at ``min-scale`` replicas (0 by default) and its replicas are never touched again: scaling is for the
  activator and the autoscaler, not for this stand-in. There is no queue-proxy; the private Service targets the
  user container.
* ``{rev}-private``: a ClusterIP Service selecting the revision's pods (the EndpointSlice controller publishes them,
  not-ready ones included, marked so).

Both select by ``serving.knative.dev/revisionUID``, as Knative's Deployment and SKS private Service do.

Both are owned by the Revision, so deleting the Revision garbage-collects them. The Revision's ``Ready`` condition
tells whether the reconcile succeeded, or why not: ``InvalidSpec`` (Knative's webhook would refuse the Revision),
``DeploymentInvalid``/``ServiceInvalid`` and ``...Forbidden`` (the API server refused the object, its message
quoted), ``...CreateFailed`` with status Unknown (the API server failed or was unreachable). A failed revision is
retried with exponential backoff (1 s doubling to 5 min; the attempt count and the next delay are in
``status.annotations``), from a timer, so one failing revision never holds up the others; an edit retries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from localsched import knative
from localsched.kube import resources as r
from localsched.kube import timestamps
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import AlreadyExists, KubeError, NotFound
from localsched.kube.watching import Event, Key, WatchCache, key_of
from localsched.probes import means_user_port, serving_container_index

log = logging.getLogger("knative-standin")

PROBE_PERIOD_ANNOTATION = "devcluster.localsched.dev/probe-period-ms"
DEFAULT_PROBE_PERIOD_MS = "50"  # queue-proxy's aggressive probing of a starting container
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
PORTED_HANDLERS = ("tcpSocket", "httpGet")

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
ATTEMPTS_ANNOTATION = "devcluster.localsched.dev/reconcile-attempts"
RETRY_IN_ANNOTATION = "devcluster.localsched.dev/retry-in-seconds"
MESSAGE_LIMIT = 1000  # enough for every cause of an Invalid; a condition is read by people, not parsed
WORKERS = 4


def owner_reference(revision: Obj) -> Obj:
    meta = revision["metadata"]
    return {"apiVersion": knative.REVISION_API_VERSION, "kind": "Revision", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def with_user_port_probes(container: Obj, user_port: int) -> Obj:
    """A copy of the serving ``container`` whose probes name ``user_port`` where they meant it.

    Knative's defaulting writes ``readinessProbe: {tcpSocket: {port: 0}}`` for "the user port", and its revision
    reconciler puts the real port in before the Deployment is written (the API server refuses port 0). The same
    for ``httpGet`` and for liveness and startup probes; explicit and named ports are left for the API server to
    judge, as are shapes that are not objects.
    """
    result = copy.deepcopy(container)
    for probe_name in PROBES:
        probe = result.get(probe_name)
        if not isinstance(probe, dict):
            continue
        for handler_name in PORTED_HANDLERS:
            handler = probe.get(handler_name)
            if isinstance(handler, dict) and means_user_port(handler.get("port")):
                handler["port"] = user_port
    return result


def desired_deployment(revision: Obj, rev: knative.Revision) -> Obj:
    labels = {
        **{k: v for k, v in rev.labels.items() if k.startswith("serving.knative.dev/")},
        knative.REVISION_LABEL: rev.name,
        knative.REVISION_UID_LABEL: rev.uid,
    }
    pod_spec: Obj = copy.deepcopy(dict(rev.pod_spec))
    pod_spec.setdefault("enableServiceLinks", False)
    containers = pod_spec.get("containers")
    index = serving_container_index(containers) if isinstance(containers, list) else None
    if isinstance(containers, list) and index is not None and isinstance(containers[index], dict):
        port = rev.container_port  # the serving container's first port, else Knative's default
        user = with_user_port_probes(containers[index], port)
        if not user.get("ports"):
            user["ports"] = [{"containerPort": port, "name": "user-port"}]
        env = user.setdefault("env", [])
        if isinstance(env, list) and not any(isinstance(e, dict) and e.get("name") == "PORT" for e in env):
            env.append({"name": "PORT", "value": str(port)})
        user.setdefault("readinessProbe", {"tcpSocket": {"port": port}, "periodSeconds": 1, "successThreshold": 1})
        containers[index] = user
    annotations = {PROBE_PERIOD_ANNOTATION: DEFAULT_PROBE_PERIOD_MS, **rev.annotations}
    return {
        "metadata": {
            "name": rev.deployment_name,
            "namespace": rev.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(revision)],
        },
        "spec": {
            "replicas": rev.min_scale,
            "selector": {"matchLabels": {knative.REVISION_UID_LABEL: rev.uid}},
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def desired_private_service(revision: Obj, rev: knative.Revision) -> Obj:
    return {
        "metadata": {
            "name": rev.private_service_name,
            "namespace": rev.namespace,
            "labels": {knative.REVISION_LABEL: rev.name, knative.SERVICE_TYPE_LABEL: "Private"},
            "ownerReferences": [owner_reference(revision)],
        },
        "spec": {
            "selector": {knative.REVISION_UID_LABEL: rev.uid},
            "ports": [{"name": "http", "port": 80, "targetPort": rev.container_port, "protocol": "TCP"}],
        },
    }


# -- failures and backoff ----------------------------------------------------------------------------------------


def backoff_delay(failures: int, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_MAX_SECONDS) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed reconciles in a row: ``base``, doubling, at most ``cap``.

    As client-go's per-item exponential rate limiter: a revision the API server keeps refusing costs a request
    every few minutes, not every second, while a blip is retried at once.
    """
    return min(cap, base * 2.0 ** min(max(failures, 1) - 1, 62))


@dataclass(frozen=True)
class Failure:
    """Why a reconcile failed, as the Revision's ``Ready`` condition tells it."""

    status: str  # "False": the API server refused the object; "Unknown": it failed or was not reached
    reason: str
    message: str
    retry_after: float | None = None  # the server's Retry-After (429), a floor under the backoff


class CreateFailed(Exception):
    """Creating the revision's ``kind`` object failed; ``error`` is the API server's answer."""

    def __init__(self, kind: str, name: str, error: KubeError) -> None:
        super().__init__(f"creating {kind} {name}: {error}")
        self.kind = kind
        self.name = name
        self.error = error


def trimmed(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of at most ``limit`` characters: conditions are shown in ``kubectl get`` and ``describe``."""
    line = " ".join(message.split())
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


def failure_of(exc: CreateFailed) -> Failure:
    """The condition for a refused or failed create: ``{Kind}Invalid`` (400, 422), ``{Kind}Forbidden`` (403),
    ``{Kind}Rejected`` (another 4xx), ``{Kind}CreateFailed`` as Unknown (5xx, 429, no answer), with the API
    server's own message, which names the field at fault."""
    error = exc.error
    payload = error.payload if isinstance(error.payload, dict) else {}
    said = str(payload.get("message") or (error.args[0] if error.args else "") or f"HTTP {error.status}")
    if error.status == 0:
        said = f"creating {exc.kind} {exc.name}: the API server was not reached: {said}"
    elif error.status == 429 or error.status >= 500:
        said = f"creating {exc.kind} {exc.name}: {error.status} {error.reason}: {said}"
    if error.status in (400, 422):
        reason, status = "Invalid", "False"
    elif error.status == 403:
        reason, status = "Forbidden", "False"
    elif 400 <= error.status < 500 and error.status != 429:
        reason, status = "Rejected", "False"
    else:
        reason, status = "CreateFailed", "Unknown"
    return Failure(status, f"{exc.kind}{reason}", trimmed(said), error.retry_after)


def fingerprint(revision: Obj) -> tuple[Any, ...]:
    """What the Deployment and the Service are made from: the spec (by its generation), labels and annotations.

    A change to any of them ends a backoff (an edit retries at once); status writes, this stand-in's own
    included, do not, or every failure would trigger its own immediate retry.
    """
    meta = revision.get("metadata", {})
    return (
        meta.get("uid"),
        meta.get("generation"),
        json.dumps(meta.get("labels") or {}, sort_keys=True),
        json.dumps(meta.get("annotations") or {}, sort_keys=True),
    )


class Cancellable(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Cancellable]


@dataclass
class Backoff:
    """A revision's run of failed reconciles, while the same spec keeps failing."""

    fingerprint: tuple[Any, ...]
    failures: int = 0
    delay: float = 0.0
    timer: Cancellable | None = field(default=None, repr=False)  # the scheduled retry, until it fires


class StandIn:
    """Reconciles Revisions from a queue, as a Knative controller does from its workqueue.

    A key is queued at most once and reconciled by one worker at a time (an event during its reconcile queues it
    again for after). A failed key is not requeued at once: a timer puts it back after its backoff delay, and
    events that do not change what it is made from are ignored meanwhile.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        base_delay: float = BACKOFF_BASE_SECONDS,
        max_delay: float = BACKOFF_MAX_SECONDS,
        call_later: CallLater | None = None,
    ) -> None:
        self.client = client
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._call_later = call_later
        self.revisions = WatchCache(client, r.REVISIONS, name="revisions")
        self.revisions.add_handler(self._on_event)
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.pending: set[Key] = set()  # queued, or to be queued again once its reconcile ends
        self.active: set[Key] = set()  # being reconciled
        self.backoffs: dict[Key, Backoff] = {}

    # -- the queue ------------------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        key = key_of(event.obj)
        if event.type == "DELETED":
            self._forget(key)
            return
        backoff = self.backoffs.get(key)
        if backoff is not None:
            if backoff.fingerprint == fingerprint(event.obj):
                return  # its retry is scheduled; a status write must not bring it forward
            self._forget(key)  # edited: retry now, with a fresh backoff
        self.enqueue(key)

    def enqueue(self, key: Key) -> None:
        if key in self.pending:
            return
        self.pending.add(key)
        if key not in self.active:
            self.queue.put_nowait(key)

    def _forget(self, key: Key) -> None:
        backoff = self.backoffs.pop(key, None)
        if backoff is not None and backoff.timer is not None:
            backoff.timer.cancel()

    def _retry(self, key: Key) -> None:
        backoff = self.backoffs.get(key)
        if backoff is not None:
            backoff.timer = None
        self.enqueue(key)

    def _schedule(self, delay: float, key: Key) -> Cancellable:
        call_later = self._call_later or asyncio.get_running_loop().call_later
        return call_later(delay, lambda: self._retry(key))

    def _back_off(self, key: Key, revision: Obj, retry_after: float | None = None) -> Backoff:
        """Count a failure of ``revision`` and schedule its retry; a retry queued meanwhile for the same spec is
        dropped (the timer stands for it)."""
        fp = fingerprint(revision)
        backoff = self.backoffs.get(key)
        if backoff is None or backoff.fingerprint != fp:
            self._forget(key)
            backoff = self.backoffs[key] = Backoff(fp)
        if backoff.timer is not None:
            backoff.timer.cancel()
        backoff.failures += 1
        backoff.delay = backoff_delay(backoff.failures, self.base_delay, self.max_delay)
        if retry_after is not None:
            backoff.delay = max(backoff.delay, min(retry_after, self.max_delay))
        backoff.timer = self._schedule(backoff.delay, key)
        current = self.revisions.get(key[1], key[0])
        if current is not None and fingerprint(current) == fp:
            self.pending.discard(key)
        return backoff

    async def worker(self) -> None:
        while True:
            await self.work_once()

    async def work_once(self) -> None:
        """Take a key off the queue (waiting for one) and reconcile it; queued again meanwhile, it goes back."""
        key = await self.queue.get()
        self.pending.discard(key)
        self.active.add(key)
        try:
            await self.process(key)
        finally:
            self.active.discard(key)
            if key in self.pending:
                self.queue.put_nowait(key)

    async def process(self, key: Key) -> None:
        """Reconcile one revision; on failure, say why on the Revision and schedule the retry."""
        revision = self.revisions.get(key[1], key[0])
        if revision is None:
            self._forget(key)
            return
        try:
            await self.reconcile(revision)
        except CreateFailed as exc:
            failure = failure_of(exc)
            backoff = self._back_off(key, revision, failure.retry_after)
            log.warning("revision %s/%s: %s; retry %d in %.0fs", *key, exc, backoff.failures, backoff.delay)
            if failure.status == "Unknown" and self._ready_now(revision):
                return  # created before: a failed re-check does not unmake it
            with contextlib.suppress(KubeError):  # the retry writes it again
                await self._condition(revision, failure.status, failure.reason, failure.message, backoff)
        except KubeError as exc:  # the status write itself
            backoff = self._back_off(key, revision, exc.retry_after)
            log.warning("revision %s/%s: status: %s; retry %d in %.0fs", *key, exc, backoff.failures, backoff.delay)
        except Exception:  # a bug here must not take a worker down; the revision is retried like any failure
            backoff = self._back_off(key, revision)
            log.exception("revision %s/%s: reconcile failed; retry %d in %.0fs", *key, backoff.failures, backoff.delay)
        else:
            self._forget(key)

    # -- the reconcile --------------------------------------------------------------------------------------------

    async def reconcile(self, revision: Obj) -> None:
        try:
            rev = knative.Revision.from_object(revision)
        except ValueError as exc:
            await self._condition(revision, "False", "InvalidSpec", trimmed(str(exc)))
            return
        for kind, resource, body in (("Deployment", r.DEPLOYMENTS, desired_deployment(revision, rev)),
                                     ("Service", r.SERVICES, desired_private_service(revision, rev))):  # fmt: skip
            try:
                with contextlib.suppress(AlreadyExists):
                    await self.client.create(resource, body, rev.namespace)
            except KubeError as exc:
                raise CreateFailed(kind, body["metadata"]["name"], exc) from exc
        await self._condition(revision, "True", "Reconciled", "deployment and private service exist")

    @staticmethod
    def _ready_now(revision: Obj) -> bool:
        status = revision.get("status") or {}
        ready: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return ready.get("status") == "True" and status.get("observedGeneration") == revision["metadata"].get(
            "generation", 1
        )

    async def _condition(
        self, revision: Obj, status: str, reason: str, message: str, backoff: Backoff | None = None
    ) -> None:
        """Write the ``Ready`` condition, and the retry count and delay while failing (cleared once not), unless
        the Revision already says so."""
        meta = revision["metadata"]
        status_now = revision.get("status") or {}
        current: Obj = next((c for c in status_now.get("conditions") or [] if c.get("type") == "Ready"), {})
        notes_now = status_now.get("annotations") or {}
        generation = meta.get("generation", 1)
        notes: dict[str, str | None] = {ATTEMPTS_ANNOTATION: None, RETRY_IN_ANNOTATION: None}
        if backoff is not None:
            notes = {ATTEMPTS_ANNOTATION: str(backoff.failures), RETRY_IN_ANNOTATION: f"{backoff.delay:g}"}
        seen = (current.get("status"), current.get("reason"), current.get("message"),
                status_now.get("observedGeneration"), *(notes_now.get(k) for k in notes))  # fmt: skip
        if seen == (status, reason, message, generation, *notes.values()):
            return
        since = current.get("lastTransitionTime") if current.get("status") == status else None
        condition = {"type": "Ready", "status": status, "reason": reason, "message": message,
                     "lastTransitionTime": since or timestamps.now()}  # fmt: skip
        body: dict[str, Any] = {"status": {"observedGeneration": generation, "conditions": [condition]}}
        if backoff is not None or any(k in notes_now for k in notes):
            body["status"]["annotations"] = notes  # None deletes, in a merge patch
        with contextlib.suppress(NotFound):
            await self.client.patch(r.REVISIONS, meta["name"], body, meta["namespace"], subresource="status")

    async def run(self) -> None:
        workers = [asyncio.create_task(self.worker(), name=f"worker-{i}") for i in range(WORKERS)]
        try:
            await self.revisions.run()
        finally:
            for w in workers:
                w.cancel()
            for backoff in self.backoffs.values():
                if backoff.timer is not None:
                    backoff.timer.cancel()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        async with await KubeClient.from_environment(user_agent="knative-standin") as client:
            await StandIn(client).run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
