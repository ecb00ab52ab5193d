"""The per-model controller: ingest events, say when a decision is due, decide. Pure; time is ``now=``.

One :class:`ModelController` per model owns everything that model's decisions depend on: the bucket
aggregator, the forecaster, the burst threshold, the fallback state and the previous decision. The
daemon (:mod:`scaler.runtime`) and the simulator (:mod:`scaler.sim.spillway`) run this same class, so
every figure the simulator reports is a figure of the controller a cluster runs.

One decision (:meth:`ModelController.decide`), in order:

1. completed buckets go to the forecaster (counted from the fallback signal while events are silent;
   silence is never zero load), and the forecaster forecasts from ``now``;
2. what is observed: replica counts from the replica metric events, replaced by what the executor
   read back from the targets (:class:`ReadBack`) where it could, and the request rate of the last
   bucket; while events are silent, load and readiness come from a fresh fallback signal, and
   without one the forecast is unusable (the planner holds);
3. alert overrides mark capacity unavailable, the planner plans, overrides apply freeze and boost;
4. **the one clamp**: the bounds in force at ``now`` (policy, schedules) bound every output, so the
   decision published is exactly the one actuated.

Like Knative's ``Scale(now)``, nothing here performs I/O; what :meth:`decide` returns carries
everything the caller logs, exports and applies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, Protocol

from scaler.core import actuation, aggregate, fallback
from scaler.core.aggregate import ModelAggregator
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.fallback import FallbackSignal
from scaler.core.overrides import Override, adjust_decision, adjust_observed
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, FloatArray, Observed, Unavailable

Trigger = Literal["tick", "burst"]
DataSource = Literal["events", "fallback", "none"]


class Forecaster(Protocol):
    """The per-model forecaster (:class:`scaler.forecast.models.DemandForecaster`)."""

    def observe(
        self, *, bucket_start: float, requests: float, prompt_tokens: float, output_tokens: float
    ) -> None:
        """Add one completed bucket of counts; raise ValueError on negative or infinite counts."""

    def seed(
        self, *, start: float, requests: FloatArray, prompt_tokens: FloatArray, output_tokens: FloatArray
    ) -> None:
        """Replace the history with per-bucket counts from ``start`` (NaN = missing); raise ValueError."""

    def forecast(self, *, now: float) -> DemandForecast:
        """Return the demand distribution from the bucket holding ``now``."""

    def to_bytes(self) -> bytes:
        """Return a checkpoint of the forecaster."""

    @property
    def bucket_seconds(self) -> int:
        """Return the bucket length the forecaster counts in."""


class Planner(Protocol):
    """The pure planner (:func:`scaler.core.plan.plan`)."""

    def __call__(
        self,
        *,
        policy: ModelPolicy,
        forecast: DemandForecast,
        observed: Observed,
        previous: Decision | None,
        now: float,
    ) -> Decision:
        """Return the desired state for one model."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReadBack:
    """What the executor last read back from a model's targets (None: no target of that kind, or unread).

    ``unavailable`` names the kinds whose API keeps failing (the planner plans around them).
    """

    replicas_ready: int | None = None
    replicas_starting: int | None = None
    standby_ready: int | None = None
    standby_starting: int | None = None
    serverless_provisioned: int | None = None
    unavailable: Unavailable = Unavailable.NONE


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One decision and what the caller needs to log, export and apply it.

    ``source`` says what the decision was made on; ``transition`` is ``fallback_started`` or
    ``fallback_ended`` when this decision changed that; ``clamped`` lists what the final clamp changed.
    """

    decision: Decision
    trigger: Trigger
    forecast: DemandForecast
    observed: Observed
    source: DataSource
    silent_seconds: float
    transition: str | None
    clamped: tuple[str, ...]
    overrides: tuple[Override, ...]


class ModelController:
    """Aggregator, forecaster, burst threshold, fallback and last decision of one model."""

    def __init__(
        self,
        *,
        policy: ModelPolicy,
        forecaster: Forecaster,
        planner: Planner,
        now: float,
        burst_window_seconds: int = 2,
    ) -> None:
        """Create a controller that starts counting at the first bucket after ``now`` and is due at once."""
        self.policy = policy
        self.forecaster = forecaster
        self.planner = planner
        self.burst_window_seconds = burst_window_seconds
        self.aggregator = ModelAggregator(bucket_seconds=policy.forecast.bucket_seconds)
        self.aggregator.begin(now=now)
        self.previous: Decision | None = None
        self.next_tick = now
        self.last_event_at = now
        self.signal: FallbackSignal | None = None
        self.on_fallback = False
        self._threshold: float | None = None
        self._threshold_stale = False  # a bucket closed since the threshold was computed

    @property
    def name(self) -> str:
        """Return the model's name."""
        return self.policy.name

    # -- observe ------------------------------------------------------------------------------------

    def ingest_request(self, event: RequestEvent, *, now: float) -> bool:
        """Count a validated request event; return False if it was dropped as late or early."""
        self.last_event_at = now
        return self.aggregator.add_request(event)

    def ingest_requests(self, events: Sequence[RequestEvent], *, now: float) -> int:
        """Count a batch of this model's validated request events; return how many were not late or early."""
        if events:
            self.last_event_at = now
        return self.aggregator.add_requests(events)

    def ingest_metric(self, event: MetricEvent, *, now: float) -> None:
        """Keep a validated replica metric event (the newest per replica)."""
        self.last_event_at = now
        self.aggregator.add_metric(event)

    def ingest_second(
        self, *, second: int, arrivals: int, prompt_tokens: int, output_tokens: int, now: float
    ) -> bool:
        """Count one whole second of arrivals at once (as ``arrivals`` arrival events in ``second``).

        Output tokens are credited with the arrivals. Return False if the second was late or early.
        """
        self.last_event_at = now
        return self.aggregator.add_second(
            second=second, arrivals=arrivals, prompt_tokens=prompt_tokens, output_tokens=output_tokens
        )

    def seed(
        self, *, start: float, requests: FloatArray, prompt_tokens: FloatArray, output_tokens: FloatArray
    ) -> None:
        """Replace the forecaster's history with per-bucket counts from ``start``; raise ValueError."""
        self.forecaster.seed(
            start=start, requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens
        )

    def set_fallback(self, signal: FallbackSignal) -> None:
        """Keep the latest fallback signal (load read from Prometheus while events are silent)."""
        self.signal = signal

    def silent(self, *, now: float) -> bool:
        """Return True when no event arrived for the policy's ``fallback_after_seconds``."""
        after = self.policy.forecast.fallback_after_seconds
        return fallback.is_silent(last_event_at=self.last_event_at, now=now, after_seconds=after)

    # -- decide -------------------------------------------------------------------------------------

    def due(self, *, now: float) -> Trigger | None:
        """Return ``tick`` when the interval is up, ``burst`` when arrivals outrun the forecast, else None.

        Completed buckets go to the forecaster here too, so the burst threshold follows every bucket
        (computed when recent arrivals are enough to be a burst at all).
        """
        if now >= self.next_tick:
            return "tick"
        if self._observe_closed(now=now):
            self._threshold_stale = True
        rate, count = self.aggregator.recent_rate(now=now, window_seconds=self.burst_window_seconds)
        if count < aggregate.MIN_BURST_COUNT:
            return None  # never a burst: the threshold waits until it can matter (a forecast per model saved)
        if self._threshold_stale:
            self._threshold = aggregate.burst_threshold(self.forecaster.forecast(now=now), now=now)
            self._threshold_stale = False
        if aggregate.is_burst(recent_rate=rate, recent_count=count, threshold=self._threshold):
            return "burst"
        return None

    def decide(
        self,
        *,
        now: float,
        trigger: Trigger = "tick",
        readback: ReadBack | None = None,
        overrides: Sequence[Override] = (),
    ) -> Step:
        """Return the decision at ``now`` (see the module docstring) and remember it as the previous one.

        Never raises on a valid policy; every output lies within the bounds in force at ``now``.
        """
        self._observe_closed(now=now)
        forecast = self.forecaster.forecast(now=now)
        observed = self._observed(now=now, readback=readback)
        silent = self.silent(now=now)
        quiet = now - self.last_event_at
        transition = None
        if silent != self.on_fallback:
            self.on_fallback = silent
            transition = "fallback_started" if silent else "fallback_ended"
        source: DataSource = "events"
        note = ""
        if silent:
            signal = fallback.fresh(self.signal, now=now)
            if signal is None:
                source, note = "none", f"fallback: no data for {quiet:.0f} s, holding"
                forecast = DemandForecast.unusable(start=now, note="events silent and Prometheus unavailable")
            else:
                source, note = "fallback", f"fallback: Prometheus, events silent {quiet:.0f} s"
                observed = fallback.observed_from(signal, observed)
        active = tuple(overrides)
        observed = adjust_observed(observed, active)
        decision = self.planner(
            policy=self.policy, forecast=forecast, observed=observed, previous=self.previous, now=now
        )
        decision = adjust_decision(decision, overrides=active, previous=self.previous, policy=self.policy)
        if note:
            decision = dataclasses.replace(decision, reason=f"{decision.reason} [{note}]")
        decision, clamped = _clamp(self.policy, decision, now=now)
        self.previous = decision
        self._threshold = aggregate.burst_threshold(forecast, now=now)
        self._threshold_stale = False
        if trigger == "tick":
            self.next_tick = now + self.policy.behavior.interval_seconds
        return Step(
            decision=decision,
            trigger=trigger,
            forecast=forecast,
            observed=observed,
            source=source,
            silent_seconds=quiet,
            transition=transition,
            clamped=clamped,
            overrides=active,
        )

    def _observed(self, *, now: float, readback: ReadBack | None) -> Observed:
        """Return what is observed now: event-derived counts, replaced by the read-back where known."""
        summary = self.aggregator.replicas(now=now)
        last = self.aggregator.last_closed
        previous = self.previous
        back = readback or ReadBack()
        return Observed(
            replicas_ready=_known(back.replicas_ready, summary.ready),
            replicas_starting=_known(back.replicas_starting, summary.starting),
            standby_ready=_known(back.standby_ready, 0),
            standby_starting=_known(back.standby_starting, 0),
            serverless_provisioned=_known(
                back.serverless_provisioned, previous.serverless_provisioned if previous else 0
            ),
            request_rate=last.rate if last is not None else None,
            unavailable=back.unavailable,
        )

    def _observe_closed(self, *, now: float) -> bool:
        """Hand every completed bucket to the forecaster; return True if there was one."""
        closed = self.aggregator.close(now=now)
        if not closed:
            return False
        silent = self.silent(now=now)
        signal = fallback.fresh(self.signal, now=now) if silent else None
        for bucket in closed:
            if silent:  # silence is not zero load: the fallback rate, or missing
                self.forecaster.observe(
                    bucket_start=bucket.start,
                    requests=fallback.bucket_requests(signal, seconds=bucket.seconds),
                    prompt_tokens=math.nan,
                    output_tokens=math.nan,
                )
            else:
                self.forecaster.observe(
                    bucket_start=bucket.start,
                    requests=bucket.requests,
                    prompt_tokens=bucket.prompt_tokens,
                    output_tokens=bucket.output_tokens,
                )
        return True


def _known(value: int | None, otherwise: int) -> int:
    return otherwise if value is None else value


def _clamp(policy: ModelPolicy, decision: Decision, *, now: float) -> tuple[Decision, tuple[str, ...]]:
    """Return ``decision`` within the bounds in force at ``now``, and a note per field the clamp moved."""
    desired, notes = actuation.clamp(policy=policy, decision=decision, now=now)
    spill = decision.spill_fraction if math.isfinite(decision.spill_fraction) else 0.0
    spill = min(max(spill, 0.0), 1.0)
    if not notes and spill == decision.spill_fraction:
        return decision, ()
    clamped = dataclasses.replace(
        decision,
        replicas=desired.replicas,
        standby=desired.standby,
        serverless_provisioned=desired.serverless,
        spill_fraction=spill,
    )
    return clamped, tuple(notes)
