"""Knative's autoscaler wire format: per-revision Stat messages, as the activator sends them to the autoscaler.

One binary websocket message carries one serialized ``WireStatMessages`` (the protobuf messages are in
``localsched/generated/stat.proto``, transcribed from knative/serving). This module is the only place that touches
the generated classes: the activator's reporter (``activator.reporting``), endpointsctl's demand sink and the
devcluster's autoscaler stand-in all speak in the plain dataclasses below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from localsched.generated import stat_pb2


class WireFormatError(ValueError):
    """Bytes that are not a ``WireStatMessages``."""


@dataclass(frozen=True)
class Stat:
    pod_name: str
    average_concurrent_requests: float = 0.0
    average_proxied_concurrent_requests: float = 0.0  # the part that came through a proxy (queue-proxy sets it)
    request_count: float = 0.0
    proxied_request_count: float = 0.0
    process_uptime: float = 0.0
    timestamp: int = 0  # seconds since the epoch


@dataclass(frozen=True)
class StatMessage:
    namespace: str
    name: str
    stat: Stat

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


STAT_FIELDS = dataclasses.fields(Stat)  # the same names as the protobuf's fields


def encode(messages: Iterable[StatMessage]) -> bytes:
    wire = stat_pb2.WireStatMessages()
    for message in messages:
        wire.messages.add(namespace=message.namespace, name=message.name,
                          stat=stat_pb2.Stat(**dataclasses.asdict(message.stat)))  # fmt: skip
    return wire.SerializeToString()


def decode(data: bytes) -> list[StatMessage]:
    """The messages in ``data``; like Knative's stat server, a message without a stat is skipped."""
    wire = stat_pb2.WireStatMessages()
    try:
        wire.ParseFromString(data)
    except DecodeError as exc:
        raise WireFormatError(f"not a WireStatMessages ({len(data)} bytes): {exc}") from exc
    return [
        StatMessage(m.namespace, m.name, Stat(**{f.name: getattr(m.stat, f.name) for f in STAT_FIELDS}))
        for m in wire.messages
        if m.HasField("stat")
    ]
