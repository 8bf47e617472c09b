"""Cold starts: one at a time per revision (single-flight), timed and counted by path and outcome."""

from __future__ import annotations

import asyncio
import logging
import time

from activator.metrics import Metrics
from activator.scaling import ColdStartPath
from activator.throttling import SingleFlight
from activator.tracking import Tracker

log = logging.getLogger(__name__)


class ColdStarts:
    def __init__(self, path: ColdStartPath, metrics: Metrics, *, timeout: float) -> None:
        self.path = path
        self.metrics = metrics
        self.timeout = timeout
        self.tracker: Tracker | None = None  # set once the tracker exists (it calls trigger)
        self.flight: SingleFlight[None] = SingleFlight()
        self._tasks: set[asyncio.Task[None]] = set()

    def trigger(self, key: str) -> None:
        """Called by a throttler when a request must wait and the revision has no ready endpoint."""
        if self.flight.running(key):
            return
        task = asyncio.create_task(self.flight.run(key, lambda: self._run(key)), name=f"coldstart:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: str) -> None:
        assert self.tracker is not None
        namespace, _, name = key.partition("/")
        started = time.monotonic()
        outcome = "error"
        path = self.path.name
        try:
            revision = self.tracker.revision(key)
            if revision is None:
                outcome = "unknown_revision"
                return
            if self.tracker.endpoints(key):
                outcome = "not_needed"  # endpoints exist but are busy or suspect: no replica is missing
                return
            path = await self.path.ensure_capacity(revision)
            await self.tracker.wait_for_endpoints(key, self.timeout)
            outcome = "ready"
            self.metrics.cold_start_duration.labels(path).observe(time.monotonic() - started)
            log.info("revision %s: cold start (%s) ready in %.3fs", key, path, time.monotonic() - started)
        except TimeoutError:
            outcome = "timeout"
            log.warning("revision %s: no ready endpoint %.0fs after the cold start", key, self.timeout)
        except Exception:
            log.exception("revision %s: cold start failed", key)
        finally:
            self.metrics.cold_starts.labels(namespace, name, path, outcome).inc()

    async def close(self) -> None:
        await self.flight.close()
