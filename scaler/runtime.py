"""The runtime: one :class:`~scaler.control.controller.ModelController` per owned model, fed and asked.

:mod:`scaler.app` drives it (consume batches, tick on time, checkpoint, hand models over). The
runtime decodes records at the edge, keeps ownership, runs each due controller, logs and exports
the decision, and hands it to the :class:`~scaler.executor.Executor`, which publishes and acts off
this path. Nothing here awaits but :func:`refresh_fallback` (Prometheus, on its own task): a slow
broker or Kubernetes/AWS API never delays ingest or another model's decision.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import time
from collections.abc import Mapping

import structlog

from scaler.adapters.metrics import DaemonMetrics
from scaler.adapters.prometheus import PrometheusSignal
from scaler.control import checkpoint
from scaler.control.controller import ModelController, Step, Trigger
from scaler.control.payload import decision_payload
from scaler.core import events
from scaler.core.events import InvalidEvent, RequestEvent
from scaler.core.fallback import FallbackSignal
from scaler.core.overrides import OverrideBook
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, FloatArray
from scaler.executor import Executor
from scaler.ports import ForecasterFactory, ForecasterLoader, Planner, RawRecord

FIRST_TICKS_AT_ONCE = 256  # models assigned at once beyond this have their first ticks spread out
FULL_COLLECTION_EVERY = 100  # young collections between full ones (CPython's default: 10)


def settle_collector() -> None:
    """Collect, move what exists now out of the cyclic collector's way, and make full collections rarer.

    Returns nothing. A full collection walks every model's live state (at 10,000 models about 100,000
    objects the decisions made: 50-130 ms each, measured by ``bench/scale.py``), and at CPython's
    default it came every 2-3 s of decisions: about a tenth of the process's CPU, growing with the
    model count. Young cycles are still collected as often as before; only garbage that survived two
    young collections waits longer. What start-up made (modules, policies) lives as long as the
    process and is frozen.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """Knobs of the runtime (from :class:`scaler.settings.Settings`)."""

    requests_topic: str = "llm.requests"
    max_skew_seconds: float = 300.0
    burst_window_seconds: int = 2
    dry_run: bool = False


