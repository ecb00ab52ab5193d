"""KEDA's external scaler over gRPC: a ScaledObject gets Spillway's desired replicas as its metric.

A trigger of ``type: external-push`` (or ``external``) with ``metadata: {scalerAddress: ..., model: NAME}``
asks this server about one model:

* ``GetMetricSpec``: one metric, ``spillway-replicas-<model>``, target size 1, so that the HPA KEDA
  makes wants exactly as many replicas as the metric's value;
* ``GetMetrics``: the replicas of Spillway's newest decision for the model;
* ``IsActive``: False only when that decision is zero replicas (KEDA then scales the workload to zero);
* ``StreamIsActive``: the same, pushed at once and then on every decision for the model.

Only the process that owns a model answers for it. A model of the policies that another process owns
(or nobody owns, mid-rebalance) is refused with ``UNAVAILABLE`` "not owner", a model this process owns
but has not decided yet with ``UNAVAILABLE`` too: KEDA retries both. A model of no policy is
``NOT_FOUND``, a trigger without ``model`` ``INVALID_ARGUMENT``. A stream ends with "not owner" when
the model moves away, so KEDA reconnects (through the Service) and finds its new owner.

The server is a :class:`scaler.ports.DecisionObserver` of the executor: it only reads decisions, and
holds no lock of the daemon's. Generated code: ``externalscaler_pb2*.py`` beside this file (the
command that makes them is at the top of ``externalscaler.proto``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter

from scaler.adapters import externalscaler_pb2 as pb
from scaler.adapters import externalscaler_pb2_grpc as pb_grpc
from scaler.core.types import Decision

log = structlog.get_logger("scaler.keda")

METRIC_PREFIX = "spillway-replicas-"


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a model is not answered: a gRPC status code name and a message for KEDA's log."""

    code: str  # "INVALID_ARGUMENT", "NOT_FOUND" or "UNAVAILABLE"
    message: str


