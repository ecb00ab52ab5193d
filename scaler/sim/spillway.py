"""The daemon's own controller under simulation: a thin adapter from the simulator to ``ModelController``.

The same :class:`~scaler.control.controller.ModelController` the daemon runs for each model (the same
aggregator, forecaster, burst re-plan, fallback, overrides and final clamp) is fed events generated
from the workload and asked, second by second, whether a decision is due, exactly as the daemon's
tick task asks it. Its read-back is the simulated cluster's state at the moment of the decision.

Documented differences from the daemon, all of timing:

* events are fed per whole second of arrivals (the aggregator buckets by ``floor(ts)`` either way),
  and ``due`` is asked at the end of each second (the daemon asks every ``burst_check_seconds`` and
  right after each consumed batch);
* output tokens are credited with their request's arrival (the daemon credits them at ``finish``);
* the read-back carries the simulated pods' creation and Ready times (the Kubernetes API's), so the
  controller learns the cold starts the cluster draws (:mod:`scaler.sim.coldstart`);
* while events are silent (no arrival for ``fallback_after_seconds``), the fallback signal is the
  arrival rate of the last minute and the cluster's ready replicas, refreshed every 5 s, as a daemon
  reading Prometheus would see them.

Times: the simulator counts seconds from the workload's start; the controller sees unix time
``start_unix + t`` (schedules read it; ``start_unix=0``: 1970-01-01 00:00 UTC, a Thursday).
:meth:`SpillwayController.warm_up` seeds the forecaster with a history that ends at the workload's
start (the stand-in for the Prometheus history the daemon seeds from).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from scaler.control.controller import Forecaster, ModelController, Planner, ReadBack, Step, Trigger
from scaler.control.leadtime import ColdStart
from scaler.core.fallback import FallbackSignal
from scaler.core.overrides import Override
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Unavailable
from scaler.forecast.models import DemandForecaster
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.results import FloatArray
from scaler.sim.workload import RateWorkload, Workload

FALLBACK_REFRESH_SECONDS = 5
FALLBACK_RATE_WINDOW = 60


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OverrideWindow:
    """An alert override in force from ``start`` to ``end`` (seconds since the workload's start)."""

    start: float
    end: float
    override: Override


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """One decision of a simulated run: when, on what read-back, why, and the step the controller returned."""

    at: float
    readback: ReadBack
    step: Step


def per_second(workload: Workload | RateWorkload) -> tuple[npt.NDArray[np.int64], ...]:
    """Return per-second (arrivals, prompt tokens, output tokens) of ``workload`` as whole numbers."""
    seconds = max(1, math.ceil(workload.duration))
    rows = workload.rows()
    idx = np.minimum(np.floor(rows.arrivals).astype(np.int64), seconds - 1)
    sums = (
        np.bincount(idx, weights=weights, minlength=seconds)
        for weights in (rows.weights, rows.weights * rows.prompt_tokens, rows.weights * rows.output_tokens)
    )
    arrivals, prompt, output = (np.rint(total).astype(np.int64) for total in sums)
    return arrivals, prompt, output


def bucket_counts(
    workload: Workload | RateWorkload, *, bucket_seconds: float, end: float | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return per-bucket (requests, prompt tokens, output tokens) of ``workload`` over ``[0, end)``.

    ``end`` defaults to the workload's duration, rounded down to whole buckets.
    Raises ValueError for a non-positive bucket or an ``end`` shorter than one bucket.
    """
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be > 0, got {bucket_seconds}")
    stop = workload.duration if end is None else min(end, workload.duration)
    n = math.floor(stop / bucket_seconds + 1e-9)
    if n < 1:
        raise ValueError(f"warm-up history of {stop:g} s is shorter than one {bucket_seconds:g} s bucket")
    rows = workload.rows()
    keep = rows.arrivals < n * bucket_seconds
    idx = (rows.arrivals[keep] // bucket_seconds).astype(np.int64)
    weights = rows.weights[keep]
    reqs = _sums(idx, weights, n)
    prompt = _sums(idx, weights * rows.prompt_tokens[keep], n)
    output = _sums(idx, weights * rows.output_tokens[keep], n)
    return reqs, prompt, output


def _sums(idx: npt.NDArray[np.int64], weights: FloatArray, n: int) -> FloatArray:
    """Return the first ``n`` per-index sums of ``weights``."""
    return np.asarray(np.bincount(idx, weights=weights, minlength=n)[:n], dtype=np.float64)


class SpillwayController:
    """The daemon's controller steering a simulated cluster (a self-scheduling simulator controller)."""

    def __init__(
        self,
        policy: ModelPolicy,
        workload: Workload | RateWorkload,
        *,
        name: str = "spillway",
        start_unix: int = 0,
        burst_window_seconds: int = 2,
        planner: Planner = plan,
        forecaster: Forecaster | None = None,
        overrides: Sequence[OverrideWindow] = (),
        record: bool = False,
    ) -> None:
        """Create a cold controller for ``policy`` fed from ``workload`` (see :meth:`warm_up`).

        ``forecaster`` defaults to the daemon's (:class:`~scaler.forecast.models.DemandForecaster`).
        """
        self._policy = policy
        self._name = name
        self._start = int(start_unix)
        self.controller = ModelController(
            policy=policy,
            forecaster=forecaster or DemandForecaster.from_policy(policy),
            planner=planner,
            now=float(self._start),
            burst_window_seconds=burst_window_seconds,
        )
        self._arrivals, self._prompt, self._output = per_second(workload)
        self._cumulative = np.concatenate(([0], np.cumsum(self._arrivals)))
        self._fed = 0  # seconds [0, _fed) have been fed
        self._trigger: Trigger = "tick"
        self._overrides = tuple(overrides)
        self._ready = 0
        self.recorded: list[Recorded] | None = [] if record else None
        self.decisions = 0

    @property
    def name(self) -> str:
        """Return the report name."""
        return self._name

    @property
    def interval_seconds(self) -> float:
        """Return the planning interval (``behavior.interval_seconds``)."""
        return float(self._policy.behavior.interval_seconds)

    @property
    def forecaster(self) -> DemandForecaster:
        """Return the daemon's forecaster (for inspection); raise TypeError for another one."""
        forecaster = self.controller.forecaster
        if not isinstance(forecaster, DemandForecaster):
            raise TypeError(f"this controller forecasts with {type(forecaster).__name__}")
        return forecaster

    def warm_up(self, history: Workload | RateWorkload, *, seconds: float | None = None) -> int:
        """Seed the forecaster with ``history``'s first ``seconds`` (all of it by default) as the time
        just BEFORE the simulated workload starts; return the number of buckets seeded.

        Raises ValueError if the history is shorter than one bucket.
        """
        bucket = float(self._policy.forecast.bucket_seconds)
        reqs, prompt, output = bucket_counts(history, bucket_seconds=bucket, end=seconds)
        start = self._start - reqs.shape[0] * bucket
        self.controller.seed(start=start, requests=reqs, prompt_tokens=prompt, output_tokens=output)
        return int(reqs.shape[0])

    def next_wake(self, *, now: float, until: float) -> float:
        """Feed the workload's events second by second after ``now``; return the first second at which
        the controller is due (tick or burst), or ``until`` if none is.
        """
        t = math.floor(now) + 1
        controller = self.controller
        while t < until:
            self._feed(until=t)
            trigger = controller.due(now=float(self._start + t))
            if trigger is not None:
                self._trigger = trigger
                return float(t)
            t += 1
        return until

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the controller's decision at ``obs.now`` on the cluster's read-back, as a target."""
        self._feed(until=math.floor(obs.now))
        self._ready = obs.replicas_ready
        readback = ReadBack(
            replicas_ready=obs.replicas_ready,
            replicas_starting=obs.replicas_starting,
            standby_ready=obs.standby_ready,
            standby_starting=obs.standby_starting,
            serverless_provisioned=obs.serverless_provisioned,
            cold_starts=self._pods(obs),
        )
        now = float(self._start) + obs.now
        if self.controller.silent(now=now):
            self.controller.set_fallback(self._signal(obs.now))
        active = [w.override for w in self._overrides if w.start <= obs.now < w.end]
        step = self.controller.decide(now=now, trigger=self._trigger, readback=readback, overrides=active)
        self._trigger = "tick"
        self.decisions += 1
        if self.recorded is not None:
            self.recorded.append(Recorded(at=obs.now, readback=readback, step=step))
        decision = step.decision
        serverless = self._policy.bounds.serverless_quota > 0 and (
            Unavailable.SERVERLESS not in step.observed.unavailable
        )
        return CapacityTarget(
            replicas=decision.replicas,
            standby=decision.standby,
            serverless_provisioned=decision.serverless_provisioned,
            serverless_enabled=serverless,
            reason=decision.reason,
        )

    def _pods(self, obs: TickObservation) -> tuple[ColdStart, ...]:
        """Return the cluster's pods as the Kubernetes API reads them at ``obs.now`` (unix time)."""
        start = float(self._start)
        return tuple(
            ColdStart(
                key=f"pod-{serial}",
                started_at=start + created,
                ready_at=start + ready if ready <= obs.now else None,
            )
            for serial, created, ready in obs.pods
        )

    def _feed(self, *, until: int) -> None:
        """Ingest the arrivals of seconds ``[_fed, until)``, as the daemon would have consumed them."""
        controller = self.controller
        last = min(until, self._arrivals.shape[0])
        for s in range(self._fed, last):
            count = int(self._arrivals[s])
            if count:
                controller.ingest_second(
                    second=self._start + s,
                    arrivals=count,
                    prompt_tokens=int(self._prompt[s]),
                    output_tokens=int(self._output[s]),
                    now=float(self._start + s + 1),
                )
            elif controller.silent(now=float(self._start + s + 1)) and s % FALLBACK_REFRESH_SECONDS == 0:
                controller.set_fallback(self._signal(float(s + 1)))
        self._fed = max(self._fed, last)

    def _signal(self, t: float) -> FallbackSignal:
        """Return what Prometheus would say at ``t``: the last minute's arrival rate and ready replicas."""
        hi = min(max(math.floor(t), 0), self._arrivals.shape[0])
        lo = max(0, hi - FALLBACK_RATE_WINDOW)
        rate = float(self._cumulative[hi] - self._cumulative[lo]) / max(hi - lo, 1)
        return FallbackSignal(at=float(self._start) + t, request_rate=rate, replicas_ready=self._ready)
