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
3. alert overrides mark capacity unavailable (a paused serving target too), the planner plans,
   overrides apply freeze and boost, and an operator's out-of-band replica count is kept as a floor
   while ``behavior.external_changes`` says so (:mod:`scaler.core.operators`);
4. **the one clamp**: the bounds in force at ``now`` (policy, schedules) bound every output, so the
   decision published is exactly the one actuated.

Demand has one path: the bucket aggregator. Request events fill its buckets; so do the request and
token rates that replica metric events may carry (the vLLM bridge reads them from vLLM's counters),
but only while the model has had no request event for ``fallback_after_seconds``. A replica's rates
over the ``rate_seconds`` before its event become whole arrivals and tokens, spread over those
seconds by the time the span covers in each (fractions carried to the replica's next event), and
counted as a replay's :meth:`ModelController.ingest_second` counts them. Seconds that reach back into
a bucket already closed go to the oldest open one; a report that ended in one is dropped as late.
So the forecaster, the burst trigger and the observed request rate read rates like events, and a
deployment that publishes request events is never counted twice (save the first events after a
start, before its first request event). Synthesized request events were the other way in: one record
per request, with made-up ids, sizes and finish events, to say what four numbers say.

Beside the decision, the shadow ledger (:mod:`scaler.control.ledger`) takes every request event and,
at each decision, the capacity observed: it closes the interval the previous decision priced.
Provisioned serverless is observed only in a read-back (no event carries it): without one it is 0
and the ledger is told it is unknown, so advice is never billed as capacity that ran. The planner
reads the previous decision's serverless from the decision itself, so this changes no decision.

Like Knative's ``Scale(now)``, nothing here performs I/O; what :meth:`decide` returns carries
everything the caller logs, exports and applies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, Protocol

from scaler.control.leadtime import ColdStart, LeadEstimate, LeadTimeLearner
from scaler.control.ledger import Ledger, LedgerInterval
from scaler.core import actuation, aggregate, fallback, operators
from scaler.core.aggregate import ModelAggregator
from scaler.core.burstiness import BurstFactor
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.fallback import FallbackSignal
from scaler.core.overrides import Override, adjust_decision, adjust_observed
from scaler.core.policy import LeadTimes, ModelPolicy
from scaler.core.types import Decision, DemandForecast, FloatArray, Observed, Unavailable

MAX_RATE_REPLICAS = 10_000
MAX_SPREAD_SECONDS = 3600
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

    ``unavailable`` names the kinds whose API keeps failing (the planner plans around them);
    ``operators`` what operators did to the targets (paused kinds, external changes).
    ``cold_starts`` are the pods of the serving workloads as read (creation -> Ready), and
    ``serverless_ready`` the provisioned serverless instances warm at ``read_at``, for the lead-time
    learner.
    """

    replicas_ready: int | None = None
    replicas_starting: int | None = None
    standby_ready: int | None = None
    standby_starting: int | None = None
    serverless_provisioned: int | None = None
    serverless_ready: int | None = None
    read_at: float | None = None
    unavailable: Unavailable = Unavailable.NONE
    operators: operators.OperatorState = dataclasses.field(default_factory=operators.OperatorState)
    cold_starts: tuple[ColdStart, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One decision and what the caller needs to log, export and apply it.

    ``source`` says what the decision was made on; ``transition`` is ``fallback_started`` or
    ``fallback_ended`` when this decision changed that; ``clamped`` lists what the final clamp changed;
    ``ledger`` is the interval this decision closed: the previous one's predicted cost and the realized.
    ``paused`` the kinds whose targets operators paused; ``floors`` the external changes kept by kind.
    ``lead_times`` are the replica and serverless lead times the planner used (learned or configured).
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
    ledger: LedgerInterval | None = None
    paused: tuple[str, ...] = ()
    floors: dict[str, int] = dataclasses.field(default_factory=dict)
    lead_times: tuple[LeadEstimate, ...] = ()


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
        self._counting_from = math.ceil(now / policy.forecast.bucket_seconds) * policy.forecast.bucket_seconds
        self.previous: Decision | None = None
        self.next_tick = now
        self.last_event_at = now
        self.last_request_at = -math.inf  # no request event yet: replica rates count as demand
        self._carry: dict[
            str, tuple[float, float, float]
        ] = {}  # replica -> fractions of rates not counted yet
        self.signal: FallbackSignal | None = None
        self.on_fallback = False
        self.ledger = Ledger()
        self.lead = LeadTimeLearner()
        self.burst = BurstFactor()
        self._lead_cache: tuple[ModelPolicy | None, LeadTimes] = (None, policy.lead_times)
        self._threshold: float | None = None
        self._threshold_stale = False  # a bucket closed since the threshold was computed

    @property
    def name(self) -> str:
        """Return the model's name."""
        return self.policy.name

    # -- observe ------------------------------------------------------------------------------------

    def ingest_request(self, event: RequestEvent, *, now: float) -> bool:
        """Count a validated request event; return False if it was dropped as late or early.

        The ledger takes every valid event, late or early for the buckets or not.
        """
        self.last_event_at = self.last_request_at = now
        self.ledger.add_request(event, self.policy)
        return self.aggregator.add_request(event)

    def ingest_requests(self, events: Sequence[RequestEvent], *, now: float) -> int:
        """Count a batch of this model's validated request events; return how many were not late or early.

        The same as :meth:`ingest_request` on each (the ledger takes every one), in one aggregator call.
        """
        if events:
            self.last_event_at = self.last_request_at = now
            policy, add = self.policy, self.ledger.add_request
            for event in events:
                add(event, policy)
        return self.aggregator.add_requests(events)

    def ingest_metric(self, event: MetricEvent, *, now: float) -> None:
        """Keep a validated replica metric event (the newest per replica); count its rates as demand
        while the model has had no request event for ``fallback_after_seconds`` (see the module doc).
        Its ``ready`` feeds the lead-time learner."""
        self.last_event_at = now
        self.aggregator.add_metric(event)
        self.lead.observe_metric(
            replica=event.replica,
            ts=event.ts,
            ready=event.ready,
            lead=self._lead_in_force(),
            now=now,
        )
        if (
            event.rate_seconds is not None
            and now - self.last_request_at > self.policy.forecast.fallback_after_seconds
        ):
            self._count_rates(event, now=now)

    def _count_rates(self, event: MetricEvent, *, now: float) -> None:
        """Count a replica's rates as whole arrivals and tokens in the seconds they cover, in open buckets."""
        carry = self._carry.pop(event.replica, (0.0, 0.0, 0.0))
        if len(self._carry) >= MAX_RATE_REPLICAS:  # replicas come and go: bound what is remembered
            self._carry.clear()
        per_second = (
            event.request_rate or 0.0,
            event.prompt_token_rate or 0.0,
            event.output_token_rate or 0.0,
        )
        seconds = event.rate_seconds or 0.0
        totals = [rate * seconds + left for rate, left in zip(per_second, carry, strict=True)]
        whole = [math.floor(total) for total in totals]
        self._carry[event.replica] = (totals[0] - whole[0], totals[1] - whole[1], totals[2] - whole[2])
        agg = self.aggregator
        earliest = math.floor((now - agg.grace_seconds) / agg.bucket_seconds) * agg.bucket_seconds
        if event.ts < earliest:  # all of it in closed buckets (a backlog): dropped, like a late request
            return
        span = min(seconds, MAX_SPREAD_SECONDS)
        for second, counts in _spread(whole, start=event.ts - span, end=event.ts, earliest=earliest):
            if second < self._counting_from:  # before this controller began counting, like a late request
                continue
            agg.add_second(
                second=second, arrivals=counts[0], prompt_tokens=counts[1], output_tokens=counts[2]
            )

    def ingest_second(
        self, *, second: int, arrivals: int, prompt_tokens: int, output_tokens: int, now: float
    ) -> bool:
        """Count one whole second of arrivals at once (as ``arrivals`` arrival events in ``second``).

        Output tokens are credited with the arrivals. Return False if the second was late or early.
        """
        self.last_event_at = self.last_request_at = now
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
        policy, leads = self._planning_policy(readback, now=now)
        previous = self.previous
        ledger = self.ledger.close_interval(
            now=now,
            policy=self.policy,
            capacity=observed,
            predicted_per_hour=previous.cost_per_hour.get("chosen") if previous is not None else None,
            serverless_observed=_serverless_read(readback),
        )
        state = (readback or ReadBack()).operators
        if "replicas" in state.paused:  # its replicas cannot change: serverless covers what they cannot
            observed = dataclasses.replace(
                observed, unavailable=observed.unavailable | Unavailable.KUBERNETES
            )
        decision = self.planner(
            policy=policy, forecast=forecast, observed=observed, previous=self.previous, now=now
        )
        decision = adjust_decision(decision, overrides=active, previous=self.previous, policy=self.policy)
        behavior = self.policy.behavior
        decision, floors = operators.respect_operators(
            decision,
            state=state,
            mode=behavior.external_changes,
            delay_seconds=behavior.scale_down_delay_seconds,
            now=now,
        )
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
            ledger=ledger,
            paused=tuple(sorted(state.paused)),
            floors=floors,
            lead_times=leads,
        )

    def account(self, *, now: float, readback: ReadBack | None = None) -> None:
        """Bring the ledger up to ``now`` on the capacity observed now, between decisions."""
        self.ledger.observe(
            now=now,
            policy=self.policy,
            capacity=self._observed(now=now, readback=readback),
            serverless_observed=_serverless_read(readback),
        )

    def _lead_in_force(self) -> LeadTimes:
        """Return the policy's lead times in force, computed once per policy object (policies are frozen)."""
        policy, lead = self._lead_cache
        if policy is not self.policy:
            lead = self.policy.lead_times_in_force
            self._lead_cache = (self.policy, lead)
        return lead

    def lead_times(self, *, now: float) -> tuple[LeadEstimate, ...]:
        """Return the replica and serverless lead times at ``now``, learned or configured."""
        lead = self._lead_in_force()
        return tuple(self.lead.estimate(lead, kind, now=now) for kind in ("replica", "serverless"))

    def _planning_policy(
        self, readback: ReadBack | None, *, now: float
    ) -> tuple[ModelPolicy, tuple[LeadEstimate, ...]]:
        """Return the policy the planner sees: the learned lead times in place of the configured ones (the
        replica's coverage lead as ``cold_start_seconds``, its typical lead as ``lifetime_start_seconds``)."""
        lead = self._lead_in_force()
        self.lead.observe_all(readback.cold_starts if readback is not None else (), lead=lead, now=now)
        if readback is not None and readback.serverless_ready is not None and readback.read_at is not None:
            provisioned = readback.serverless_provisioned or 0
            ready, at = readback.serverless_ready, readback.read_at
            self.lead.observe_provisioned(provisioned=provisioned, ready=ready, at=at, lead=lead, now=now)
        leads = self.lead_times(now=now)
        replica, serverless = leads[0], leads[1].seconds
        if (
            replica.seconds == lead.cold_start_seconds
            and replica.typical == lead.typical_cold_start_seconds
            and serverless == lead.serverless_cold_start_seconds
        ):
            return self.policy, leads
        learned = lead.model_copy(
            update={
                "cold_start_seconds": replica.seconds,
                "lifetime_start_seconds": replica.typical,
                "serverless_cold_start_seconds": serverless,
            }
        )
        return self.policy.model_copy(update={"lead_times": learned}), leads

    def _observed(self, *, now: float, readback: ReadBack | None) -> Observed:
        """Return what is observed now: event-derived counts, replaced by the read-back where known.

        Standby and provisioned serverless are in no event: 0 unless read back.
        """
        summary = self.aggregator.replicas(now=now)
        last = self.aggregator.last_closed
        back = readback or ReadBack()
        return Observed(
            replicas_ready=_known(back.replicas_ready, summary.ready),
            replicas_starting=_known(back.replicas_starting, summary.starting),
            standby_ready=_known(back.standby_ready, 0),
            standby_starting=_known(back.standby_starting, 0),
            serverless_provisioned=_known(back.serverless_provisioned, 0),
            request_rate=last.rate if last is not None else None,
            unavailable=back.unavailable,
            burst_factor=self.burst.factor,
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
                self.burst.observe(requests=bucket.requests, peak_slot=bucket.peak_slot, slots=bucket.slots)
        return True


def _spread(
    counts: Sequence[int], *, start: float, end: float, earliest: int
) -> list[tuple[int, tuple[int, ...]]]:
    """Return ``counts`` spread over the seconds of ``[start, end)`` in proportion to how much of each
    second the span covers (whole numbers, summing to ``counts``), as (second, counts) in order;
    seconds before ``earliest`` (in a closed bucket) are moved to ``earliest``, so nothing is late."""
    first = math.floor(start)
    last = max(math.ceil(end) - 1, first)
    span = end - start
    spread: dict[int, list[int]] = {}
    done = [0] * len(counts)
    for second in range(first, last + 1):
        covered = 1.0 if second == last or span <= 0 else min((second + 1 - start) / span, 1.0)
        upto = [math.floor(c * covered + 1e-9) if second < last else c for c in counts]
        cell = spread.setdefault(max(second, earliest), [0] * len(counts))
        for k, value in enumerate(upto):
            cell[k] += value - done[k]
        done = upto
    return [(second, tuple(cell)) for second, cell in spread.items() if any(cell)]


def _known(value: int | None, otherwise: int) -> int:
    return otherwise if value is None else value


def _serverless_read(readback: ReadBack | None) -> bool:
    """Return True when ``readback`` shows the provisioned serverless capacity."""
    return readback is not None and readback.serverless_provisioned is not None


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
