"""KEDA's external scaler over gRPC: a ScaledObject gets Spillway's desired replicas as its metric.

A trigger of ``type: external-push`` (or ``external``) with ``metadata: {scalerAddress: ..., model: NAME}``
asks this server about one model:

* ``GetMetricSpec``: one metric, ``spillway-replicas-<model>``, target size 1 (an ``AverageValue`` of
  1 per replica), so the HPA KEDA makes computes Spillway's count as its desired replicas; the HPA
  still leaves changes within its tolerance (10% by default) alone and holds scale-downs for its
  stabilization window (300 s by default) unless the ScaledObject's ``behavior`` says otherwise;
* ``GetMetrics``: the replicas of Spillway's newest decision for the model;
* ``IsActive``: False only when that decision is zero replicas (KEDA then scales the workload to zero);
* ``StreamIsActive``: the same, pushed at once and then on every new decision for the model.

Every process answers for every model of the policies, because KEDA's operator keeps one long-lived
connection per ``scalerAddress`` and a Service balances connections, not calls: the process that
owns a model answers from its own decisions; any other from the newest decision it read on the
decisions topic (:mod:`scaler.adapters.decision_feed`, fed through :meth:`KedaScaler.heard`) while
that is fresh, younger than ``STALE_INTERVALS`` of the model's decision intervals. Otherwise the
call is refused with ``UNAVAILABLE`` saying why (stale, or no decision yet), and KEDA asks again at
its next poll; a model of no policy is ``NOT_FOUND``, a trigger without ``model``
``INVALID_ARGUMENT``. A stream ends with ``UNAVAILABLE`` when its model's answer turns stale, so KEDA
reconnects.

The server is a :class:`scaler.ports.DecisionObserver` of the executor: it only reads decisions, and
holds no lock of the daemon's. Generated code: ``externalscaler_pb2*.py`` beside this file (the
command that makes them is at the top of ``externalscaler.proto``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter

from scaler.adapters import externalscaler_pb2 as pb
from scaler.adapters import externalscaler_pb2_grpc as pb_grpc
from scaler.control.payload import PublishedDecision
from scaler.core.types import Decision

log = structlog.get_logger("scaler.keda")

METRIC_PREFIX = "spillway-replicas-"
STALE_INTERVALS = 3.0  # a decision read from the topic answers for this many of its model's intervals


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a model is not answered: a gRPC status code name and a message for KEDA's log."""

    code: str  # "INVALID_ARGUMENT", "NOT_FOUND" or "UNAVAILABLE"
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """A decision known for a model: its desired replicas and when it was made (unix seconds)."""

    replicas: int
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """The replicas to answer for ``model``, from this process's decision or the decisions topic's."""

    model: str
    replicas: int
    source: Literal["own", "topic"]
    stale_at: float | None  # unix time the answer turns stale (None: this process's own decision)


