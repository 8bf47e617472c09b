"""The pure parts of local scheduling: the stand-in pod, its adoption, the claim order and the current ReplicaSet."""

from __future__ import annotations

from typing import Any, cast

import pytest

from activator.recovering import ACTIVATOR_ANNOTATION
from activator.scheduling import (
    CLAIM_AT_CREATE,
    CLAIM_AT_RUNNING,
    HASH_LABEL,
    REVISION_ANNOTATION,
    adoption_patch,
    claim_order,
    current_replicaset,
    stand_in,
)
from activator.tracking import FOR_REVISION_LABEL, SCHEDULED_BY_LABEL, is_stand_in, revision_of_pod
from localsched.knative import (
    CONFIGURATION_LABEL,
    REVISION_LABEL,
    REVISION_UID_LABEL,
    SERVICE_LABEL,
    Revision,
    revision_key_of,
)
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.watching import Event, WatchCache

NS = "default"
REV = "hello-00001"
REVISION = Revision.from_object(
    {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"namespace": NS, "name": REV, "uid": "rev-uid", "labels": {CONFIGURATION_LABEL: "hello"}},
        "spec": {"containerConcurrency": 1, "containers": [{"image": "app", "ports": [{"containerPort": 8080}]}]},
    }
)


def replicaset(
    rev: str = REV, *, pod_hash: str = "5d9f7c", revision: str | None = "1", owner: str | None = None
) -> dict[str, Any]:
    """A ReplicaSet as the deployment controller makes it for Knative's ``{rev}-deployment``."""
    template_labels = {
        REVISION_LABEL: rev,
        REVISION_UID_LABEL: "rev-uid",
        CONFIGURATION_LABEL: "hello",
        SERVICE_LABEL: "hello",
        "app": rev,
        HASH_LABEL: pod_hash,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{rev}-deployment-{pod_hash}",
            "namespace": NS,
            "uid": f"rs-uid-{pod_hash}",
            "labels": dict(template_labels),
            "annotations": {} if revision is None else {REVISION_ANNOTATION: revision},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": owner or f"{rev}-deployment",
                    "uid": "deployment-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {REVISION_UID_LABEL: "rev-uid", HASH_LABEL: pod_hash}},
            "template": {
                "metadata": {"labels": template_labels, "annotations": {"autoscaling.knative.dev/max-scale": "3"}},
                "spec": {"containers": [{"name": "user-container", "image": "app"}], "enableServiceLinks": False},
            },
        },
    }


def test_a_stand_in_is_the_template_bound_to_the_node_and_hidden_from_the_selector() -> None:
    rs = replicaset()
    pod = stand_in(rs, REVISION, node="node-a", activator="activator-x")
    meta = pod["metadata"]
    assert meta["labels"] == {
        REVISION_LABEL: REV,
        CONFIGURATION_LABEL: "hello",
        SERVICE_LABEL: "hello",
        "app": REV,
        SCHEDULED_BY_LABEL: "node-a",
        FOR_REVISION_LABEL: REV,
    }
    assert meta["annotations"] == {"autoscaling.knative.dev/max-scale": "3", ACTIVATOR_ANNOTATION: "activator-x"}
    assert meta["namespace"] == NS
    assert meta["name"].startswith(f"{rs['metadata']['name']}-")
    assert len(meta["name"]) > len(rs["metadata"]["name"]) + 1
    assert "ownerReferences" not in meta
    assert pod["spec"] == {
        **rs["spec"]["template"]["spec"],
        "nodeName": "node-a",
        "readinessGates": [{"conditionType": "localsched.dev/claimed"}],
    }
    assert is_stand_in(pod)
    assert revision_of_pod(pod) == [f"{NS}/{REV}"]


def test_each_stand_in_gets_a_name_of_its_own() -> None:
    names = {stand_in(replicaset(), REVISION, node="node-a", activator="a")["metadata"]["name"] for _ in range(5)}
    assert len(names) == 5


def test_making_a_stand_in_leaves_the_cached_replicaset_as_it_was() -> None:
    rs = replicaset()
    stand_in(rs, REVISION, node="node-a", activator="a")
    assert rs == replicaset()


