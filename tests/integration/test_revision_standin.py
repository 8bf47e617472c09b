"""The devcluster's Knative stand-in against a real API server (issue 9).

A Revision written as Knative's defaulting writes it (a readiness probe on port 0, meaning the user port) gets its
Deployment and serves a cold start through an activator; one whose Deployment the API server refuses says why on
its ``Ready`` condition, is retried at doubling intervals rather than every second, and is retried at once when
edited.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster.knative_standin import ATTEMPTS_ANNOTATION, RETRY_IN_ANNOTATION
from devcluster.samples import sample_revision
from localsched.kube import resources as r
from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import NotFound
from localsched.kube.watching import Event, WatchCache
from tests.integration.activators import running_activator
from tests.integration.conftest import TEST_IP_BASE
from tests.integration.kit import Cluster, create_revision, wait_for, watching

ACTIVATOR_IP = f"{TEST_IP_BASE}.1.250"  # on node-1's range, apart from the addresses its pods get


def ready_condition(obj: Obj | None) -> Obj:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return {}


def status_notes(obj: Obj | None) -> dict[str, str]:
    return dict(((obj or {}).get("status") or {}).get("annotations") or {})


@pytest.mark.parametrize("path", ["standard", "local"])
async def test_a_revision_probing_port_0_as_knative_defaults_it_gets_its_deployment_and_serves_a_cold_start(
    path: str, cluster: Cluster, kube: KubeClient, namespace: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    name = "port0-00001"
    revision = sample_revision(name, namespace, startup_delay=0.5)
    [container] = revision["spec"]["containers"]
    container["readinessProbe"] = {"tcpSocket": {"port": 0}, "successThreshold": 1}  # Knative's defaulting
    await create_revision(kube, revision)

    deployment = await kube.get(r.DEPLOYMENTS, f"{name}-deployment", namespace)
    [user] = deployment["spec"]["template"]["spec"]["containers"]
    assert user["readinessProbe"]["tcpSocket"]["port"] == 8080
    async with watching(kube, r.REVISIONS, namespace) as revisions:
        reconciled = await wait_for(
            revisions, lambda c: (rc := ready_condition(c.get(name, namespace))).get("status") == "True" and rc, 30
        )
    assert reconciled["reason"] == "Reconciled"

    local = "true" if path == "local" else "false"
    async with running_activator(
        cluster, kube, http, tmp_path, node="node-1", ip=ACTIVATOR_IP, local_scheduling=local
    ) as activator:
        answer = await http.get(f"{activator.url}/", headers=activator.headers(namespace, name))
        assert answer.status_code == 200
        assert answer.json()["namespace"] == namespace
        assert await activator.metric(http, "activator_cold_starts_total", outcome="ready", path=path) == 1


async def test_a_revision_whose_deployment_is_refused_says_why_backs_off_and_retries_at_once_when_edited(
    kube: KubeClient, namespace: str
) -> None:
    name = "refused-00001"
    revision = sample_revision(name, namespace)
    [container] = revision["spec"]["containers"]
    fixed = copy.deepcopy(container)
    # The Revision CRD takes containers as they come; the API server refuses this in a Deployment.
    container["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    loop = asyncio.get_running_loop()
    attempts_seen: dict[int, tuple[float, str]] = {}  # attempt -> (when first seen here, its retry delay)

    def on_revision(event: Event) -> None:
        notes = status_notes(event.obj)
        if event.obj["metadata"]["name"] == name and ATTEMPTS_ANNOTATION in notes:
            attempt = int(notes[ATTEMPTS_ANNOTATION])
            attempts_seen.setdefault(attempt, (loop.time(), notes.get(RETRY_IN_ANNOTATION, "")))

    def attempts(cache: WatchCache) -> int:
        return int(status_notes(cache.get(name, namespace)).get(ATTEMPTS_ANNOTATION) or 0)

    async with watching(kube, r.REVISIONS, namespace) as revisions:
        revisions.add_handler(on_revision)
        await kube.create(r.REVISIONS, revision, namespace)

        refused = await wait_for(
            revisions, lambda c: (rc := ready_condition(c.get(name, namespace))).get("status") == "False" and rc, 30
        )
        assert refused["reason"] == "DeploymentInvalid"
        assert "must be less than or equal to cpu limit" in refused["message"], refused["message"]

        await wait_for(revisions, lambda c: attempts(c) >= 4, timeout=30)  # 1 + 2 + 4 s of backoff
        assert sorted(attempts_seen) == [1, 2, 3, 4], "each retry reported once"
        assert [attempts_seen[n][1] for n in (1, 2, 3)] == ["1", "2", "4"]
        spread = attempts_seen[4][0] - attempts_seen[1][0]
        assert spread >= 6.0, f"4 attempts within {spread:.1f}s: not backing off (1 + 2 + 4 s expected)"
        with pytest.raises(NotFound):
            await kube.get(r.DEPLOYMENTS, f"{name}-deployment", namespace)

        # The next retry is 8 s away: an edit is retried at once, well before it.
        await kube.patch(r.REVISIONS, name, {"spec": {"containers": [fixed]}}, namespace)
        edited_at = loop.time()
        reconciled: Any = await wait_for(
            revisions, lambda c: (o := c.get(name, namespace)) and ready_condition(o).get("status") == "True" and o, 6
        )
        took = loop.time() - edited_at
        print(f"\nrefused revision: attempts 1..4 over {spread:.1f}s; Ready {took:.2f}s after the edit")
    assert ready_condition(reconciled)["reason"] == "Reconciled"
    assert reconciled["status"]["observedGeneration"] == reconciled["metadata"]["generation"] == 2
    assert ATTEMPTS_ANNOTATION not in status_notes(reconciled)
    await kube.get(r.DEPLOYMENTS, f"{name}-deployment", namespace)
