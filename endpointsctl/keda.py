"""KEDA's external scaler (``externalscaler.ExternalScaler`` over gRPC), answered from the activators' demand.

A KEDA ScaledObject of trigger type ``external-push`` (or ``external``) names a revision in its trigger metadata:
``revision`` (required), ``namespace`` (default: the ScaledObject's) and ``targetDemand`` (requests per replica,
default 100, as Knative's ``container-concurrency-target-default``). Then:

* ``IsActive``: the revision's demand (:class:`~endpointsctl.demand.Demand`) is above 0.
* ``StreamIsActive``: the same, sent at once and again the moment it changes (KEDA scales from zero on the first
  ``true`` without waiting for its polling interval), and every 5 s regardless, until the client goes away.
* ``GetMetricSpec``: one metric, ``localsched-demand-<namespace>-<revision>``, with ``targetDemand`` as its target.
* ``GetMetrics``: the demand, as ``metricValueFloat`` and rounded up as ``metricValue``.
* ``StreamMetricSpec``: UNIMPLEMENTED (optional in KEDA; the spec never changes without the ScaledObject changing).

A reference without a revision, or with a bad ``targetDemand``, is refused with INVALID_ARGUMENT naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from endpointsctl.demand import Demand
from endpointsctl.metrics import Metrics
from localsched.generated import externalscaler_pb2 as pb
from localsched.generated import externalscaler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_TARGET_DEMAND = 100.0
KEEPALIVE_SECONDS = 5.0
METRIC_PREFIX = "localsched-demand-"
_NOT_IN_METRIC_NAMES = re.compile(r"[^a-z0-9-]+")


class InvalidReference(ValueError):
    """A ScaledObjectRef that names no revision, or whose metadata is invalid."""


@dataclass(frozen=True)
class Target:
    """The revision a ScaledObjectRef names, and the demand one replica is meant to take."""

    namespace: str
    revision: str
    target_demand: float = DEFAULT_TARGET_DEMAND

    @classmethod
    def from_ref(cls, ref: pb.ScaledObjectRef) -> Target:
        metadata = ref.scalerMetadata
        revision = metadata.get("revision", "").strip()
        if not revision:
            raise InvalidReference(
                f"ScaledObject {ref.namespace}/{ref.name}: trigger metadata 'revision' is required "
                f"(the Knative revision whose activator demand scales it)"
            )
        namespace = metadata.get("namespace", "").strip() or ref.namespace
        if not namespace:
            raise InvalidReference(
                f"ScaledObject {ref.name}: no namespace for revision {revision!r}: set trigger metadata 'namespace'"
            )
        raw = metadata.get("targetDemand", "").strip()
        target = DEFAULT_TARGET_DEMAND
        if raw:
            try:
                target = float(raw)
            except ValueError:
                target = math.nan
            if not (math.isfinite(target) and target > 0):
                raise InvalidReference(
                    f"ScaledObject {ref.namespace}/{ref.name}: trigger metadata targetDemand={raw!r} is invalid: "
                    f"a number > 0 (the requests one replica takes)"
                )
        return cls(namespace, revision, target)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.revision}"

    @property
    def metric_name(self) -> str:
        """``localsched-demand-<namespace>-<revision>``: lower-case letters, digits and dashes only."""
        return METRIC_PREFIX + _NOT_IN_METRIC_NAMES.sub("-", f"{self.namespace}-{self.revision}".lower()).strip("-")


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    """The servicer. :meth:`close` ends the open streams (on shutdown), so that the server stops without waiting."""

    def __init__(
        self, demand: Demand, metrics: Metrics | None = None, *, keepalive_seconds: float = KEEPALIVE_SECONDS
    ) -> None:
        self.demand = demand
        self.metrics = metrics
        self.keepalive_seconds = keepalive_seconds
        self.closing = False
        self._streams: set[asyncio.Event] = set()

    async def IsActive(self, request: pb.ScaledObjectRef, context: aio.ServicerContext) -> pb.IsActiveResponse:
        target = await self._target("IsActive", request, context)
        return pb.IsActiveResponse(result=self.demand.active(target.key))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: aio.ServicerContext
    ) -> AsyncIterator[pb.IsActiveResponse]:
        target = await self._target("StreamIsActive", request, context)
        log.debug("KEDA streams the activity of %s (ScaledObject %s/%s)", target.key, request.namespace, request.name)
        with self.demand.watch(target.key) as changed:
            self._streams.add(changed)
            try:
                while not self.closing:
                    changed.clear()  # before reading: a change from here on wakes the wait below
                    yield pb.IsActiveResponse(result=self.demand.active(target.key))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.keepalive_seconds):
                            await changed.wait()
            finally:
                self._streams.discard(changed)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        target = await self._target("GetMetricSpec", request, context)
        spec = pb.MetricSpec(
            metricName=target.metric_name,
            targetSize=math.ceil(target.target_demand),
            targetSizeFloat=target.target_demand,
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: aio.ServicerContext) -> pb.GetMetricsResponse:
        target = await self._target("GetMetrics", request.scaledObjectRef, context)
        demand = self.demand.demand(target.key)
        value = pb.MetricValue(metricName=target.metric_name, metricValue=math.ceil(demand), metricValueFloat=demand)
        return pb.GetMetricsResponse(metricValues=[value])

    async def StreamMetricSpec(self, request: pb.ScaledObjectRef, context: aio.ServicerContext) -> None:
        self._count("StreamMetricSpec", grpc.StatusCode.UNIMPLEMENTED)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "StreamMetricSpec is not served: use GetMetricSpec")

    def close(self) -> None:
        """End every StreamIsActive (each returns after its current message); new ones end at once."""
        self.closing = True
        for changed in self._streams:
            changed.set()

    async def _target(self, method: str, ref: pb.ScaledObjectRef, context: aio.ServicerContext) -> Target:
        try:
            target = Target.from_ref(ref)
        except InvalidReference as exc:
            self._count(method, grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this only tells the type checker
        self._count(method, grpc.StatusCode.OK)
        return target

    def _count(self, method: str, code: Any) -> None:
        if self.metrics is not None:
            self.metrics.keda_requests.labels(method, code.name).inc()


class ScalerServer:
    """A ``grpc.aio`` server for one :class:`ExternalScaler` on ``host:port`` (port 0: any free port)."""

    def __init__(self, scaler: ExternalScaler, host: str, port: int) -> None:
        self.scaler = scaler
        self.host = host
        self.port = port
        self._server: Any = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> int:
        """Bind and serve; the bound port (also in :attr:`port`). Fails when the address is taken."""
        # No SO_REUSEPORT (gRPC sets it by default): a second process on the same port must fail, not share it.
        server = aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalScalerServicer_to_server(self.scaler, server)  # type: ignore[no-untyped-call]
        try:
            self.port = server.add_insecure_port(self.address)  # RuntimeError when the address is taken
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        self._server = server
        log.info("KEDA external scaler serving on %s", self.address)
        return int(self.port)

    async def stop(self, grace: float) -> None:
        """Stop taking calls, end the streams, and give unary calls ``grace`` seconds to finish. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self.scaler.close()
        await server.stop(grace)
