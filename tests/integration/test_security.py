"""What the daemons must never give away: request bodies, credentials and tokens in their logs, and anything but
their own few paths (and no request data) on their admin ports.

Not here: that neither daemon's ServiceAccount may read Secrets (tests/integration/test_manifests.py asks the API
server). That the daemons make no Secret GET or LIST at all would need the API server's audit log, which the
devcluster does not enable.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devcluster.activators import activator_token
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from tests.integration.activators import NodeActivator, daemonset_activators, running_activator
from tests.integration.conftest import TEST_IP_BASE
from tests.integration.controllers import (
    SYSTEM_NAMESPACE,
    InClusterLeader,
    endpointsctl_token,
    in_cluster_leader,
    running_controller,
    without_in_cluster_controller,
)
from tests.integration.kit import Cluster, condition, create_revision, poll_until, wait_for, watching

ACTIVATOR_IP = f"{TEST_IP_BASE}.1.250"  # on node-1's range, apart from the addresses its pods get
ACTIVATOR_PATHS = ("/metrics", "/healthz", "/readyz", "/debug/coldstarts")
ENDPOINTSCTL_PATHS = ("/metrics", "/healthz", "/readyz", "/stats")


@dataclass(frozen=True)
class Markers:
    """Unique strings a request carries where secrets travel: none may show up anywhere else."""

    body: str
    authorization: str
    cookie: str
    header: str

    @classmethod
    def new(cls) -> Markers:
        return cls(*(f"{what}-marker-{uuid.uuid4().hex}" for what in ("body", "authorization", "cookie", "header")))

    def headers(self, namespace: str, revision: str) -> dict[str, str]:
        return {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": revision,
                "Authorization": f"Bearer {self.authorization}", "Cookie": f"session={self.cookie}",
                "X-Request-Marker": self.header}  # fmt: skip

    def payload(self) -> bytes:
        return f'{{"card": "{self.body}"}}'.encode()

    def named(self) -> dict[str, str]:
        return {"the request body": self.body, "the Authorization header": self.authorization,
                "the Cookie header": self.cookie, "a request header": self.header}  # fmt: skip


def token_parts(name: str, token: str) -> dict[str, str]:
    """A token, and its signature alone (a log that cuts the token still must not hold the part that signs it)."""
    return {f"the {name} token": token, f"the {name} token's signature": token.rsplit(".", 1)[-1]}


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [what for what, secret in secrets.items() if secret in text]


async def send(http: httpx.AsyncClient, url: str, markers: Markers, namespace: str, revision: str, n: int) -> list[int]:
    codes = []
    for _ in range(n):
        answer = await http.post(f"{url}/", headers=markers.headers(namespace, revision), content=markers.payload())
        codes.append(answer.status_code)
    return codes


def pod_tokens(state_dir: Path) -> dict[str, str]:
    """The tokens the system namespace's pods run with: the simulated kubelet writes each pod's into its directory
    (``serviceaccount.kubeconfig``), a projected one or the legacy secret's."""
    tokens = {}
    for path in state_dir.glob(f"nodes/*/pods/{SYSTEM_NAMESPACE}_*/serviceaccount.kubeconfig"):
        pod = path.parent.name.split("_")[1]
        tokens.update(token_parts(f"{pod} pod", yaml.safe_load(path.read_text())["users"][0]["user"]["token"]))
    return tokens


def daemon_pod_logs(state_dir: Path) -> list[Path]:
    """Every container log of the system namespace's pods, dead incarnations included: the simulated kubelet writes
    ``nodes/<node>/pods/<namespace>_<pod>_<uid>/<container>.log`` (devcluster/nodesim.py)."""
    return sorted(state_dir.glob(f"nodes/*/pods/{SYSTEM_NAMESPACE}_*/*.log"))


@pytest_asyncio.fixture(loop_scope="session")
async def activators(kube: KubeClient) -> dict[str, NodeActivator]:
    return await daemonset_activators(kube)


# -- logs --------------------------------------------------------------------------------------------------------------


async def test_no_daemon_logs_a_request_body_a_credential_header_or_a_service_account_token(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    http: httpx.AsyncClient,
    tmp_path: Path,
    devcluster: Path,
    activators: dict[str, NodeActivator],
) -> None:
    markers = Markers.new()
    secrets = {**markers.named(), **token_parts("activator", await activator_token(kube)),
               **token_parts("endpointsctl", await endpointsctl_token(kube))}  # fmt: skip
    name = "secret-00001"
    await create_revision(kube, sample_revision(name, namespace))
    debug = {"log_level": "DEBUG"}
    async with (
        without_in_cluster_controller(kube),
        running_controller(cluster, kube, http, tmp_path, identity="security", settings=debug) as controller,
        running_activator(cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, **debug) as activator,
        watching(kube, r.ACTIVATION_ENDPOINTS, namespace) as aes,
    ):
        # A cold start and warm requests through the DEBUG activator, warm ones through a DaemonSet one.
        codes = await send(http, activator.url, markers, namespace, name, 6)
        codes += await send(http, activators["node-2"].url, markers, namespace, name, 3)
        # Refused ones, which are logged.
        codes += await send(http, activator.url, markers, namespace, "nope-00001", 1)
        malformed = {**markers.headers(namespace, name), "Knative-Serving-Namespace": ""}
        answer = await http.post(f"{activator.url}/", content=markers.payload(), headers=malformed)
        codes.append(answer.status_code)
        await wait_for(aes, lambda c: (ae := c.get(name, namespace)) and condition(ae, "Ready") == "True", 30)

        async def reconciled() -> bool:
            return await controller.metric(http, "endpointsctl_reconciles_total", result="success") > 0

        await poll_until(reconciled, 30, "the DEBUG controller to reconcile")
    assert codes == [200] * 9 + [404, 400]

    tokens = pod_tokens(devcluster)
    assert any(what.startswith("the activator-") for what in tokens), (
        f"no activator pod's token found: {sorted(tokens)}"
    )
    secrets.update(tokens)
    logs = [activator.log, controller.log, *daemon_pod_logs(devcluster)]
    names = {log.name for log in logs}
    assert {"activator.log", "endpointsctl.log"} <= names, f"no pod logs found under {devcluster}: {names}"
    for own in (activator.log, controller.log):
        assert " DEBUG " in own.read_text(errors="replace"), f"{own.name} was not written at DEBUG"
    found = {str(log.relative_to(tmp_path if log.is_relative_to(tmp_path) else devcluster)): leaked
             for log in logs if (leaked := leaks(log.read_text(errors="replace"), secrets))}  # fmt: skip
    assert found == {}, f"secrets in the daemons' logs: {found}"


