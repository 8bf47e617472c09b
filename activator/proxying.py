"""The request path: identify the revision, wait for capacity, forward, retry on dead endpoints, answer.

Every refusal is a Knative status code with a short body saying what happened and what to do, and is counted:
unknown revision 404, malformed routing headers 400, queue full or activation timeout 503 with Retry-After,
upstream error 502, request timeout 504.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Histogram
from tenacity import RetryCallState

from activator.forwarding import BodyTooLarge, Forwarder, UpstreamFailed, is_websocket
from activator.journal import Journal
from activator.metrics import Metrics
from activator.reporting import Reporter
from activator.retrying import NotDelivered, RetryPolicy, retry_reason, retrying
from activator.routing import PROBE_VALUE, BadRevisionHeaders, RevisionRef, identify, is_probe
from activator.settings import Settings
from activator.throttling import ActivationTimeout, Endpoint, QueueFull
from activator.tracking import Tracker
from localsched.knative import KnativeValueError, Revision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # metric label
    message: str
    retry_after: int | None = None

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.Response(status=self.status, text=self.message + "\n", headers=headers)


class Refused(Exception):
    """A request the activator answers itself; ``ref`` names the revision when it is a known one."""

    def __init__(self, refusal: Refusal, ref: RevisionRef | None = None) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.namespace = ref.namespace if ref is not None else ""
        self.name = ref.name if ref is not None else ""


# Counted (as nginx logs it) for a request whose client closed the connection before its answer.
CLIENT_CLOSED = 499

# A "%" not followed by two hex digits (RFC 3986 section 2.1): such a target cannot be forwarded as it came.
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

# What a forward raises when it failed without an answer; ``retry_reason`` tells which never reached the pod.
UNREACHED = (aiohttp.ClientError, NotDelivered)


def code_class(status: int) -> str:
    return f"{status // 100}xx"


class Proxy:
    def __init__(
        self,
        settings: Settings,
        tracker: Tracker,
        forwarder: Forwarder,
        metrics: Metrics,
        journal: Journal,
        reporter: Reporter,
    ) -> None:
        self.settings = settings
        self.reporter = reporter
        self.tracker = tracker
        self.forwarder = forwarder
        self.metrics = metrics
        self.journal = journal
        self.policy = RetryPolicy(
            max_attempts=settings.forwarding.max_attempts, suspect_seconds=settings.forwarding.suspect_seconds
        )
        self._synced = False  # the caches, once synced, stay so: checked until then, not per request
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        # After a first attempt that never reached a pod: the attempts left.
        self.retries = dataclasses.replace(self.policy, max_attempts=max(1, self.policy.max_attempts - 1))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if is_probe(request.headers):
            return web.Response(text=PROBE_VALUE)
        try:
            ref, revision = self._target(request)
        except Refused as refused:
            return self._refuse(refused.namespace, refused.name, refused.refusal)

        started = time.monotonic()
        labels = (ref.namespace, ref.name)
        status = 500
        self.reporter.request_in(ref.key)  # queued or forwarded, it is demand the autoscaler must hear of
        try:
            response = await self._proxy(request, ref.key, float(revision.timeout_seconds))
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client went away (aiohttp cancels its handler): not the revision's error
            raise
        finally:
            self.reporter.request_out(ref.key)
            self._count(labels, status, time.monotonic() - started)

    def _target(self, request: web.Request) -> tuple[RevisionRef, Revision]:
        """The revision ``request`` is for, if it may be sent there; else :class:`Refused` says why not."""
        refused = self._unservable(request)
        if refused is not None:
            raise Refused(refused)
        if not self._synced and not self._check_synced():  # serve() listens only once synced; others may not
            raise Refused(Refusal(503, "starting", "the activator is starting (its watch caches are not synced); "
                                  "retry", retry_after=self.settings.throttling.retry_after_seconds))  # fmt: skip
        try:
            ref = identify(request.headers, request.host, self.settings.cluster_domain)
        except BadRevisionHeaders as exc:
            raise Refused(Refusal(400, "bad_headers", f"bad routing headers: {exc}")) from exc
        if ref is None:
            raise Refused(Refusal(404, "no_revision", (
                "no revision named: send Knative-Serving-Namespace and Knative-Serving-Revision headers, "
                "or Host: {revision}.{namespace}.svc")))  # fmt: skip
        try:
            revision = self.tracker.revision(ref.key)
        except KnativeValueError as exc:
            raise Refused(Refusal(500, "invalid_revision", (
                f"revision {ref.key} has an invalid spec ({exc}); fix the revision")), ref) from exc  # fmt: skip
        if revision is None:  # counted without the names the client chose: no client mints metric series
            raise Refused(Refusal(404, "unknown_revision", (
                f"revision {ref.key} not found; check the namespace and revision names")))  # fmt: skip
        limit = self.settings.server.max_body_bytes
        if limit and (request.content_length or 0) > limit:
            raise Refused(Refusal(413, "body_too_large", (
                f"request body of {request.content_length} bytes is over the limit of {limit}")), ref)  # fmt: skip
        return ref, revision

    def _check_synced(self) -> bool:
        self._synced = self.tracker.synced()
        return self._synced

    @staticmethod
    def _unservable(request: web.Request) -> Refusal | None:
        """What no revision could be sent, whatever it is: an upgrade (WebSocket) or a malformed request target."""
        upgrade = request.headers.get("Upgrade") and "upgrade" in request.headers.get("Connection", "").lower()
        if upgrade and not is_websocket(request):
            return Refusal(501, "upgrade_unsupported", (
                f"this activator proxies WebSocket upgrades only, not {request.headers['Upgrade']!r}; send such "
                "requests to the revision's Service directly"))  # fmt: skip
        if BAD_PERCENT.search(request.raw_path):
            return Refusal(400, "bad_request_target", "invalid percent-encoding in the request target")
        return None

    def _count(self, labels: tuple[str, str], status: int, seconds: float) -> None:
        """Count an answered request; the metrics' children are looked up once per revision and code class."""
        key = (*labels, code_class(status))
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.metrics.requests.labels(*key)
        requests.inc()
        duration = self._durations.get(labels)
        if duration is None:
            duration = self._durations[labels] = self.metrics.request_duration.labels(*labels)
        duration.observe(seconds)

    async def _proxy(self, request: web.Request, key: str, timeout: float) -> web.StreamResponse:
        namespace, _, name = key.partition("/")
        throttler = self.tracker.throttler(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tried: set[Endpoint] = set()
        throttling = self.settings.throttling

        def count_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = retry_reason(exc) if exc else None
            self.metrics.forward_retries.labels(str(reason)).inc()

        first_byte = functools.partial(self.journal.first_byte, key)

        async def attempt() -> web.StreamResponse:
            wait = min(throttling.activation_timeout_seconds, max(0.0, deadline - loop.time()))
            # Another endpoint when there is one; else the same one, once it is no longer suspect.
            others = bool(set(throttler.endpoints) - tried)
            async with throttler.acquire(wait, exclude=frozenset(tried) if others else frozenset()) as endpoint:
                tried.add(endpoint)
                try:
                    return await self.forwarder.forward(
                        request, endpoint, timeout=deadline - loop.time(), on_headers=first_byte
                    )
                except UNREACHED as exc:
                    if retry_reason(exc) is not None:
                        throttler.mark_suspect(endpoint, self.policy.suspect_seconds)
                    raise

        response: web.StreamResponse | None = None
        try:
            try:
                response = await attempt()  # nearly every request: one attempt, no retry machinery on its way
            except UNREACHED as exc:
                first_failure = retry_reason(exc)
                if first_failure is None or self.policy.max_attempts < 2:
                    raise
                self.metrics.forward_retries.labels(str(first_failure)).inc()
                async for retry in retrying(self.retries, before_retry=count_retry):
                    with retry:
                        response = await attempt()
        except UpstreamFailed:
            raise  # the response had started: the connection is cut, nothing more can be said
        except BodyTooLarge as exc:
            return self._refuse(namespace, name, Refusal(413, "body_too_large", f"{exc}: not forwarded whole"))
        except (QueueFull, ActivationTimeout, TimeoutError, *UNREACHED) as exc:
            past_deadline = loop.time() >= deadline
            return self._refuse(namespace, name, self._refusal(exc, key, timeout, past_deadline, len(tried)))
        assert response is not None
        return response

    def _refusal(self, exc: Exception, key: str, timeout: float, past_deadline: bool, tried: int) -> Refusal:
        """What to answer when forwarding stopped on ``exc`` after trying ``tried`` endpoints."""
        throttling = self.settings.throttling
        if isinstance(exc, QueueFull):
            return Refusal(503, "queue_full", (
                f"revision {key} has {throttling.queue_limit} requests queued already ({exc}); retry later"),
                retry_after=throttling.retry_after_seconds)  # fmt: skip
        if isinstance(exc, ActivationTimeout):
            if past_deadline:
                return Refusal(504, "request_timeout", (
                    f"revision {key} did not answer within its timeout of {timeout:.0f}s ({exc})"))  # fmt: skip
            return Refusal(503, "activation_timeout", (
                f"revision {key} had no capacity within {throttling.activation_timeout_seconds:.0f}s ({exc}); "
                "retry later"), retry_after=throttling.retry_after_seconds)  # fmt: skip
        if isinstance(exc, TimeoutError):
            return Refusal(504, "request_timeout", (
                f"revision {key} did not answer within its timeout of {timeout:.0f}s"))  # fmt: skip
        reason = "connect_failed" if retry_reason(exc) else "upstream_error"
        detail = f"tried {tried} endpoint(s)" if reason == "connect_failed" else type(exc).__name__
        return Refusal(502, reason, f"revision {key}: upstream error ({detail}: {exc})")

    def _refuse(self, namespace: str, name: str, refusal: Refusal) -> web.Response:
        self.metrics.refusals.labels(namespace, name, refusal.reason).inc()
        if refusal.status >= 500:
            log.info("refused %s/%s: %d %s", namespace, name, refusal.status, refusal.message)
        return refusal.response()
