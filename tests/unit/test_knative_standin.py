"""The devcluster's Knative stand-in: Revisions as Knative writes them, and failures that back off and say why.

The reconcile loop runs here against an in-memory API (a fake client whose writes come back as watch events, as
the real watch would deliver them) and a fake timer wheel: the backoff schedule is read off the timers it asks
for, and a retry happens when the test fires one. Nothing waits on a clock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from devcluster.knative_standin import (
    ATTEMPTS_ANNOTATION,
    BACKOFF_MAX_SECONDS,
    PROBE_PERIOD_ANNOTATION,
    RETRY_IN_ANNOTATION,
    CreateFailed,
    StandIn,
    backoff_delay,
    desired_deployment,
    failure_of,
    with_user_port_probes,
)
from localsched import knative
from localsched.kube import resources as r
from localsched.kube.errors import AlreadyExists, KubeConnectionError, KubeError, error_from_status
from localsched.kube.watching import Event

NS = "demo"
NAME = "hello-00001"
KEY = (NS, NAME)
Obj = dict[str, Any]


def revision(
    probe: Obj | None = None, *, name: str = NAME, generation: int = 1, containers: list[Obj] | None = None
) -> Obj:
    """A Revision as the API server returns it after Knative's defaulting."""
    user: Obj = {"name": "user-container", "image": "app", "ports": [{"containerPort": 8080, "name": "http1"}]}
    if probe is not None:
        user["readinessProbe"] = probe
    return {
        "apiVersion": knative.REVISION_API_VERSION,
        "kind": "Revision",
        "metadata": {
            "namespace": NS,
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": "1",
            "labels": {},
            "annotations": {},
        },
        "spec": {"containerConcurrency": 0, "containers": containers if containers is not None else [user]},
    }


def deployment_of(obj: Obj) -> Obj:
    return desired_deployment(obj, knative.Revision.from_object(obj))


def pod_containers(obj: Obj) -> list[Obj]:
    containers: list[Obj] = deployment_of(obj)["spec"]["template"]["spec"]["containers"]
    return containers


# -- a probe port of 0 is the user port ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        pytest.param({"tcpSocket": {"port": 0}}, {"tcpSocket": {"port": 8080}}, id="tcp-port-0"),
        pytest.param({"tcpSocket": {"port": "0"}}, {"tcpSocket": {"port": 8080}}, id="tcp-port-string-0"),
        pytest.param({"tcpSocket": {}}, {"tcpSocket": {"port": 8080}}, id="tcp-no-port"),
        pytest.param(
            {"httpGet": {"path": "/hz", "port": 0}}, {"httpGet": {"path": "/hz", "port": 8080}}, id="http-port-0"
        ),
        pytest.param(
            {"httpGet": {"path": "/", "port": "0"}}, {"httpGet": {"path": "/", "port": 8080}}, id="http-port-string-0"
        ),
        pytest.param({"httpGet": {"port": 9000}}, {"httpGet": {"port": 9000}}, id="explicit-port-kept"),
        pytest.param({"httpGet": {"port": "http1"}}, {"httpGet": {"port": "http1"}}, id="named-port-kept"),
        pytest.param({"exec": {"command": ["true"]}}, {"exec": {"command": ["true"]}}, id="exec-untouched"),
    ],
)
def test_a_probe_port_of_zero_becomes_the_user_port_and_others_are_kept(probe: Obj, expected: Obj) -> None:
    container = {"name": "c", "readinessProbe": probe, "livenessProbe": copy.deepcopy(probe),
                 "startupProbe": copy.deepcopy(probe)}  # fmt: skip
    before = copy.deepcopy(container)
    rewritten = with_user_port_probes(container, 8080)
    assert rewritten["readinessProbe"] == expected
    assert rewritten["livenessProbe"] == expected
    assert rewritten["startupProbe"] == expected
    assert container == before, "the input is not modified"


def test_the_deployment_of_a_knative_defaulted_revision_probes_the_user_port() -> None:
    """Issue 9: Knative's defaulting writes ``tcpSocket: {port: 0}``, which the API server refuses as written."""
    [user] = pod_containers(revision({"tcpSocket": {"port": 0}, "successThreshold": 1}))
    assert user["readinessProbe"] == {"tcpSocket": {"port": 8080}, "successThreshold": 1}
    assert {"name": "PORT", "value": "8080"} in user["env"]