# -- admin ports -------------------------------------------------------------------------------------------------------


def label_values(metrics: str) -> set[str]:
    return {value for family in text_string_to_metric_families(metrics) for sample in family.samples
            for value in sample.labels.values()}  # fmt: skip


def looks_like_an_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value.split(":", maxsplit=1)[0] if value.count(":") == 1 else value)
    except ValueError:
        return False
    return True


async def only_its_own_paths(
    http: httpx.AsyncClient, admin: str, own: tuple[str, ...], markers: Markers
) -> dict[str, object]:
    """What the admin server at ``admin`` answers that it should not: paths beyond ``own`` that are not 404, own
    paths that fail, and any answer echoing the request's body, path or query."""
    others = ["/", "/debug", "/debug/", "/debug/pprof/", "/debug/vars", "/debug/coldstarts/x", "/metrics/",
              "/metricsx", "/healthz/verbose", "/env", "/config", "/configz", "/admin", "/status", "/version",
              "/.env", "/..%2f..%2fetc/passwd", f"/{markers.header}",
              *(p for p in ACTIVATOR_PATHS + ENDPOINTSCTL_PATHS if p not in own)]  # fmt: skip
    wrong: dict[str, object] = {}
    for path in others:
        for method in ("GET", "POST", "PUT", "DELETE"):
            answer = await http.request(method, f"{admin}{path}", content=markers.payload())
            if answer.status_code != 404 or leaks(answer.text, markers.named()):
                wrong[f"{method} {path}"] = (answer.status_code, answer.text[:200])
    for path in own:
        answer = await http.get(f"{admin}{path}", params={"q": markers.header})
        expected = 400 if path == "/stats" else 200  # a websocket: a plain GET is a bad request, not a missing page
        if answer.status_code != expected or leaks(answer.text, markers.named()):
            wrong[f"GET {path}"] = (answer.status_code, answer.text[:200])
        answer = await http.post(f"{admin}{path}", content=markers.payload())
        if answer.status_code != 405 or leaks(answer.text, markers.named()):
            wrong[f"POST {path}"] = (answer.status_code, answer.text[:200])
    return wrong


async def test_the_admin_ports_serve_only_their_own_paths_and_give_nothing_of_the_requests_away(
    kube: KubeClient, namespace: str, http: httpx.AsyncClient, activators: dict[str, NodeActivator]
) -> None:
    leader: InClusterLeader = await in_cluster_leader(kube)
    front = activators["node-3"]
    markers = Markers.new()
    name = "admin-00001"
    await create_revision(kube, sample_revision(name, namespace))
    assert await send(http, front.url, markers, namespace, name, 4) == [200] * 4  # a cold start, then warm
    pods: list[Obj] = (await kube.list(r.PODS, namespace, label_selector=f"serving.knative.dev/revision={name}"))[
        "items"]  # fmt: skip
    app = {p["metadata"]["name"] for p in pods} | {p["status"].get("podIP", "") for p in pods} - {""}
    assert len(app) >= 2, "the app's pod name and IP"

    wrong = {
        "activator": await only_its_own_paths(http, f"http://{front.ip}:9090", ACTIVATOR_PATHS, markers),
        "endpointsctl": await only_its_own_paths(http, f"http://{leader.ip}:9090", ENDPOINTSCTL_PATHS, markers),
    }
    assert wrong == {"activator": {}, "endpointsctl": {}}

    secrets = {**markers.named(), **token_parts("activator", await activator_token(kube)),
               **token_parts("endpointsctl", await endpointsctl_token(kube)),
               **{f"the app's pod {value}": value for value in app}}  # fmt: skip
    for daemon, admin in (("activator", f"http://{front.ip}:9090"), ("endpointsctl", f"http://{leader.ip}:9090")):
        metrics = (await http.get(f"{admin}/metrics")).text
        assert f"{daemon}_" in metrics
        assert leaks(metrics, secrets) == [], f"{daemon}'s /metrics"
        addresses = sorted(v for v in label_values(metrics) if looks_like_an_address(v))
        assert addresses == [], f"{daemon}'s /metrics has addresses as label values"
    journal = (await http.get(f"http://{front.ip}:9090/debug/coldstarts")).text
    assert f"{namespace}/{name}" in journal
    assert leaks(journal, markers.named()) == [], "the activator's /debug/coldstarts"