class Runtime:
    """Owned models' controllers, and the observe -> decide steps over them."""

    def __init__(
        self,
        *,
        policies: Mapping[str, ModelPolicy],
        executor: Executor,
        planner: Planner,
        new_forecaster: ForecasterFactory,
        load_forecaster: ForecasterLoader,
        metrics: DaemonMetrics,
        options: RuntimeOptions,
    ) -> None:
        """Create a runtime owning no model yet."""
        self.policies: dict[str, ModelPolicy] = dict(policies)
        self.executor = executor
        self.planner = planner
        self.new_forecaster = new_forecaster
        self.load_forecaster = load_forecaster
        self.metrics = metrics
        self.options = options
        self.owned: dict[str, ModelController] = {}
        self.overrides = OverrideBook()  # alert overrides (filled by scaler.adapters.alerts)
        self.log = structlog.get_logger("scaler.runtime")
        self._not_owned = metrics.events_dropped.labels(why="not_owned")  # resolved once: hot path
        self._late_or_early = metrics.events_dropped.labels(why="late_or_early")
        self._foreign: frozenset[bytes] | None = None  # keys of models others own; None: recompute
        self._fed: set[str] = set()  # models fed request events since the consumer last asked due()
        self._ticks: list[tuple[float, str]] = []  # heap of (next tick, model); entries may be stale
        self._asked: set[str] = set()  # models found due by the last due(): their next tick is pushed again

    # -- ownership ----------------------------------------------------------------------------------

    def assign(self, models: frozenset[str], *, checkpoints: Mapping[str, bytes], now: float) -> None:
        """Start acting for ``models`` (those with a policy), resuming each from its checkpoint if valid.

        Each is due at once; beyond :data:`FIRST_TICKS_AT_ONCE` models, their first ticks are spread
        over their interval, so no tick decides thousands of models while ingest waits.
        """
        fresh: list[str] = []
        for model in sorted(models):
            policy = self.policies.get(model)
            if policy is None or model in self.owned:
                continue
            controller = self._fresh(policy, now=now)
            raw = checkpoints.get(model)
            if raw is not None:
                try:
                    controller = checkpoint.restore(
                        raw,
                        policy=policy,
                        load_forecaster=self.load_forecaster,
                        planner=self.planner,
                        now=now,
                        burst_window_seconds=self.options.burst_window_seconds,
                    )
                    self.log.info("checkpoint_loaded", model=model, bytes=len(raw))
                except ValueError as exc:
                    self.log.warning("checkpoint_rejected", model=model, error=str(exc))
            self.owned[model] = controller
            self.executor.attach(policy)
            fresh.append(model)
        for k, model in enumerate(fresh):  # many at once: first ticks spread over the interval
            controller = self.owned[model]
            if len(fresh) > FIRST_TICKS_AT_ONCE:
                share = (k // FIRST_TICKS_AT_ONCE) * FIRST_TICKS_AT_ONCE / len(fresh)
                controller.next_tick = now + share * controller.policy.behavior.interval_seconds
            heapq.heappush(self._ticks, (controller.next_tick, model))
        self.metrics.owned_models.set(len(self.owned))
        self._foreign = None

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
        controller = self.owned.get(model)
        if controller is None:
            return False
        try:
            controller.seed(
                start=start, requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens
            )
        except ValueError as exc:
            self.log.warning("history_rejected", model=model, error=str(exc))
            return False
        self.log.info("history_seeded", model=model, buckets=len(requests), start=start)
        return True

    def revoke(self, models: frozenset[str], *, now: float | None = None) -> dict[str, bytes]:
        """Stop deciding for ``models``; return their final checkpoints (the caller releases the executor).

        With ``now``, their ledgers are first brought up to ``now`` (:meth:`account`).
        """
        if now is not None:
            self.account(now=now, models=models)
        final = self.checkpoints(models)
        for model in models:
            if self.owned.pop(model, None) is not None:
                self.metrics.forget_model(model)
        self.metrics.owned_models.set(len(self.owned))
        self._foreign = None
        return final

    def checkpoints(self, models: frozenset[str] | None = None) -> dict[str, bytes]:
        """Return the checkpoint of each owned model (of ``models``, if given)."""
        names = self.owned.keys() if models is None else models & self.owned.keys()
        return {m: checkpoint.encode(self.owned[m]) for m in sorted(names)}

    def set_policies(self, policies: Mapping[str, ModelPolicy], *, now: float) -> frozenset[str]:
        """Apply reloaded policies; return the models dropped (the caller releases them from the executor).

        A changed model keeps its history unless its forecast settings changed.
        """
        self.policies = dict(policies)
        dropped = set()
        for model in list(self.owned):
            controller = self.owned[model]
            policy = self.policies.get(model)
            if policy is None:
                self.owned.pop(model)
                self.metrics.forget_model(model)
                dropped.add(model)
                self.log.info("model_dropped", model=model, why="no longer in the policy files")
            elif policy != controller.policy:
                if policy.forecast != controller.policy.forecast:
                    fresh = self._fresh(policy, now=now)
                    fresh.previous = controller.previous
                    fresh.ledger = controller.ledger
                    self.owned[model] = fresh
                    heapq.heappush(self._ticks, (fresh.next_tick, model))
                else:
                    controller.policy = policy
                self.executor.attach(policy)
                self.log.info("policy_applied", model=model)
        self.metrics.owned_models.set(len(self.owned))
        self._foreign = None
        return frozenset(dropped)

    def _fresh(self, policy: ModelPolicy, *, now: float) -> ModelController:
        return ModelController(
            policy=policy,
            forecaster=self.new_forecaster(policy),
            planner=self.planner,
            now=now,
            burst_window_seconds=self.options.burst_window_seconds,
        )

    # -- observe ------------------------------------------------------------------------------------

    def _foreign_keys(self) -> frozenset[bytes]:
        """Return the Kafka keys of models with a policy that this process does not own.

        Computed again after every change of ownership or policies (:meth:`assign`, :meth:`revoke`,
        :meth:`set_policies` clear it).
        """
        if self._foreign is None:
            self._foreign = frozenset(m.encode() for m in self.policies if m not in self.owned)
        return self._foreign

    def ingest(self, records: list[RawRecord], *, now: float) -> list[tuple[RawRecord, InvalidEvent]]:
        """Decode and aggregate ``records``; return the invalid ones with their error (nothing is raised).

        A record keyed by a model another process owns is dropped before it is decoded. Request
        events are decoded in one loop and counted per model in one call each; only an event that
        fails a check goes through the one-event decoder again, which says why.
        """
        foreign = self._foreign_keys()
        requests_topic = self.options.requests_topic
        kept = [r for r in records if r.key not in foreign] if foreign else records
        not_owned = len(records) - len(kept)  # keyed by a model another process acts for: not decoded
        requests = [r for r in kept if r.topic == requests_topic]
        others = [r for r in kept if r.topic != requests_topic] if len(requests) < len(kept) else []
        rejected: list[tuple[RawRecord, InvalidEvent]] = []
        not_owned += self._ingest_requests(requests, now=now, rejected=rejected)
        for record in others:
            not_owned += self._ingest_metric(record, now=now, rejected=rejected)
        if rejected and others and requests:  # dead letters in the order their records came
            position = {id(r): i for i, r in enumerate(records)}
            rejected.sort(key=lambda found: position[id(found[0])])
        if not_owned:
            self._not_owned.inc(not_owned)
        if not others:
            self.metrics.events_consumed.labels(topic=requests_topic).inc(len(records))
        else:
            for topic in {r.topic for r in records}:
                count = sum(1 for r in records if r.topic == topic)
                self.metrics.events_consumed.labels(topic=topic).inc(count)
        return rejected

    def _ingest_requests(
        self, records: list[RawRecord], *, now: float, rejected: list[tuple[RawRecord, InvalidEvent]]
    ) -> int:
        """Decode and count request ``records``; append the invalid ones to ``rejected``; return how many
        were of models not owned."""
        skew = self.options.max_skew_seconds
        policies, owned = self.policies, self.owned
        groups: dict[str, list[RequestEvent] | None] = {}  # None: a known model this process does not own
        not_owned = 0
        decoded = events.decode_request_batch([r.value for r in records])
        for record, found in zip(records, decoded, strict=True):
            event = found
            if event is None or abs(event.ts - now) > skew or event.model not in policies:
                event = self._one_request(record, now=now, rejected=rejected)  # says why, or it passes
                if event is None:
                    continue
            model = event.model
            if model in groups:
                group = groups[model]
            else:
                group = groups[model] = [] if model in owned else None
            if group is None:
                not_owned += 1
            else:
                group.append(event)
        self._count(groups, now=now)
        return not_owned

    def _count(self, groups: Mapping[str, list[RequestEvent] | None], *, now: float) -> None:
        """Count each owned model's batch of events into its controller (None: a model not owned)."""
        late_or_early = 0
        for model, batch in groups.items():
            if batch is None:
                continue
            try:
                counted = self.owned[model].ingest_requests(batch, now=now)
            except Exception:  # validated events cannot fail to count; were they to, the daemon goes on
                self.log.exception("aggregate_failed", model=model, events=len(batch))
                continue
            late_or_early += len(batch) - counted
            if counted:
                self._fed.add(model)
        if late_or_early:
            self._late_or_early.inc(late_or_early)

    def _one_request(
        self, record: RawRecord, *, now: float, rejected: list[tuple[RawRecord, InvalidEvent]]
    ) -> RequestEvent | None:
        """Return the event of ``record`` fully checked, or None after appending it to ``rejected``."""
        try:
            return events.decode_request(
                record.value, known_models=self.policies, now=now, max_skew=self.options.max_skew_seconds
            )
        except InvalidEvent as exc:
            self._reject(record, exc, rejected)
        except Exception as exc:  # a decoder bug must cost one record, never the batch or the daemon
            self._reject(record, _decoder_bug(exc), rejected)
        return None

    def _ingest_metric(
        self, record: RawRecord, *, now: float, rejected: list[tuple[RawRecord, InvalidEvent]]
    ) -> int:
        """Decode and keep one metric ``record`` (or reject it); return 1 if its model is not owned."""
        try:
            metric = events.decode_metric(
                record.value, known_models=self.policies, now=now, max_skew=self.options.max_skew_seconds
            )
        except InvalidEvent as exc:
            self._reject(record, exc, rejected)
            return 0
        except Exception as exc:  # a decoder bug must cost one record, never the batch or the daemon
            self._reject(record, _decoder_bug(exc), rejected)
            return 0
        controller = self.owned.get(metric.model)
        if controller is None:
            return 1
        controller.ingest_metric(metric, now=now)
        return 0

    def _reject(
        self, record: RawRecord, error: InvalidEvent, rejected: list[tuple[RawRecord, InvalidEvent]]
    ) -> None:
        rejected.append((record, error))
        self.metrics.events_rejected.labels(reason=error.reason).inc()

    # -- fallback: Prometheus when a model's events stop -------------------------------------------

    def silent_models(self, *, now: float) -> list[ModelPolicy]:
        """Return the policies of owned models whose events stopped for their ``fallback_after_seconds``."""
        return [c.policy for c in self.owned.values() if c.silent(now=now)]

    def set_fallback(self, model: str, signal: FallbackSignal) -> None:
        """Keep the latest fallback signal of an owned model (ignored if not owned)."""
        controller = self.owned.get(model)
        if controller is not None:
            controller.set_fallback(signal)

    # -- decide -------------------------------------------------------------------------------------

    def due(self, *, now: float, fed: bool = False) -> list[tuple[str, Trigger]]:
        """Return (model, trigger) for every owned model whose tick is due or that sees a burst.

        Only models that can be due are asked: with ``fed``, those fed events since the last call (the
        consumer asks right after each batch, so a burst is decided as soon as it is read); without,
        those and the models whose tick time has come (a heap: the cost follows the due models, not
        the owned ones). A model fed nothing since it was last asked sees no new burst.
        A model whose targets were never read back yet is not due: deciding blind could scale it down.
        """
        names, self._fed = self._fed, set()
        if not fed:
            names |= self._tick_due(now=now)
        found: list[tuple[str, Trigger]] = []
        for model in sorted(names):
            controller = self.owned.get(model)
            if controller is None:
                continue
            trigger = controller.due(now=now)
            if trigger is not None and not self.executor.awaiting_first_read(model):
                found.append((model, trigger))
        return found

    def _tick_due(self, *, now: float) -> set[str]:
        """Return the owned models whose next tick is at or before ``now`` (from the heap)."""
        ticks, owned = self._ticks, self.owned
        for model in self._asked:  # decided since (a later tick) or not (still due): pushed either way
            controller = owned.get(model)
            if controller is not None:
                heapq.heappush(ticks, (controller.next_tick, model))
        due: set[str] = set()
        while ticks and ticks[0][0] <= now:
            _, model = heapq.heappop(ticks)
            controller = owned.get(model)
            if controller is None or model in due:
                continue  # revoked or dropped, or a stale duplicate
            if controller.next_tick > now:  # decided since this entry was pushed
                heapq.heappush(ticks, (controller.next_tick, model))
            else:
                due.add(model)
        self._asked = due
        return due

    def decide(self, model: str, *, trigger: Trigger, now: float) -> Decision | None:
        """Decide for an owned model, log it, hand it to the executor; return it (None: not owned)."""
        controller = self.owned.get(model)
        if controller is None:
            return None
        started = time.perf_counter()
        step = controller.decide(
            now=now,
            trigger=trigger,
            readback=self.executor.readback(model),
            overrides=self.overrides.active(now=now, model=model),
        )
        decision = step.decision
        self._explain(model, controller.policy, step)
        payload = decision_payload(
            model=model,
            decision=decision,
            trigger=trigger,
            dry_run=self.options.dry_run,
            ledger=step.ledger,
            paused=step.paused,
            floors=step.floors,
        )
        self.executor.submit(
            policy=controller.policy,
            decision=decision,
            payload=payload,
            inflight=controller.aggregator.inflight(now=now),
        )
        self.metrics.record_decision(model=model, decision=decision, trigger=trigger)
        self.metrics.record_ledger(model=model, accrued=controller.ledger.take_unexported(controller.policy))
        self.metrics.record_lead_times(model=model, lead_times=step.lead_times)
        self.metrics.decision_latency.observe(time.perf_counter() - started)
        return decision

    def account(self, *, now: float, models: frozenset[str] | None = None) -> None:
        """Bring every owned model's ledger (of ``models``, if given) up to ``now`` and export it.

        Between decisions (the daemon calls it before each checkpoint), so the cost counters move
        more often than once an interval and a checkpoint holds the cost up to ``now``.
        """
        for model, controller in self.owned.items():
            if models is not None and model not in models:
                continue
            controller.account(now=now, readback=self.executor.readback(model))
            accrued = controller.ledger.take_unexported(controller.policy)
            self.metrics.record_ledger(model=model, accrued=accrued)

    def _explain(self, model: str, policy: ModelPolicy, step: Step) -> None:
        """Log one decision (and any fallback transition or clamp) and export the fallback gauge."""
        log = self.log.bind(model=model)
        self.metrics.fallback_active.labels(model=model).set(0.0 if step.source == "events" else 1.0)
        if step.transition is not None:
            log.warning(step.transition, silent_seconds=round(step.silent_seconds, 1))
        if step.source == "none":
            log.warning("holding_without_data", why="events silent and Prometheus unavailable")
        if step.clamped:
            log.warning("decision_clamped", notes=list(step.clamped))
        if step.trigger == "burst":
            self.metrics.bursts.labels(model=model).inc()
        decision = step.decision
        log.info(
            "decision",
            trigger=step.trigger,
            replicas=decision.replicas,
            standby=decision.standby,
            serverless=decision.serverless_provisioned,
            spill=round(decision.spill_fraction, 4),
            reason=decision.reason,
            bound_by=decision.bound_by,
            forecast_valid=step.forecast.valid,
            dry_run=self.options.dry_run,
        )


def _decoder_bug(exc: Exception) -> InvalidEvent:
    return InvalidEvent("bad_value", f"cannot decode: {type(exc).__name__}: {str(exc)[:120]}")


async def refresh_fallback(reader: PrometheusSignal, runtime: Runtime, *, now: float) -> int:
    """Read the signal of every silent model into ``runtime``; return how many were read. Never raises."""
    done = 0
    for policy in runtime.silent_models(now=now):
        try:
            signal = await reader.signal(policy.name, now=now)
        except ConnectionError as exc:
            runtime.log.warning("fallback_unavailable", model=policy.name, error=str(exc))
            continue
        runtime.set_fallback(policy.name, signal)
        done += 1
    return done
