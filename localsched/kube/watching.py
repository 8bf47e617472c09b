"""Watch caches: list, then watch from the list's resourceVersion, and keep an indexed in-memory copy.

The loop, written once and tested against a real API server:

* list, and replace the store with the result, emitting the difference as events (so a re-list after a 410 or a
  reconnect loses nothing and duplicates nothing);
* watch from that resourceVersion with bookmarks and a server-side timeout, re-watching from the last version
  seen when the server ends the stream;
* on 410 Gone, re-list; when the stream is silent past an inactivity deadline or breaks, reconnect with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from localsched.kube.client import KubeClient, Obj
from localsched.kube.errors import Gone, KubeError
from localsched.kube.resources import Resource

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]
T = TypeVar("T")


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta["name"])


@dataclass(frozen=True)
class Event:
    type: EventType
    obj: Obj
    old: Obj | None = None


Handler = Callable[[Event], None]
IndexFunc = Callable[[Obj], Iterable[str]]


class _Index:
    def __init__(self, func: IndexFunc) -> None:
        self.func = func
        self.by_value: dict[str, set[Key]] = {}
        self.by_key: dict[Key, tuple[str, ...]] = {}

    def put(self, key: Key, obj: Obj) -> None:
        self.drop(key)
        values = tuple(dict.fromkeys(self.func(obj)))
        self.by_key[key] = values
        for value in values:
            self.by_value.setdefault(value, set()).add(key)

    def drop(self, key: Key) -> None:
        for value in self.by_key.pop(key, ()):
            keys = self.by_value.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_value[value]


class WatchCache:
    """An indexed, always-converging copy of one resource (optionally filtered by namespace and selectors).

    Handlers run synchronously in the watch task, after the store is updated; they must be quick and must not
    raise (an exception is logged and swallowed so one bad handler cannot stop the cache).
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 60,
        inactivity_seconds: float = 90.0,
        max_backoff: float = 5.0,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.inactivity_seconds = inactivity_seconds
        self.max_backoff = max_backoff
        self.name = name or resource.plural
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0
        self.watches = 0
        self.errors = 0
        self._store: dict[Key, Obj] = {}
        self._indexes: dict[str, _Index] = {}
        self._handlers: list[Handler] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- reading -------------------------------------------------------------------------------------------------

    def get(self, name: str, namespace: str = "") -> Obj | None:
        return self._store.get((namespace, name))

    def items(self) -> list[Obj]:
        return list(self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self._store.values()))

    def by_index(self, index: str, value: str) -> list[Obj]:
        keys = self._indexes[index].by_value.get(value, ())
        return [self._store[k] for k in keys]

    def index_values(self, index: str) -> list[str]:
        return list(self._indexes[index].by_value)

    # -- configuration -------------------------------------------------------------------------------------------

    def add_index(self, name: str, func: IndexFunc) -> None:
        index = _Index(func)
        for key, obj in self._store.items():
            index.put(key, obj)
        self._indexes[name] = index

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    # -- running -------------------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"watch:{self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """List and watch forever (until cancelled)."""
        failures = 0
        need_list = not self.resource_version  # a restarted cache resumes from the version it holds
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch_once()
                failures = 0
            except Gone:
                log.info("watch %s: resourceVersion %s is too old, re-listing", self.name, self.resource_version)
                need_list = True
            except asyncio.CancelledError:
                raise
            except (KubeError, OSError, ValueError) as exc:
                self.errors += 1
                failures += 1
                delay = min(self.max_backoff, 0.1 * 2 ** min(failures, 8)) * (0.5 + random.random() / 2)
                log.warning("watch %s failed (%s); reconnecting in %.2fs", self.name, exc, delay)
                # After a failure the version we hold may be compacted away; a re-list is always safe.
                need_list = need_list or failures > 1
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        result = await self.client.list(
            self.resource, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self.lists += 1
        kind = self.resource.kind
        fresh: dict[Key, Obj] = {}
        for item in result.get("items", []):
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", self.resource.api_version)
            fresh[key_of(item)] = item
        events: list[Event] = []
        for key, old in list(self._store.items()):
            if key not in fresh:
                events.append(Event("DELETED", old, old))
        for key, obj in fresh.items():
            old_obj = self._store.get(key)
            if old_obj is None:
                events.append(Event("ADDED", obj))
            elif _rv(old_obj) != _rv(obj):
                events.append(Event("MODIFIED", obj, old_obj))
        for event in events:
            self._apply(event)
        self.resource_version = result.get("metadata", {}).get("resourceVersion", "")
        self.synced.set()
        await self._notify()

    async def _watch_once(self) -> None:
        self.watches += 1
        stream = self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            timeout_seconds=self.timeout_seconds,
            inactivity_seconds=self.inactivity_seconds,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        async for raw in stream:
            kind = raw.get("type")
            obj: Obj = raw.get("object", {})
            rv = _rv(obj)
            if kind == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                log.warning("watch %s: ignoring event type %r", self.name, kind)
                continue
            obj.setdefault("kind", self.resource.kind)
            obj.setdefault("apiVersion", self.resource.api_version)
            key = key_of(obj)
            old = self._store.get(key)
            if kind == "DELETED":
                if old is not None:
                    self._apply(Event("DELETED", obj, old))
            elif old is None:
                self._apply(Event("ADDED", obj))
            else:
                self._apply(Event("MODIFIED", obj, old))
            if rv:
                self.resource_version = rv
            await self._notify()

    def _apply(self, event: Event) -> None:
        key = key_of(event.obj)
        if event.type == "DELETED":
            self._store.pop(key, None)
            for index in self._indexes.values():
                index.drop(key)
        else:
            self._store[key] = event.obj
            for index in self._indexes.values():
                index.put(key, event.obj)
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("watch %s: handler %r failed on %s", self.name, handler, event.type)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- waiting -------------------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[WatchCache], T | None], timeout: float) -> T:
        """Wait until ``predicate(cache)`` returns something truthy, re-checked on every change; return it.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self.synced.wait()
            async with self._changed:
                while True:
                    value = predicate(self)
                    if value:
                        return value
                    await self._changed.wait()

    async def wait_synced(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.synced.wait()


def _rv(obj: Obj) -> str:
    value: Any = obj.get("metadata", {}).get("resourceVersion", "")
    return str(value)
