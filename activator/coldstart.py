"""Cold starts: the one place that owns them. One at a time per revision (single-flight), timed step by step.

Demand arrives as revision keys on a queue (a throttler that makes a request wait with no endpoint at all puts
its key there); :meth:`ColdStarts.run` takes them. A cold start asks its path for a replica (the local path,
which falls back to the standard one by itself, or the standard path), then waits until the revision has an
endpoint, recording each step in the :class:`~activator.journal.Journal` and counting the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from activator.journal import ColdStart, Journal
from activator.metrics import Metrics
from activator.scaling import ColdStartPath
from activator.throttling import SingleFlight
from activator.tracking import Tracker
from localsched.knative import KnativeValueError

log = logging.getLogger(__name__)


class ColdStarts:
    def __init__(
        self,
        tracker: Tracker,
        path: ColdStartPath,
        *,
        demand: asyncio.Queue[str],
        journal: Journal,
        metrics: Metrics,
        timeout: float,
        hold: Callable[[str], None] | None = None,
        release: Callable[[str], None] | None = None,
    ) -> None:
        self.hold = hold
        self.release = release
        self.tracker = tracker
        self.path = path
        self.demand = demand
        self.journal = journal
        self.metrics = metrics
        self.timeout = timeout
        self.flight: SingleFlight[None] = SingleFlight()

    def want(self, key: str) -> None:
        """A request waits with no endpoint at all (the throttler calls this synchronously): queue a cold start,
        and hold the revision's report to the autoscaler from this moment when the path claims replicas itself
        (``reporting``), so that no report goes out between the request and the path's decision."""
        if self.hold is not None and not self.flight.running(key):
            self.hold(key)
        self.demand.put_nowait(key)

    async def run(self) -> None:
        """Take demand off the queue for as long as the activator runs."""
        while True:
            key = await self.demand.get()
            self.flight.start(key, functools.partial(self._run, key))

    async def _run(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        started = time.monotonic()
        outcome, path = "error", self.path.name
        record: ColdStart | None = None
        try:
            revision = self.tracker.revision(key)
            if revision is None:
                outcome = "unknown_revision"
                return
            if self.tracker.endpoints(key):
                outcome = "not_needed"  # endpoints exist but are busy or suspect: no replica is missing
                return
            record = self.journal.open(key, path)
            path = record.path = await self.path.start(revision, record)
            if not self.tracker.addresses(key):
                await self.tracker.wait_until(key, lambda: bool(self.tracker.addresses(key)), self.timeout)
            record.step("ip_known")
            if not self.tracker.endpoints(key):
                record.waited_on("own readiness check of the IP")
            await self.tracker.wait_for_endpoints(key, self.timeout)
            record.step("ready")
            outcome = "ready"
            self.metrics.cold_start_duration.labels(path).observe(time.monotonic() - started)
        except TimeoutError:
            outcome = "timeout"
            log.warning("revision %s: no ready endpoint %.0fs after the cold start", key, self.timeout)
        except KnativeValueError as exc:
            outcome = "invalid_revision"
            log.warning("revision %s: cannot cold-start an invalid revision: %s", key, exc)
        except Exception:
            log.exception("revision %s: cold start failed", key)
        finally:
            if self.release is not None:
                self.release(key)  # no-op when the path has already reported
            if record is not None:
                self.journal.close(record, outcome)
            self.metrics.cold_starts.labels(namespace, name, path, outcome).inc()

    async def close(self) -> None:
        await self.flight.close()