def test_the_serving_container_is_the_one_with_the_port_even_behind_a_sidecar() -> None:
    sidecar: Obj = {"name": "sidecar", "image": "proxy", "readinessProbe": {"tcpSocket": {"port": 0}}}
    user: Obj = {"name": "user", "image": "app", "ports": [{"containerPort": 9000}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": 0}}}  # fmt: skip
    side, served = pod_containers(revision(containers=[sidecar, user]))
    assert served["readinessProbe"]["httpGet"]["port"] == 9000
    assert {"name": "PORT", "value": "9000"} in served["env"]
    assert side == sidecar, "a sidecar's probe is its own business (the API server judges it)"


def test_a_revision_without_a_probe_gets_tcp_on_the_port_and_without_ports_knatives_default_port() -> None:
    bare = revision(containers=[{"name": "user", "image": "app", "ports": []}])
    [user] = pod_containers(bare)
    assert user["ports"] == [{"containerPort": 8080, "name": "user-port"}]
    assert user["readinessProbe"]["tcpSocket"] == {"port": 8080}
    assert deployment_of(bare)["spec"]["template"]["metadata"]["annotations"][PROBE_PERIOD_ANNOTATION] == "50"


# -- what a failure says ------------------------------------------------------------------------------------------


def refused(status: int, reason: str, message: str, retry_after: str | None = None) -> KubeError:
    body = {"kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": status}
    return error_from_status(status, body, method="POST", path="/apis/apps/v1/...", retry_after=retry_after)


INVALID = 'Deployment.apps "hello-00001-deployment" is invalid: spec.template.spec.containers[0].env[0].name: Invalid'


@pytest.mark.parametrize(
    ("kind", "error", "status", "reason"),
    [
        pytest.param("Deployment", refused(422, "Invalid", INVALID), "False", "DeploymentInvalid", id="422"),
        pytest.param("Service", refused(422, "Invalid", "bad port"), "False", "ServiceInvalid", id="service-422"),
        pytest.param("Deployment", refused(400, "BadRequest", "bad"), "False", "DeploymentInvalid", id="400"),
        pytest.param("Deployment", refused(403, "Forbidden", "quota"), "False", "DeploymentForbidden", id="403"),
        pytest.param("Service", refused(404, "NotFound", "no ns"), "False", "ServiceRejected", id="404"),
        pytest.param(
            "Deployment", refused(500, "InternalError", "webhook"), "Unknown", "DeploymentCreateFailed", id="500"
        ),
        pytest.param(
            "Deployment", refused(429, "TooManyRequests", "slow"), "Unknown", "DeploymentCreateFailed", id="429"
        ),
        pytest.param("Deployment", KubeConnectionError("refused"), "Unknown", "DeploymentCreateFailed", id="conn"),
    ],
)
def test_a_failed_create_is_told_by_kind_and_cause(kind: str, error: KubeError, status: str, reason: str) -> None:
    failure = failure_of(CreateFailed(kind, "x", error))
    assert (failure.status, failure.reason) == (status, reason)
    assert str(error.payload["message"] if isinstance(error.payload, dict) else "refused") in failure.message


def test_the_message_is_the_api_servers_on_one_trimmed_line() -> None:
    failure = failure_of(CreateFailed("Deployment", "x", refused(422, "Invalid", "a\n  b " + "c" * 5000)))
    assert failure.message.startswith("a b ccc")
    assert failure.message.endswith("...")
    assert len(failure.message) == 1000


# -- the backoff schedule -----------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_a_five_minute_cap() -> None:
    assert [backoff_delay(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_delay(10_000) == BACKOFF_MAX_SECONDS
    assert backoff_delay(3, base=0.5, cap=1.5) == 1.5


# -- the loop, against an in-memory API and a fake timer wheel ----------------------------------------------------


@dataclass
class Timer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Timers:
    """``loop.call_later`` for the stand-in: records each timer; the test fires them."""

    made: list[Timer] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(delay, callback)
        self.made.append(timer)
        return timer

    def live(self) -> list[Timer]:
        return [t for t in self.made if not t.cancelled]

    def fire(self) -> None:
        [timer] = self.live()
        timer.cancelled = True  # fired: gone from the wheel
        timer.callback()


def merge(target: Obj, patch: Obj) -> None:
    """JSON merge patch (RFC 7386), in place."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class FakeAPI:
    """Creates and status patches, each write coming back at once as a watch event, like the real watch (sooner)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}
        self.refuse: dict[str, KubeError] = {}  # resource plural -> the error its creates get
        self.creates: list[str] = []
        self.status_writes: list[Obj] = []
        self.on_create: Callable[[], None] | None = None
        self.standin: StandIn | None = None

    async def create(self, resource: r.Resource, body: Obj, namespace: str | None = None) -> Obj:
        self.creates.append(resource.plural)
        if self.on_create is not None:
            self.on_create()
        if resource.plural in self.refuse:
            raise self.refuse[resource.plural]
        key = (resource.plural, body["metadata"]["name"])
        if key in self.objects:
            raise AlreadyExists("exists", status=409, reason="AlreadyExists")
        self.objects[key] = body
        return body

    async def patch(self, resource: r.Resource, name: str, body: Obj, namespace: str | None = None,
                    *, subresource: str | None = None) -> Obj:  # fmt: skip
        assert (resource.plural, subresource) == ("revisions", "status")
        self.status_writes.append(copy.deepcopy(body["status"]))
        assert self.standin is not None
        current = copy.deepcopy(self.standin.revisions.get(name, namespace or ""))
        assert current is not None
        merge(current, body)
        current["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.standin.revisions._apply(Event("MODIFIED", current))
        return current


def standin_with(api: FakeAPI, timers: Timers) -> StandIn:
    standin = StandIn(api, call_later=timers.call_later)  # type: ignore[arg-type]
    api.standin = standin
    return standin


def observe(standin: StandIn, obj: Obj, kind: str = "ADDED") -> None:
    standin.revisions._apply(Event(kind, obj))  # type: ignore[arg-type]


async def drain(standin: StandIn) -> int:
    """Reconcile until the queue is empty; how many reconciles ran."""
    runs = 0
    while not standin.queue.empty():
        await standin.work_once()
        runs += 1
    return runs


def ready(standin: StandIn, name: str = NAME) -> Obj:
    obj = standin.revisions.get(name, NS)
    assert obj is not None
    [condition] = obj["status"]["conditions"]
    return {**condition, **(obj["status"].get("annotations") or {})}


def edited(standin: StandIn, name: str = NAME) -> Obj:
    """The cached revision after a spec edit: the API server bumps the generation."""
    obj = copy.deepcopy(standin.revisions.get(name, NS))
    assert obj is not None
    obj["metadata"]["generation"] += 1
    obj["metadata"]["resourceVersion"] += "0"
    return obj


async def test_a_refused_deployment_is_ready_false_with_the_reason_and_retried_at_doubling_intervals() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["deployments"] = refused(422, "Invalid", INVALID)
    standin = standin_with(api, timers)
    observe(standin, revision())

    assert await drain(standin) == 1, "its own status write does not bring the retry forward"
    assert ready(standin)["status"] == "False"
    assert ready(standin)["reason"] == "DeploymentInvalid"
    assert ready(standin)["message"] == INVALID
    delays = [timers.live()[0].delay]
    for attempt in range(2, 7):
        timers.fire()
        assert await drain(standin) == 1
        assert ready(standin)[ATTEMPTS_ANNOTATION] == str(attempt)
        delays.append(timers.live()[0].delay)
        assert ready(standin)[RETRY_IN_ANNOTATION] == f"{delays[-1]:g}"
    assert delays == [1, 2, 4, 8, 16, 32]
    assert api.creates == ["deployments"] * 6, "one create per retry, no more"


async def test_an_edit_retries_at_once_with_a_fresh_backoff_and_success_clears_the_failure() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["deployments"] = refused(422, "Invalid", INVALID)
    standin = standin_with(api, timers)
    observe(standin, revision())
    await drain(standin)
    timers.fire()
    await drain(standin)
    assert timers.live()[0].delay == 2

    api.refuse["deployments"] = refused(422, "Invalid", "still wrong")
    observe(standin, edited(standin), "MODIFIED")
    assert not timers.live(), "the scheduled retry is dropped"
    await drain(standin)
    assert ready(standin)["message"] == "still wrong"
    assert (ready(standin)[ATTEMPTS_ANNOTATION], timers.live()[0].delay) == ("1", 1)

    del api.refuse["deployments"]
    observe(standin, edited(standin), "MODIFIED")
    await drain(standin)
    assert (ready(standin)["status"], ready(standin)["reason"]) == ("True", "Reconciled")
    assert ATTEMPTS_ANNOTATION not in ready(standin)
    assert RETRY_IN_ANNOTATION not in ready(standin)
    assert not timers.live()
    assert not standin.backoffs
    assert {p for p, _ in api.objects} == {"deployments", "services"}


async def test_a_backing_off_revision_holds_up_no_other() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["deployments"] = refused(403, "Forbidden", "exceeded quota")
    standin = standin_with(api, timers)
    observe(standin, revision(name="bad-00001"))
    await drain(standin)
    del api.refuse["deployments"]
    observe(standin, revision(name="good-00001"))
    assert await drain(standin) == 2  # the good one, then once more for its own status write (AlreadyExists)
    assert ready(standin, "good-00001")["status"] == "True"
    assert ready(standin, "bad-00001")["reason"] == "DeploymentForbidden"
    assert [t.delay for t in timers.live()] == [1]


async def test_a_transient_failure_backs_off_too_and_honours_retry_after() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["services"] = refused(429, "TooManyRequests", "slow down", retry_after="30")
    standin = standin_with(api, timers)
    observe(standin, revision())
    await drain(standin)
    assert (ready(standin)["status"], ready(standin)["reason"]) == ("Unknown", "ServiceCreateFailed")
    assert timers.live()[0].delay == 30


async def test_a_transient_failure_does_not_unmake_a_reconciled_revision() -> None:
    api, timers = FakeAPI(), Timers()
    standin = standin_with(api, timers)
    observe(standin, revision())
    await drain(standin)
    writes = len(api.status_writes)
    api.refuse["deployments"] = refused(503, "ServiceUnavailable", "etcd")
    obj = copy.deepcopy(standin.revisions.get(NAME, NS))
    assert obj is not None
    obj["metadata"]["annotations"]["touched"] = "yes"  # a metadata edit: reconciled again
    observe(standin, obj, "MODIFIED")
    await drain(standin)
    assert ready(standin)["status"] == "True"
    assert len(api.status_writes) == writes
    assert [t.delay for t in timers.live()] == [1]


async def test_an_edit_during_a_failing_reconcile_runs_again_after_it_not_beside_it() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["deployments"] = refused(422, "Invalid", INVALID)
    standin = standin_with(api, timers)
    observe(standin, revision())

    def edit_once() -> None:
        api.on_create = None
        assert standin.active == {KEY}
        observe(standin, edited(standin), "MODIFIED")
        assert standin.queue.empty(), "not handed to a second worker while the first holds it"

    api.on_create = edit_once
    await standin.work_once()
    assert not standin.queue.empty(), "queued again once the first reconcile ended"
    await drain(standin)
    assert standin.revisions.get(NAME, NS)["status"]["observedGeneration"] == 2  # type: ignore[index]
    assert ready(standin)[ATTEMPTS_ANNOTATION] == "1"
    assert len(timers.live()) == 1


async def test_a_deleted_revision_drops_its_retry() -> None:
    api, timers = FakeAPI(), Timers()
    api.refuse["deployments"] = refused(422, "Invalid", INVALID)
    standin = standin_with(api, timers)
    observe(standin, revision())
    await drain(standin)
    obj = standin.revisions.get(NAME, NS)
    observe(standin, obj, "DELETED")  # type: ignore[arg-type]
    assert not timers.live()
    assert not standin.backoffs


async def test_a_revision_knative_would_refuse_is_invalid_spec_without_retries() -> None:
    api, timers = FakeAPI(), Timers()
    standin = standin_with(api, timers)
    bad = revision()
    bad["metadata"]["annotations"][knative.MIN_SCALE_ANNOTATION] = "lots"
    observe(standin, bad)
    await drain(standin)
    assert (ready(standin)["status"], ready(standin)["reason"]) == ("False", "InvalidSpec")
    assert knative.MIN_SCALE_ANNOTATION in ready(standin)["message"]
    assert not api.creates
    assert not timers.made
