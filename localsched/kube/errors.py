"""One error family for the Kubernetes API boundary, mapped from HTTP status in one place."""

from __future__ import annotations

import json
from typing import Any

PAYLOAD_LOG_LIMIT = 500


def truncate(text: str, limit: int = PAYLOAD_LOG_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status (0 when the server was never reached)."""

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        method: str = "",
        path: str = "",
        payload: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        self.payload = payload
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else ""
        return f"{self.status} {self.reason}: {self.args[0]}{where}"


class KubeConnectionError(KubeError):
    """The API server could not be reached (refused, reset, timed out)."""


class BadRequest(KubeError):
    status = 400


class Unauthorized(KubeError):
    status = 401


class Forbidden(KubeError):
    status = 403


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    """409: a stale resourceVersion on update, or (subclass) the object already exists."""

    status = 409


class AlreadyExists(Conflict):
    pass


class Gone(KubeError):
    """410: the resourceVersion asked for is too old; re-list."""

    status = 410


class Invalid(KubeError):
    status = 422


class TooManyRequests(KubeError):
    status = 429


class ServerError(KubeError):
    status = 500


_BY_STATUS: dict[int, type[KubeError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def error_from_status(
    status: int,
    body: str | bytes | dict[str, Any],
    *,
    method: str = "",
    path: str = "",
    retry_after: str | None = None,
) -> KubeError:
    """Build the typed error for an HTTP status and a (usually ``Status``) body."""
    payload: Any
    if isinstance(body, bytes | str):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
    else:
        payload = body
    message = reason = ""
    if isinstance(payload, dict):
        message = str(payload.get("message", ""))
        reason = str(payload.get("reason", ""))
    else:
        message = truncate(str(payload))
    cls: type[KubeError]
    if status == 409 and reason == "AlreadyExists":
        cls = AlreadyExists
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, KubeError)
    seconds: float | None = None
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
    return cls(
        truncate(message) or f"HTTP {status}",
        status=status,
        reason=reason,
        method=method,
        path=path,
        payload=payload,
        retry_after=seconds,
    )
