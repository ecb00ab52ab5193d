"""One tick of the daemon: observe -> decide -> act, for every model this process owns.

This is the only module that mixes the pure core (events, aggregation, forecaster, planner) with
I/O (the decision sink, metrics, logs). :class:`Runtime` holds per-model state; :mod:`scaler.app`
drives it (consume batches, tick on time, re-plan on bursts, checkpoint, hand models over).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
from collections.abc import Mapping
from typing import Any, Final

import structlog

from scaler.adapters.actuator import Actuators, Capacity
from scaler.adapters.metrics import DaemonMetrics
from scaler.core import aggregate, events, fallback
from scaler.core.aggregate import ModelAggregator
from scaler.core.events import InvalidEvent
from scaler.core.fallback import FallbackSignal
from scaler.core.overrides import OverrideBook, adjust_decision, adjust_observed
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, FloatArray, Observed
from scaler.ports import DecisionSink, Forecaster, ForecasterFactory, ForecasterLoader, Planner, RawRecord

CHECKPOINT_MAGIC: Final = b"SPW1"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """Knobs of the loop (from :class:`scaler.settings.Settings`)."""

    requests_topic: str = "llm.requests"
    metrics_topic: str = "llm.metrics"
    max_skew_seconds: float = 300.0
    burst_window_seconds: int = 2
    dry_run: bool = False


@dataclasses.dataclass(slots=True)
class ModelState:
    """What the loop keeps for one owned model."""

    policy: ModelPolicy
    aggregator: ModelAggregator
    forecaster: Forecaster
    previous: Decision | None = None
    next_tick: float = 0.0
    threshold: float | None = None
    last_event_at: float = 0.0  # fallback: when an event of this model last arrived
    fallback: FallbackSignal | None = None  # fallback: the latest signal read from Prometheus
    on_fallback: bool = False


def encode_checkpoint(state: ModelState) -> bytes:
    """Return the checkpoint of one model: magic, header length, JSON header, forecaster bytes."""
    header = {
        "policy": state.policy.name,
        "decision": dataclasses.asdict(state.previous) if state.previous is not None else None,
        "open_buckets": state.aggregator.open_state(),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return CHECKPOINT_MAGIC + struct.pack(">I", len(head)) + head + state.forecaster.to_bytes()


def decode_checkpoint(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Return (header, forecaster bytes) of a checkpoint; raise ValueError if it is not one."""
    if len(data) < 8 or not data.startswith(CHECKPOINT_MAGIC):
        raise ValueError("not a Spillway checkpoint (bad magic)")
    (size,) = struct.unpack(">I", data[4:8])
    if 8 + size > len(data):
        raise ValueError("checkpoint header is truncated")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise ValueError(f"checkpoint header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("checkpoint header is not an object")
    return header, data[8 + size :]


def _decision_from(data: object) -> Decision | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("checkpoint decision is not an object")
    fields = dict(data)
    fields["recent_targets"] = tuple((float(t), int(n)) for t, n in fields.get("recent_targets", ()))
    try:
        return Decision(**fields)
    except TypeError as exc:
        raise ValueError(f"checkpoint decision does not fit: {exc}") from None


def decision_payload(*, model: str, decision: Decision, trigger: str, dry_run: bool) -> dict[str, object]:
    """Return what is published on the decisions topic for one decision."""
    spill = min(max(decision.spill_fraction, 0.0), 1.0)
    return {
        "model": model,
        "at": decision.at,
        "desired": {
            "replicas": decision.replicas,
            "standby": decision.standby,
            "serverless_provisioned": decision.serverless_provisioned,
        },
        "routing": {"kubernetes": round(1.0 - spill, 6), "serverless": round(spill, 6)},
        "reason": decision.reason,
        "bound_by": decision.bound_by,
        "quantile": round(decision.quantile, 6),
        "cost_per_hour": {k: round(v, 6) for k, v in decision.cost_per_hour.items()},
        "held": decision.held,
        "trigger": trigger,
        "dry_run": dry_run,
    }


class Runtime:
    """Per-model state and the observe -> decide -> act steps over it."""

    def __init__(
        self,
        *,
        policies: Mapping[str, ModelPolicy],
        sink: DecisionSink,
        planner: Planner,
        new_forecaster: ForecasterFactory,
        load_forecaster: ForecasterLoader,
        metrics: DaemonMetrics,
        options: RuntimeOptions,
    ) -> None:
        """Create a runtime owning no model yet."""
        self.policies: dict[str, ModelPolicy] = dict(policies)
        self.sink = sink
        self.planner = planner
        self.new_forecaster = new_forecaster
        self.load_forecaster = load_forecaster
        self.metrics = metrics
        self.options = options
        self.owned: dict[str, ModelState] = {}
        self.overrides = OverrideBook()  # alert overrides (filled by scaler.adapters.alerts)
        self.actuators: Actuators | None = None  # actuation (scaler.adapters.actuator), set by scaler.app
        self.log = structlog.get_logger("scaler.loop")
        self._not_owned = metrics.events_dropped.labels(why="not_owned")  # resolved once: hot path
        self._late_or_early = metrics.events_dropped.labels(why="late_or_early")

    # -- ownership ----------------------------------------------------------------------------------

    def assign(self, models: frozenset[str], *, checkpoints: Mapping[str, bytes], now: float) -> None:
        """Start acting for ``models`` (those with a policy), resuming each from its checkpoint if valid."""
        for model in sorted(models):
            policy = self.policies.get(model)
            if policy is None or model in self.owned:
                continue
            state = self._fresh(policy, now=now)
            raw = checkpoints.get(model)
            if raw is not None:
                try:
                    state = self._restore(policy, raw, now=now)
                    self.log.info("checkpoint_loaded", model=model, policy=model, bytes=len(raw))
                except ValueError as exc:
                    self.log.warning("checkpoint_rejected", model=model, policy=model, error=str(exc))
            self.owned[model] = state
        self.metrics.owned_models.set(len(self.owned))

    def seed(
        self,
        model: str,
        *,
        start: float,
        requests: FloatArray,
        prompt_tokens: FloatArray,
        output_tokens: FloatArray,
    ) -> bool:
        """Seed an owned model's forecaster with per-bucket counts (NaN = missing); return True if it took.

        Unusable history (wrong shape, negative counts) is logged and leaves the forecaster as it was.
        """
        state = self.owned.get(model)
        if state is None:
            return False
        try:
            state.forecaster.seed(
                start=start, requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens
            )
        except ValueError as exc:
            self.log.warning("history_rejected", model=model, policy=model, error=str(exc))
            return False
        self.log.info("history_seeded", model=model, policy=model, buckets=len(requests), start=start)
        return True

    def revoke(self, models: frozenset[str]) -> dict[str, bytes]:
        """Stop acting for ``models``; return their final checkpoints."""
        final = self.checkpoints(models)
        for model in models:
            if self.owned.pop(model, None) is not None:
                self.metrics.forget_model(model)
        self.metrics.owned_models.set(len(self.owned))
        return final

    def checkpoints(self, models: frozenset[str] | None = None) -> dict[str, bytes]:
        """Return the checkpoint of each owned model (of ``models``, if given)."""
        names = self.owned.keys() if models is None else models & self.owned.keys()
        return {m: encode_checkpoint(self.owned[m]) for m in sorted(names)}

    def set_policies(self, policies: Mapping[str, ModelPolicy], *, now: float) -> None:
        """Apply reloaded policies: changed models keep their history unless the bucket size changed."""
        self.policies = dict(policies)
        for model in list(self.owned):
            state = self.owned[model]
            policy = self.policies.get(model)
            if policy is None:
                self.owned.pop(model)
                self.metrics.forget_model(model)
                self.log.info("model_dropped", model=model, policy=model, why="no longer in the policy files")
            elif policy != state.policy:
                if policy.forecast != state.policy.forecast:
                    fresh = self._fresh(policy, now=now)
                    fresh.previous = state.previous
                    self.owned[model] = fresh
                else:
                    state.policy = policy
                self.log.info("policy_applied", model=model, policy=model)
        self.metrics.owned_models.set(len(self.owned))

    def _fresh(self, policy: ModelPolicy, *, now: float) -> ModelState:
        agg = ModelAggregator(bucket_seconds=policy.forecast.bucket_seconds)
        agg.begin(now=now)
        return ModelState(
            policy=policy,
            aggregator=agg,
            forecaster=self.new_forecaster(policy),
            next_tick=now,
            last_event_at=now,
        )

    def _restore(self, policy: ModelPolicy, raw: bytes, *, now: float) -> ModelState:
        header, blob = decode_checkpoint(raw)
        state = self._fresh(policy, now=now)
        state.forecaster = self.load_forecaster(blob)
        saved_bucket = getattr(state.forecaster, "bucket_seconds", policy.forecast.bucket_seconds)
        if saved_bucket != policy.forecast.bucket_seconds:
            raise ValueError(
                f"checkpoint bucket {saved_bucket} s, policy now {policy.forecast.bucket_seconds} s"
            )
        state.previous = _decision_from(header.get("decision"))
        open_buckets = header.get("open_buckets")
        if isinstance(open_buckets, dict):
            restored = ModelAggregator(bucket_seconds=policy.forecast.bucket_seconds)
            restored.restore_open(open_buckets)
            restored.close(now=now)
            state.aggregator = restored
        return state

    # -- observe ------------------------------------------------------------------------------------

    def ingest(self, records: list[RawRecord], *, now: float) -> list[tuple[RawRecord, InvalidEvent]]:
        """Decode and aggregate ``records``; return the invalid ones with their error (nothing is raised)."""
        rejected: list[tuple[RawRecord, InvalidEvent]] = []
        policies = self.policies
        skew = self.options.max_skew_seconds
        requests_topic = self.options.requests_topic
        owned = self.owned
        for record in records:
            try:
                if record.topic == requests_topic:
                    request = events.decode_request(
                        record.value, known_models=policies, now=now, max_skew=skew
                    )
                    state = owned.get(request.model)
                    if state is None:
                        self._not_owned.inc()
                    else:
                        state.last_event_at = now  # fallback: this model's events arrive
                        if not state.aggregator.add_request(request):
                            self._late_or_early.inc()
                else:
                    metric = events.decode_metric(record.value, known_models=policies, now=now, max_skew=skew)
                    state = owned.get(metric.model)
                    if state is None:
                        self._not_owned.inc()
                    else:
                        state.last_event_at = now  # fallback: this model's events arrive
                        state.aggregator.add_metric(metric)
            except InvalidEvent as exc:
                rejected.append((record, exc))
                self.metrics.events_rejected.labels(reason=exc.reason).inc()
        topics = {r.topic for r in records}
        for topic in topics:
            count = len(records) if len(topics) == 1 else sum(1 for r in records if r.topic == topic)
            self.metrics.events_consumed.labels(topic=topic).inc(count)
        return rejected

    # -- fallback: Prometheus when a model's events stop -------------------------------------------

    def silent_models(self, *, now: float) -> list[ModelPolicy]:
        """Return the policies of owned models whose events stopped for their ``fallback_after_seconds``."""
        return [s.policy for s in self.owned.values() if _silent(s, now=now)]

    def set_fallback(self, model: str, signal: FallbackSignal) -> None:
        """Keep the latest fallback signal of an owned model (ignored if not owned)."""
        state = self.owned.get(model)
        if state is not None:
            state.fallback = signal

    def _fallback(
        self, model: str, state: ModelState, *, forecast: DemandForecast, observed: Observed, now: float
    ) -> tuple[DemandForecast, Observed, str]:
        """Return (forecast, observed, reason note) for one decision: unchanged while events arrive.

        A silent model decides on a fresh Prometheus signal; without one the forecast is unusable,
        so the planner holds its last decision (never scales down on missing data).
        """
        silent = _silent(state, now=now)
        self.metrics.fallback_active.labels(model=model).set(1.0 if silent else 0.0)
        if silent != state.on_fallback:
            state.on_fallback = silent
            event = "fallback_started" if silent else "fallback_ended"
            quiet = round(now - state.last_event_at, 1)
            self.log.warning(event, model=model, policy=model, silent_seconds=quiet)
        if not silent:
            return forecast, observed, ""
        quiet = now - state.last_event_at
        signal = fallback.fresh(state.fallback, now=now)
        if signal is None:
            why = "events silent and Prometheus unavailable"
            self.log.warning("holding_without_data", model=model, policy=model, why=why)
            unusable = DemandForecast.unusable(start=now, note=why)
            return unusable, observed, f"fallback: no data for {quiet:.0f} s, holding"
        note = f"fallback: Prometheus, events silent {quiet:.0f} s"
        return forecast, fallback.observed_from(signal, observed), note

    # -- decide and act -----------------------------------------------------------------------------

    def due(self, *, now: float) -> list[tuple[str, str]]:
        """Return (model, trigger) for every owned model whose tick is due or that sees a burst.

        Completed buckets go to the forecaster here too, so the burst threshold follows every
        bucket, not only the planning interval.
        """
        due: list[tuple[str, str]] = []
        window = self.options.burst_window_seconds
        for model, state in self.owned.items():
            if now >= state.next_tick:
                due.append((model, "tick"))
                continue
            if _observe_closed(state, now=now):
                state.threshold = _threshold(state.forecaster.forecast(now=now), now=now)
            rate, count = state.aggregator.recent_rate(now=now, window_seconds=window)
            if aggregate.is_burst(recent_rate=rate, recent_count=count, threshold=state.threshold):
                due.append((model, "burst"))
        return due

    async def decide(self, model: str, *, trigger: str, now: float) -> Decision | None:
        """Forecast, plan, publish and log one model's decision; return it (None if not owned)."""
        state = self.owned.get(model)
        if state is None:
            return None
        started = time.perf_counter()
        log = self.log.bind(model=model, policy=state.policy.name)
        _observe_closed(state, now=now)
        forecast = state.forecaster.forecast(now=now)
        summary = state.aggregator.replicas(now=now)
        last = state.aggregator.last_closed
        observed = Observed(
            replicas_ready=summary.ready,
            replicas_starting=summary.starting,
            standby_ready=0,
            standby_starting=0,
            serverless_provisioned=state.previous.serverless_provisioned if state.previous else 0,
            request_rate=last.rate if last is not None else None,
        )
        forecast, observed, note = self._fallback(model, state, forecast=forecast, observed=observed, now=now)
        capacity: Capacity | None = None
        if self.actuators is not None:  # actuation: what the targets report, and kinds that keep failing
            observed, capacity = await self.actuators.observe(state.policy, observed)
        active = self.overrides.active(now=now, model=model)  # alert overrides: bounded by the policy
        observed = adjust_observed(observed, active)
        decision = self.planner(
            policy=state.policy, forecast=forecast, observed=observed, previous=state.previous, now=now
        )
        decision = adjust_decision(decision, overrides=active, previous=state.previous, policy=state.policy)
        if note:  # fallback: say what the decision was made on
            decision = dataclasses.replace(decision, reason=f"{decision.reason} [{note}]")
        state.previous = decision
        state.threshold = _threshold(forecast, now=now)
        if trigger == "tick":
            state.next_tick = now + state.policy.behavior.interval_seconds
        else:
            self.metrics.bursts.labels(model=model).inc()
        payload = decision_payload(
            model=model, decision=decision, trigger=trigger, dry_run=self.options.dry_run
        )
        try:
            await self.sink.publish(model=model, payload=payload)
        except ConnectionError as exc:
            self.metrics.publish_errors.inc()
            log.error("decision_not_published", error=str(exc))
        if self.actuators is not None and capacity is not None:  # actuation: clamped, idempotent
            await self.actuators.apply(policy=state.policy, decision=decision, current=capacity, now=now)
        self.metrics.record_decision(model=model, decision=decision, trigger=trigger)
        self.metrics.decision_latency.observe(time.perf_counter() - started)
        log.info(
            "decision",
            trigger=trigger,
            replicas=decision.replicas,
            standby=decision.standby,
            serverless=decision.serverless_provisioned,
            spill=round(decision.spill_fraction, 4),
            reason=decision.reason,
            bound_by=decision.bound_by,
            forecast_valid=forecast.valid,
            dry_run=self.options.dry_run,
        )
        return decision


def _observe_closed(state: ModelState, *, now: float) -> bool:
    """Hand every completed bucket to the forecaster; return True if there was one."""
    closed = state.aggregator.close(now=now)
    silent = _silent(state, now=now)  # fallback: silence is not zero load
    signal = fallback.fresh(state.fallback, now=now) if silent else None
    for bucket in closed:
        if silent:
            state.forecaster.observe(
                bucket_start=bucket.start,
                requests=fallback.bucket_requests(signal, seconds=bucket.seconds),
                prompt_tokens=math.nan,
                output_tokens=math.nan,
            )
            continue
        state.forecaster.observe(
            bucket_start=bucket.start,
            requests=bucket.requests,
            prompt_tokens=bucket.prompt_tokens,
            output_tokens=bucket.output_tokens,
        )
    return bool(closed)


def _silent(state: ModelState, *, now: float) -> bool:
    after = state.policy.forecast.fallback_after_seconds
    return fallback.is_silent(last_event_at=state.last_event_at, now=now, after_seconds=after)


def _threshold(forecast: DemandForecast, *, now: float) -> float | None:
    return aggregate.burst_threshold(forecast, now=now)