def metric_name(model: str) -> str:
    """Return the metric name of ``model``: lower case, runs of other characters than [a-z0-9] as '-'."""
    return METRIC_PREFIX + (re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model")


def resolve(
    metadata: Mapping[str, str],
    *,
    intervals: Mapping[str, float],
    owned: Collection[str],
    own: Mapping[str, Seen],
    topic: Mapping[str, Seen],
    now: float,
    stale_intervals: float = STALE_INTERVALS,
) -> Answer | Refusal:
    """Return the Answer for a trigger's ``metadata`` at unix time ``now``, or the Refusal to give.

    ``intervals`` maps the policies' models to their decision intervals (seconds), ``owned`` lists
    the models this process acts for, ``own`` their newest decisions made here and ``topic`` the
    newest decision of each model read on the decisions topic. An owned model is answered from its
    own decision; any other (or an owned one not decided here yet) from ``topic`` while that is
    younger than ``stale_intervals`` intervals.
    """
    model = metadata.get("model", "").strip()
    if not model:
        return Refusal("INVALID_ARGUMENT", "the trigger's metadata has no 'model' (e.g. model: llama-8b)")
    interval = intervals.get(model)
    if interval is None:
        return Refusal("NOT_FOUND", f"model {model!r} is in no Spillway policy")
    mine = own.get(model) if model in owned else None
    if mine is not None:
        return Answer(model, mine.replicas, "own", None)
    seen = topic.get(model)
    if seen is None:
        why = "this process owns it and has not decided it"
        if model not in owned:
            why = "none of its owner's decisions was read from the decisions topic"
        return Refusal("UNAVAILABLE", f"model {model!r} has no decision yet: {why}")
    bound = stale_intervals * interval
    age = now - seen.at
    if age >= bound:
        return Refusal(
            "UNAVAILABLE",
            f"model {model!r} has no fresh decision: the newest on the decisions topic is {age:.1f} s old,"
            f" stale after {bound:g} s ({stale_intervals:g} decision intervals); is any Spillway process"
            " deciding it?",
        )
    return Answer(model, seen.replicas, "topic", seen.at + bound)


class KedaScaler(pb_grpc.ExternalScalerServicer):  # the generated base: gRPC finds the methods by name
    """Serves KEDA's external scaler interface from the decisions it observes (a DecisionObserver)
    and those of other processes read on the decisions topic (:meth:`heard`)."""

    def __init__(
        self,
        *,
        intervals: Callable[[], Mapping[str, float]],
        owned: Callable[[], Collection[str]],
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Create an observer; ``intervals`` returns the policies' models and their decision intervals,
        ``owned`` this process's models, ``clock`` unix time."""
        self.intervals = intervals
        self.owned = owned
        self.clock = clock
        self.own: dict[str, Seen] = {}  # the newest decision made here, per owned model
        self.topic: dict[str, Seen] = {}  # the newest decision read on the decisions topic, per model
        self._newest: dict[str, float] = {}  # the time of the newest decision pushed, per model
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
        self.own[model] = Seen(decision.replicas, decision.at)
        self._newest[model] = max(self._newest.get(model, -math.inf), decision.at)
        self._wake(model)

    def released(self, models: frozenset[str]) -> None:
        """Forget this process's decisions of ``models``; their streams go on from the topic's."""
        for model in models:
            self.own.pop(model, None)
            self._wake(model)

    # -- the decisions topic ------------------------------------------------------------------------

    def heard(self, decision: PublishedDecision) -> bool:
        """Keep ``decision`` if it is newer than the topic's newest of its model; return whether it was.

        Its model's streams are woken when no newer decision was pushed to them already (this
        process's own decisions come back from the topic after they were pushed).
        """
        current = self.topic.get(decision.model)
        if current is not None and decision.at <= current.at:
            return False
        self.topic[decision.model] = Seen(decision.replicas, decision.at)
        if decision.at > self._newest.get(decision.model, -math.inf):
            self._newest[decision.model] = decision.at
            self._wake(decision.model)
        return True

    def _wake(self, model: str) -> None:
        event = self._changed.pop(model, None)
        if event is not None:
            event.set()

    def _next_change(self, model: str) -> asyncio.Event:
        return self._changed.setdefault(model, asyncio.Event())

    # -- the gRPC methods ---------------------------------------------------------------------------

    def _lookup(self, ref: Any, method: str) -> Answer | Refusal:
        found = resolve(
            dict(ref.scalerMetadata),
            intervals=self.intervals(),
            owned=self.owned(),
            own=self.own,
            topic=self.topic,
            now=self.clock(),
        )
        self.requests.labels(method=method, code=found.code if isinstance(found, Refusal) else "OK").inc()
        return found

    async def _answer(self, ref: Any, context: Any, method: str) -> Answer:
        found = self._lookup(ref, method)
        if isinstance(found, Refusal):
            await _abort(context, found)
        assert isinstance(found, Answer)  # abort raised
        return found

    async def IsActive(self, request: Any, context: Any) -> Any:  # noqa: N802  # gRPC's method name
        """Return whether the model's newest decision wants any replicas."""
        found = await self._answer(request, context, "IsActive")
        return pb.IsActiveResponse(result=found.replicas > 0)

    async def StreamIsActive(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        """Yield whether the model is active now, then again after every new decision for it.

        The stream ends with the refusal when the model's answer turns stale or unknown.
        """
        while True:
            found = self._lookup(request, "StreamIsActive")
            if isinstance(found, Refusal):
                await _abort(context, found)
                return
            # taken with the answer: a decision made meanwhile wakes it
            change = self._next_change(found.model)
            yield pb.IsActiveResponse(result=found.replicas > 0)
            # a topic answer is looked at again once stale (a little after, so that it is)
            wait = None if found.stale_at is None else max(found.stale_at - self.clock(), 0.0) + 0.05
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(change.wait(), wait)

    async def GetMetricSpec(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return the model's one metric with target size 1 (per replica: the HPA computes Spillway's)."""
        model = dict(request.scalerMetadata).get("model", "").strip()
        if not model or model not in self.intervals():  # any process answers for a known model
            await self._answer(request, context, "GetMetricSpec")  # refuses with the reason
        else:
            self.requests.labels(method="GetMetricSpec", code="OK").inc()
        spec = pb.MetricSpec(metricName=metric_name(model), targetSize=1, targetSizeFloat=1.0)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Return the replicas of the model's newest decision as the metric's value."""
        found = await self._answer(request.scaledObjectRef, context, "GetMetrics")
        value = pb.MetricValue(
            metricName=request.metricName or metric_name(found.model),
            metricValue=found.replicas,
            metricValueFloat=float(found.replicas),
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
