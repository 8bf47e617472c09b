"""Kubernetes API timestamps, RFC 3339 in UTC as the API server writes them: ``Time`` to the second
(``2024-05-01T12:00:00Z``: creation, transition and Event times) and ``MicroTime`` to the microsecond
(``2024-05-01T12:00:00.123456Z``: Lease acquire and renew times)."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> str:
    """The current time as a ``Time``."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def micro_now() -> str:
    """The current time as a ``MicroTime``."""
    return datetime.now(UTC).strftime(MICRO_TIME_FORMAT)


def epoch_seconds(timestamp: str) -> float:
    """A ``Time`` as seconds since the epoch (ValueError when it is not one)."""
    return float(calendar.timegm(time.strptime(timestamp, TIME_FORMAT)))
