"""Knative's autoscaler wire format: per-revision Stat messages, as the activator sends them to the autoscaler.

One binary websocket message carries one serialized ``WireStatMessages`` (the protobuf messages are in
``localsched/generated/stat.proto``, transcribed from knative/serving). This module is the only place that touches
the generated classes: the activator's reporter (``activator.reporting``), endpointsctl's demand sink and the
devcluster's autoscaler stand-in all speak in the plain dataclasses below.
"""

from __future__ import annotations

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


def encode(messages: Iterable[StatMessage]) -> bytes:
    wire = stat_pb2.WireStatMessages()
    for message in messages:
        s = message.stat
        wire.messages.add(
            namespace=message.namespace,
            name=message.name,
            stat=stat_pb2.Stat(
                pod_name=s.pod_name,
                average_concurrent_requests=s.average_concurrent_requests,
                average_proxied_concurrent_requests=s.average_proxied_concurrent_requests,
                request_count=s.request_count,
                proxied_request_count=s.proxied_request_count,
                process_uptime=s.process_uptime,
                timestamp=s.timestamp,
            ),
        )
    return wire.SerializeToString()


def decode(data: bytes) -> list[StatMessage]:
    """The messages in ``data``; like Knative's stat server, a message without a stat is skipped."""
    wire = stat_pb2.WireStatMessages()
    try:
        wire.ParseFromString(data)
    except DecodeError as exc:
        raise WireFormatError(f"not a WireStatMessages ({len(data)} bytes): {exc}") from exc
    return [
        StatMessage(
            m.namespace,
            m.name,
            Stat(
                pod_name=m.stat.pod_name,
                average_concurrent_requests=m.stat.average_concurrent_requests,
                average_proxied_concurrent_requests=m.stat.average_proxied_concurrent_requests,
                request_count=m.stat.request_count,
                proxied_request_count=m.stat.proxied_request_count,
                process_uptime=m.stat.process_uptime,
                timestamp=m.stat.timestamp,
            ),
        )
        for m in wire.messages
        if m.HasField("stat")
    ]