def metric_name(model: str) -> str:
    """Return the metric name of ``model``: lower case, runs of other characters than [a-z0-9] as '-'."""
    return METRIC_PREFIX + (re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model")


def resolve(
    metadata: Mapping[str, str],
    *,
    known: Collection[str],
    owned: Collection[str],
    desired: Mapping[str, int],
) -> tuple[str, int] | Refusal:
    """Return (model, desired replicas) for a trigger's ``metadata``, or the Refusal to answer with.

    ``known`` are the models of the policies, ``owned`` those this process acts for, ``desired`` the
    replicas of each owned model's newest decision.
    """
    model = metadata.get("model", "").strip()
    if not model:
        return Refusal("INVALID_ARGUMENT", "the trigger's metadata has no 'model' (e.g. model: llama-8b)")
    if model not in known:
        return Refusal("NOT_FOUND", f"model {model!r} is in no Spillway policy")
    if model not in owned:
        return Refusal("UNAVAILABLE", f"not owner: this Spillway process does not own model {model!r}")
    replicas = desired.get(model)
    if replicas is None:
        return Refusal("UNAVAILABLE", f"model {model!r} has no decision yet")
    return model, replicas


class KedaScaler(pb_grpc.ExternalScalerServicer):  # the generated base: gRPC finds the methods by name
    """Serves KEDA's external scaler interface from the decisions it observes (a DecisionObserver)."""

    def __init__(
        self,
        *,
        known: Callable[[], Collection[str]],
        owned: Callable[[], Collection[str]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Create an observer; ``known``/``owned`` return the policies' models and this process's."""
        self.known = known
        self.owned = owned
        self.desired: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self.requests = Counter(
            "scaler_keda_requests",
            "KEDA external scaler calls, by method and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )

    # -- DecisionObserver ---------------------------------------------------------------------------

    def decided(self, *, model: str, decision: Decision, payload: Mapping[str, object]) -> None:
        """Keep ``decision``'s replicas as ``model``'s metric and wake its streams."""
        self.desired[model] = decision.replicas
        self._wake(model)

    def released(self, models: frozenset[str]) -> None:
        """Forget ``models``; their streams end with "not owner"."""
        for model in models:
            self.desired.pop(model, None)
            self._wake(model)

    def _wake(self, model: str) -> None:
        event = self._changed.pop(model, None)
        if event is not None:
            event.set()

    def _next_change(self, model: str) -> asyncio.Event:
        return self._changed.setdefault(model, asyncio.Event())

    # -- the gRPC methods ---------------------------------------------------------------------------

    def _lookup(self, ref: Any, method: str) -> tuple[str, int] | Refusal:
        metadata = dict(ref.scalerMetadata)
        found = resolve(metadata, known=self.known(), owned=self.owned(), desired=self.desired)
        self.requests.labels(method=method, code=found.code if isinstance(found, Refusal) else "OK").inc()
        return found

    async def _answer(self, ref: Any, context: Any, method: str) -> tuple[str, int]:
        found = self._lookup(ref, method)
        if isinstance(found, Refusal):
            await _abort(context, found)
        assert not isinstance(found, Refusal)  # abort raised
        return found

    async def IsActive(self, request: Any, context: Any) -> Any:  # noqa: N802  # gRPC's method name
        """Return whether the model's newest decision wants any replicas."""
        _, replicas = await self._answer(request, context, "IsActive")
        return pb.IsActiveResponse(result=replicas > 0)

    async def StreamIsActive(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        """Yield whether the model is active now, then again after every decision for it."""
        while True:
            found = self._lookup(request, "StreamIsActive")
            if isinstance(found, Refusal):
                await _abort(context, found)
                return
            model, replicas = found
            change = self._next_change(model)  # taken with the answer: a decision made meanwhile wakes it
            yield pb.IsActiveResponse(result=replicas > 0)
            await change.wait()

    async def GetMetricSpec(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return the model's one metric with target size 1 (the HPA's desired count = Spillway's)."""
        model = dict(request.scalerMetadata).get("model", "").strip()
        if not model or model not in self.known():  # any process answers for a known model
            await self._answer(request, context, "GetMetricSpec")  # refuses with the reason
        else:
            self.requests.labels(method="GetMetricSpec", code="OK").inc()
        spec = pb.MetricSpec(metricName=metric_name(model), targetSize=1, targetSizeFloat=1.0)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return the replicas of the model's newest decision as the metric's value."""
        model, replicas = await self._answer(request.scaledObjectRef, context, "GetMetrics")
        value = pb.MetricValue(
            metricName=request.metricName or metric_name(model),
            metricValue=replicas,
            metricValueFloat=float(replicas),
        )
        return pb.GetMetricsResponse(metricValues=[value])


async def _abort(context: Any, refusal: Refusal) -> None:
    """End the call with ``refusal``'s status (grpc.aio raises out of abort)."""
    await context.abort(getattr(grpc.StatusCode, refusal.code), refusal.message)


@dataclasses.dataclass(frozen=True, slots=True)
class Tls:
    """Server certificate and key, and the CA that client certificates must chain to (None: any client)."""

    certfile: Path
    keyfile: Path
    client_cafile: Path | None = None


class KedaServer:
    """A grpc.aio server of one :class:`KedaScaler` on ``host:port`` (port 0: any free port)."""

    def __init__(self, *, scaler: KedaScaler, host: str, port: int, tls: Tls | None = None) -> None:
        """Create a stopped server."""
        self.scaler = scaler
        self.host = host
        self.port = port
        self.tls = tls
        self._server: Any = None

    async def start(self) -> None:
        """Bind and serve; raise OSError if the address cannot be bound or the TLS files read."""
        # no SO_REUSEPORT: a second process must not share (or take over) the port silently
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalScalerServicer_to_server(self.scaler, server)  # type: ignore[no-untyped-call]
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            credentials = _credentials(self.tls) if self.tls is not None else None
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except (RuntimeError, OSError) as exc:  # grpc reports a taken or bad address as RuntimeError
            await server.stop(None)
            raise OSError(f"KEDA scaler cannot listen on {address}: {exc}") from None
        self.port = int(bound)
        await server.start()
        self._server = server
        log.info("keda_listening", address=f"{self.host}:{self.port}", tls=self.tls is not None)

    async def stop(self, grace_seconds: float = 1.0) -> None:
        """Stop serving (open streams end); never raises."""
        if self._server is not None:
            await self._server.stop(grace_seconds)
            self._server = None


def _credentials(tls: Tls) -> Any:
    try:
        cert = tls.certfile.read_bytes()
        key = tls.keyfile.read_bytes()
        ca = tls.client_cafile.read_bytes() if tls.client_cafile is not None else None
    except OSError as exc:
        raise OSError(f"KEDA scaler TLS: cannot read {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
