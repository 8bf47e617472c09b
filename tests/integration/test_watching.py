"""The watch cache against the real API server: events, 410 Gone, silent streams, API server restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from devcluster import controlplane
from localsched.kube import resources as r
from localsched.kube.client import KubeClient
from localsched.kube.watching import Event, WatchCache
from tests.integration.kit import wait_for


def configmap(name: str, value: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "data": {"value": value}}


def value_of(cache: WatchCache, name: str, namespace: str) -> str | None:
    obj = cache.get(name, namespace)
    return None if obj is None else str(obj["data"]["value"])


async def names_in_api(kube: KubeClient, namespace: str) -> dict[str, str]:
    listed = await kube.list(r.CONFIGMAPS, namespace, label_selector="t=watch")
    return {o["metadata"]["name"]: o["data"]["value"] for o in listed["items"]}


def labelled(name: str, value: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {"t": "watch"}}, "data": {"value": value}}


async def test_creates_updates_and_deletes_are_observed_in_order(kube: KubeClient, namespace: str) -> None:
    cache = WatchCache(kube, r.CONFIGMAPS, namespace=namespace, label_selector="t=watch")
    seen: list[tuple[str, str]] = []
    cache.add_handler(lambda e: seen.append((e.type, e.obj["metadata"]["name"])))
    cache.add_index("value", lambda o: [o["data"]["value"]])
    cache.start()
    try:
        await cache.wait_synced(30)
        await kube.create(r.CONFIGMAPS, labelled("a", "1"), namespace)
        await wait_for(cache, lambda c: value_of(c, "a", namespace) == "1")
        assert [o["metadata"]["name"] for o in cache.by_index("value", "1")] == ["a"]
        await kube.patch(r.CONFIGMAPS, "a", {"data": {"value": "2"}}, namespace)
        await wait_for(cache, lambda c: value_of(c, "a", namespace) == "2")
        assert cache.by_index("value", "1") == []
        await kube.delete(r.CONFIGMAPS, "a", namespace)
        await wait_for(cache, lambda c: c.get("a", namespace) is None)
    finally:
        await cache.stop()
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


async def test_too_old_resource_version_relists_with_nothing_lost_and_nothing_duplicated(
    kube: KubeClient, namespace: str, devcluster: Path
) -> None:
    for name in ("keep", "change", "remove"):
        await kube.create(r.CONFIGMAPS, labelled(name, "1"), namespace)
    cache = WatchCache(kube, r.CONFIGMAPS, namespace=namespace, label_selector="t=watch")
    events: list[Event] = []
    cache.add_handler(events.append)
    cache.start()
    await cache.wait_for(lambda c: len(c) == 3, 30)
    await cache.stop()
    events.clear()

    # While the cache is away: one create, one update, one delete; and the API server restarts, so its new watch
    # cache starts after the version the cache holds (a dynamic window keeps >= 75 s of history, so churn alone
    # would not expire it quickly). Resuming from that version must answer 410 Gone.
    await kube.create(r.CONFIGMAPS, labelled("new", "1"), namespace)
    await kube.patch(r.CONFIGMAPS, "change", {"data": {"value": "2"}}, namespace)
    await kube.delete(r.CONFIGMAPS, "remove", namespace)
    await asyncio.to_thread(controlplane.restart_apiserver, devcluster)
    lists_before = cache.lists
    cache.start()
    try:
        expected = await names_in_api(kube, namespace)
        await wait_for(
            cache,
            lambda c: {o["metadata"]["name"]: o["data"]["value"] for o in c} == expected and c.lists > lists_before,
        )
    finally:
        await cache.stop()
    assert cache.lists == lists_before + 1, "the 410 must end in exactly one re-list"
    assert Counter((e.type, e.obj["metadata"]["name"]) for e in events) == Counter(
        [("ADDED", "new"), ("MODIFIED", "change"), ("DELETED", "remove")]
    )


async def test_silent_stream_is_reconnected_after_the_inactivity_deadline(kube: KubeClient, namespace: str) -> None:
    cache = WatchCache(kube, r.CONFIGMAPS, namespace=namespace, label_selector="t=watch",
                       timeout_seconds=300, inactivity_seconds=0.5, max_backoff=0.2)  # fmt: skip
    cache.start()
    try:
        await cache.wait_synced(30)
        # Nothing happens in this namespace: the stream stays silent, and the deadline must end it.
        await wait_for(cache, lambda c: c.errors >= 1 and c.watches >= 2, timeout=30)
        await kube.create(r.CONFIGMAPS, labelled("after", "1"), namespace)
        await wait_for(cache, lambda c: value_of(c, "after", namespace) == "1")
    finally:
        await cache.stop()


async def test_cache_survives_an_api_server_restart_and_converges(
    kube: KubeClient, namespace: str, devcluster: Path
) -> None:
    cache = WatchCache(kube, r.CONFIGMAPS, namespace=namespace, label_selector="t=watch", max_backoff=0.5)
    cache.start()
    try:
        await cache.wait_synced(30)
        await kube.create(r.CONFIGMAPS, labelled("before", "1"), namespace)
        await wait_for(cache, lambda c: c.get("before", namespace) is not None)
        await asyncio.to_thread(controlplane.restart_apiserver, devcluster)
        await kube.patch(r.CONFIGMAPS, "before", {"data": {"value": "2"}}, namespace)
        await kube.create(r.CONFIGMAPS, labelled("after", "1"), namespace)
        expected = await names_in_api(kube, namespace)
        await wait_for(cache, lambda c: {o["metadata"]["name"]: o["data"]["value"] for o in c} == expected, 60)
        assert cache.errors >= 1, "the restart should have broken the stream at least once"
    finally:
        await cache.stop()
