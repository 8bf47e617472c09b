"""A small async adapter over kubernetes_asyncio: plain JSON dicts in and out, typed errors, retries at the edge.

kubernetes_asyncio loads the configuration (kubeconfig or in-cluster service account) and owns the HTTP session;
this adapter talks to resource paths directly so that every resource, including custom ones, is handled alike.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from localsched.kube.errors import (
    Gone,
    KubeConnectionError,
    KubeError,
    ServerError,
    TooManyRequests,
    error_from_status,
    truncate,
)
from localsched.kube.resources import ENDPOINTSLICE_VERSIONS, Resource, endpointslices

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD"})
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class KubeRetryPolicy:
    """Retries at the adapter edge: bounded in attempts and time, ``Retry-After`` honoured."""

    attempts: int = 6
    deadline_seconds: float = 20.0
    initial_backoff: float = 0.1
    max_backoff: float = 2.0


def _retryable(method: str) -> Any:
    def predicate(exc: BaseException) -> bool:
        if isinstance(exc, TooManyRequests):
            return True  # the server refused before doing anything
        if isinstance(exc, KubeConnectionError):
            return method in IDEMPOTENT or bool(getattr(exc, "not_sent", False))
        if isinstance(exc, ServerError):
            return method in IDEMPOTENT and exc.status in (500, 502, 503, 504)
        return False

    return retry_if_exception(predicate)


def _wait(policy: KubeRetryPolicy) -> Any:
    backoff = wait_exponential_jitter(multiplier=policy.initial_backoff, max=policy.max_backoff)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, KubeError) and exc.retry_after is not None:
            return min(exc.retry_after, policy.deadline_seconds)
        return float(backoff(state))

    return wait


class RateLimit:
    """A token bucket in front of every request, as client-go's ``QPS``/``Burst`` (the kubelet: 50/100).

    ``burst`` requests go at once; beyond that, one every ``1/qps`` seconds, in the order they asked.
    """

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"rate limit needs qps > 0 and burst >= 1, got {qps} and {burst}")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.waited_seconds = 0.0

    async def take(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0  # reserve now: later callers queue behind this one
        if self._tokens < 0:
            delay = -self._tokens / self.qps
            self.waited_seconds += delay
            await asyncio.sleep(delay)


class KubeClient:
    """Plain-JSON access to the Kubernetes API. Create with :meth:`from_environment`; close with :meth:`close`."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        retry: KubeRetryPolicy | None = None,
        user_agent: str = "",
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._api = api
        self._retry = retry or KubeRetryPolicy()
        self.rate_limit = rate_limit
        if not any(os.environ.get(v) for v in PROXY_VARIABLES):
            # kubernetes_asyncio's session trusts the environment, so aiohttp looks proxies up in it on a worker
            # thread for every request; with no proxy variable set there is nothing to find (a kubeconfig's
            # proxy-url still applies).
            api.rest_client.pool_manager._trust_env = False
        if user_agent:
            api.user_agent = user_agent
        self._slice_version: str | None = None

    @classmethod
    async def from_environment(
        cls,
        kubeconfig: str | None = None,
        *,
        retry: KubeRetryPolicy | None = None,
        user_agent: str = "localsched",
        rate_limit: RateLimit | None = None,
    ) -> KubeClient:
        """``kubeconfig`` or ``$KUBECONFIG`` when set, else the in-cluster service account."""
        configuration = k8s_client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            await k8s_config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api = k8s_client.ApiClient(configuration)
        return cls(api, retry=retry, user_agent=user_agent, rate_limit=rate_limit)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- raw requests -------------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        query = [(k, _param(v)) for k, v in (params or {}).items() if v is not None]
        if self.rate_limit is not None:
            await self.rate_limit.take()
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=query,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout or aiohttp.ClientTimeout(total=30, sock_connect=5),
            )
        except aiohttp.ClientConnectorError as exc:
            error = KubeConnectionError(str(exc), method=method, path=path)
            error.not_sent = True  # type: ignore[attr-defined]
            raise error from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeConnectionError(str(exc) or type(exc).__name__, method=method, path=path) from exc
        if response.status >= 400:
            try:
                payload = await response.read()
            except aiohttp.ClientError:
                payload = b""
            finally:
                response.release()
            raise error_from_status(
                response.status, payload, method=method, path=path, retry_after=response.headers.get("Retry-After")
            )
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One API call with retries at the edge; returns the decoded JSON body."""
        retrying = AsyncRetrying(
            retry=_retryable(method),
            stop=stop_after_attempt(self._retry.attempts) | stop_after_delay(self._retry.deadline_seconds),
            wait=_wait(self._retry),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                response = await self._send(method, path, params=params, body=body, content_type=content_type)
                try:
                    raw = await response.read()
                except aiohttp.ClientError as exc:
                    raise KubeConnectionError(str(exc), method=method, path=path) from exc
                finally:
                    response.release()
                result: Obj = json.loads(raw) if raw else {}
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- typed verbs ---------------------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        return await self.request("GET", resource.path(namespace, name))

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        params = {"labelSelector": label_selector, "fieldSelector": field_selector, "resourceVersion": resource_version}
        return await self.request("GET", resource.path(namespace), params=params)

    async def create(self, resource: Resource, body: Obj, namespace: str | None = None) -> Obj:
        ns = namespace or body.get("metadata", {}).get("namespace")
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self.request("POST", resource.path(ns), body=body)

    async def replace(self, resource: Resource, body: Obj, namespace: str | None = None) -> Obj:
        meta = body["metadata"]
        ns = namespace or meta.get("namespace")
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self.request("PUT", resource.path(ns, meta["name"]), body=body)

    async def replace_status(self, resource: Resource, body: Obj) -> Obj:
        meta = body["metadata"]
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self.request("PUT", resource.path(meta.get("namespace"), meta["name"], "status"), body=body)

    async def patch(
        self,
        resource: Resource,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Obj:
        return await self.request(
            "PATCH", resource.path(namespace, name, subresource), body=body, content_type=content_type
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
        propagation: str | None = None,
    ) -> Obj:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = dict(preconditions)
        if propagation:
            body["propagationPolicy"] = propagation
        return await self.request("DELETE", resource.path(namespace, name), body=body)

    async def get_scale(self, resource: Resource, name: str, namespace: str) -> Obj:
        return await self.request("GET", resource.path(namespace, name, "scale"))

    async def replace_scale(self, resource: Resource, scale: Obj) -> Obj:
        meta = scale["metadata"]
        return await self.request("PUT", resource.path(meta["namespace"], meta["name"], "scale"), body=scale)

    # -- watch ---------------------------------------------------------------------------------------------------

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_seconds: int = 60,
        inactivity_seconds: float = 90.0,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[Obj]:
        """Stream watch events from ``resource_version``, bookmarks included.

        Ends when the server closes the stream (its ``timeoutSeconds``). Raises :class:`Gone` on 410 (too old a
        resourceVersion, re-list), :class:`KubeConnectionError` when nothing, not even a bookmark, arrived for
        ``inactivity_seconds`` (a silently dead stream), or the stream broke.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
        }
        path = resource.path(namespace)
        response = await self._send(
            "GET", path, params=params, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
        )
        try:
            while True:
                try:
                    async with asyncio.timeout(inactivity_seconds):
                        line = await response.content.readline()
                except TimeoutError as exc:
                    raise KubeConnectionError(
                        f"watch stream silent for {inactivity_seconds:.0f}s", method="WATCH", path=path
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise KubeConnectionError(f"watch stream broke: {exc}", method="WATCH", path=path) from exc
                if not line:
                    return
                event: Obj = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    code = int(status.get("code", 500))
                    if code == 410:
                        raise Gone(str(status.get("message", "too old resource version")), method="WATCH", path=path)
                    raise error_from_status(code, status, method="WATCH", path=path)
                yield event
        finally:
            response.release()

    # -- discovery -----------------------------------------------------------------------------------------------

    async def server_version(self) -> Obj:
        return await self.request("GET", "/version")

    async def served_versions(self, group: str) -> builtins.list[str]:
        try:
            info = await self.request("GET", f"/apis/{group}")
        except KubeError as exc:
            if exc.status == 404:
                return []
            raise
        return [v["version"] for v in info.get("versions", [])]

    async def endpointslice_resource(self) -> Resource:
        """The EndpointSlice API this server offers: discovery.k8s.io/v1 when served, else v1beta1."""
        if self._slice_version is None:
            served = await self.served_versions("discovery.k8s.io")
            chosen = next((v for v in ENDPOINTSLICE_VERSIONS if v in served), None)
            if chosen is None:
                raise KubeError(f"the server serves no EndpointSlice API (discovery.k8s.io: {served})", status=404)
            self._slice_version = chosen
        return endpointslices(self._slice_version)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe(obj: Obj) -> str:
    """``Kind ns/name`` for logs, without dumping the object."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind', '?')} {ns + '/' if ns else ''}{meta.get('name', '?')}"


__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "KubeClient",
    "KubeRetryPolicy",
    "Obj",
    "RateLimit",
    "describe",
    "truncate",
]