def test_the_adoption_patch_carries_the_template_labels_and_the_replicaset_as_controller() -> None:
    rs = replicaset()
    patch = adoption_patch(rs)
    assert patch["metadata"]["labels"] == rs["spec"]["template"]["metadata"]["labels"]
    assert patch["metadata"]["labels"][HASH_LABEL] == "5d9f7c"
    assert patch["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs["metadata"]["name"],
            "uid": "rs-uid-5d9f7c",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def pod(labels: dict[str, str] | None, owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": NS, "labels": labels}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta}


RS_OWNER = {"kind": "ReplicaSet", "name": "rs", "controller": True}


@pytest.mark.parametrize(
    ("labels", "owners", "expected"),
    [
        pytest.param({SCHEDULED_BY_LABEL: "node-a"}, None, True, id="scheduled-here-unowned"),
        pytest.param({SCHEDULED_BY_LABEL: "node-a"}, [], True, id="scheduled-here-empty-owners"),
        pytest.param({SCHEDULED_BY_LABEL: "node-a"}, [RS_OWNER], False, id="adopted"),
        pytest.param({REVISION_LABEL: REV}, None, False, id="no-label"),
        pytest.param({REVISION_LABEL: REV}, [RS_OWNER], False, id="replicasets-own-pod"),
        pytest.param(None, None, False, id="no-labels-at-all"),
    ],
)
def test_a_stand_in_is_a_pod_scheduled_here_that_no_one_owns(
    labels: dict[str, str] | None, owners: list[dict[str, Any]] | None, expected: bool
) -> None:
    assert is_stand_in(pod(labels, owners)) is expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({REVISION_LABEL: REV}, [f"{NS}/{REV}"], id="knative-label"),
        pytest.param({FOR_REVISION_LABEL: REV}, [f"{NS}/{REV}"], id="stand-in-label"),
        pytest.param({REVISION_LABEL: REV, FOR_REVISION_LABEL: "other"}, [f"{NS}/{REV}"], id="knative-label-wins"),
        pytest.param({"app": REV}, [], id="neither"),
        pytest.param(None, [], id="no-labels"),
    ],
)
def test_the_revision_of_a_pod_comes_from_either_label(labels: dict[str, str] | None, expected: list[str]) -> None:
    assert revision_of_pod(pod(labels)) == expected


@pytest.mark.parametrize(
    ("setting", "version", "expected"),
    [
        pytest.param("create", {"major": "1", "minor": "20"}, CLAIM_AT_CREATE, id="explicit-create"),
        pytest.param("running", {"major": "1", "minor": "31"}, CLAIM_AT_RUNNING, id="explicit-running"),
        pytest.param("auto", {"major": "1", "minor": "22"}, CLAIM_AT_CREATE, id="auto-1.22"),
        pytest.param("auto", {"major": "1", "minor": "31+"}, CLAIM_AT_CREATE, id="auto-1.31+"),
        pytest.param("auto", {"major": "2", "minor": "0"}, CLAIM_AT_CREATE, id="auto-2.0"),
        pytest.param("auto", {"major": "1", "minor": "21"}, CLAIM_AT_RUNNING, id="auto-1.21"),
        pytest.param("auto", {"major": "1", "minor": "20"}, CLAIM_AT_RUNNING, id="auto-1.20"),
        pytest.param("auto", {"major": "1", "minor": "20+"}, CLAIM_AT_RUNNING, id="auto-1.20+"),
        pytest.param("auto", {"major": "", "minor": ""}, CLAIM_AT_RUNNING, id="auto-empty-version"),
        pytest.param("auto", {"major": "v1", "minor": "x"}, CLAIM_AT_RUNNING, id="auto-unparsable"),
        pytest.param("auto", {}, CLAIM_AT_RUNNING, id="auto-no-version"),
    ],
)
def test_claim_order(setting: str, version: dict[str, Any], expected: str) -> None:
    assert claim_order(setting, version) == expected


def replicasets(*objs: dict[str, Any]) -> WatchCache:
    """A ReplicaSet cache fed by hand; it is never started, so its client is never used."""
    cache = WatchCache(cast(KubeClient, object()), r.REPLICASETS)
    cache.add_index("revision", revision_key_of)
    for obj in objs:
        cache._apply(Event("ADDED", obj))
    return cache


def test_the_current_replicaset_is_the_deployments_highest_revision() -> None:
    cache = replicasets(
        replicaset(pod_hash="aaa", revision="1"),
        replicaset(pod_hash="ccc", revision="10"),  # compared as numbers: 10 > 2
        replicaset(pod_hash="bbb", revision="2"),
        replicaset(pod_hash="nnn", revision=None),
        replicaset(pod_hash="zzz", revision="99", owner="someone-elses-deployment"),
        replicaset("hello-00002", pod_hash="yyy", revision="50"),
    )
    current = current_replicaset(cache, REVISION)
    assert current is not None
    assert current["metadata"]["name"] == f"{REV}-deployment-ccc"


def test_a_deleted_replicaset_is_no_longer_current() -> None:
    newest = replicaset(pod_hash="ccc", revision="3")
    cache = replicasets(replicaset(pod_hash="aaa", revision="1"), newest)
    cache._apply(Event("DELETED", newest, newest))
    current = current_replicaset(cache, REVISION)
    assert current is not None
    assert current["metadata"]["name"] == f"{REV}-deployment-aaa"


@pytest.mark.parametrize(
    "objs",
    [
        pytest.param((), id="empty-cache"),
        pytest.param((replicaset("hello-00002"),), id="only-another-revisions"),
        pytest.param((replicaset(owner="someone-elses-deployment"),), id="not-owned-by-the-deployment"),
    ],
)
def test_no_current_replicaset_without_one_owned_by_the_revisions_deployment(objs: tuple[dict[str, Any], ...]) -> None:
    assert current_replicaset(replicasets(*objs), REVISION) is None


def test_revision_key_of_reads_the_revision_label() -> None:
    assert revision_key_of(replicaset()) == [f"{NS}/{REV}"]
    assert revision_key_of({"metadata": {"namespace": NS, "name": "x"}}) == []
