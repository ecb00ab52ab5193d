"""Spillway's own planner as a simulated controller: the forecaster and ``plan`` the daemon runs.

Every ``behavior.interval_seconds`` the controller adds the observed counts to the forecaster's
buckets (a tick's counts are split over the buckets its interval overlaps, in proportion), observes
each completed bucket, forecasts from ``now``, and calls :func:`scaler.core.plan.plan` with what
the cluster reports, passing its previous decision back in.

Times: the simulator counts seconds from the workload's start; the planner reads schedules in unix
time, so ``now + start_unix`` is what the forecaster and planner see (``start_unix=0`` by default:
1970-01-01 00:00 UTC, a Thursday; give the trace's real start if its schedules matter).

Warm-up: a cold forecaster holds its first decisions (no data) until it has seen a few buckets, and
learns a daily season only after a day. :meth:`SpillwayController.warm_up` seeds it with a history
that ENDS at the workload's start (the stand-in for the Prometheus history the daemon seeds from).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Observed
from scaler.forecast.models import DemandForecaster
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.results import FloatArray
from scaler.sim.workload import RateWorkload, Workload


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
    if isinstance(workload, RateWorkload):
        seconds = np.arange(workload.counts.shape[0], dtype=np.float64)
        keep = seconds < n * bucket_seconds
        idx = (seconds[keep] // bucket_seconds).astype(np.int64)
        reqs = _sums(idx, workload.counts[keep], n)
        return reqs, reqs * workload.mean_prompt_tokens, reqs * workload.mean_output_tokens
    keep = workload.arrivals < n * bucket_seconds
    idx = (workload.arrivals[keep] // bucket_seconds).astype(np.int64)
    reqs = _sums(idx, np.ones(idx.shape[0]), n)
    prompt = _sums(idx, workload.prompt_tokens[keep].astype(np.float64), n)
    output = _sums(idx, workload.output_tokens[keep].astype(np.float64), n)
    return reqs, prompt, output


def _sums(idx: npt.NDArray[np.int64], weights: FloatArray, n: int) -> FloatArray:
    """Return the first ``n`` per-index sums of ``weights``."""
    return np.asarray(np.bincount(idx, weights=weights, minlength=n)[:n], dtype=np.float64)


class SpillwayController:
    """The Spillway planner under simulation (a :class:`scaler.sim.protocol.Controller`)."""

    def __init__(self, policy: ModelPolicy, *, name: str = "spillway", start_unix: float = 0.0) -> None:
        """Create a cold controller for ``policy`` (see :meth:`warm_up` to seed its history)."""
        self._policy = policy
        self._name = name
        self._start = float(start_unix)
        self._forecaster = DemandForecaster.from_policy(policy)
        self._bucket = float(policy.forecast.bucket_seconds)
        self._pending: dict[int, list[float]] = {}  # bucket index -> [requests, prompt, output]
        self._next_bucket = 0  # first bucket index not yet handed to the forecaster
        self.previous: Decision | None = None
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
        """Return the forecaster (for inspection)."""
        return self._forecaster

    def warm_up(self, history: Workload | RateWorkload, *, seconds: float | None = None) -> int:
        """Seed the forecaster with ``history``'s first ``seconds`` (all of it by default) as the time
        just BEFORE the simulated workload starts; return the number of buckets seeded.

        Raises ValueError if the history is shorter than one bucket.
        """
        reqs, prompt, output = bucket_counts(history, bucket_seconds=self._bucket, end=seconds)
        start = self._start - reqs.shape[0] * self._bucket
        self._forecaster.seed(start=start, requests=reqs, prompt_tokens=prompt, output_tokens=output)
        return int(reqs.shape[0])

    def _accumulate(self, obs: TickObservation) -> None:
        """Add the tick's counts to the buckets its interval ``(now - interval, now]`` overlaps."""
        if obs.arrivals == 0 and obs.prompt_tokens == 0 and obs.output_tokens == 0:
            return
        lo, hi = max(obs.now - obs.interval, 0.0), obs.now
        span = hi - lo
        if span <= 0:
            return
        first = math.floor(lo / self._bucket)
        last = math.ceil(hi / self._bucket) - 1
        counts = (float(obs.arrivals), float(obs.prompt_tokens), float(obs.output_tokens))
        for b in range(max(first, self._next_bucket), last + 1):
            overlap = min(hi, (b + 1) * self._bucket) - max(lo, b * self._bucket)
            if overlap <= 0:
                continue
            share = overlap / span
            acc = self._pending.setdefault(b, [0.0, 0.0, 0.0])
            for i, c in enumerate(counts):
                acc[i] += c * share

    def _flush(self, now: float) -> None:
        """Hand every bucket that ended at or before ``now`` to the forecaster, in order."""
        done = math.floor(now / self._bucket + 1e-9)  # buckets [0, done) are complete
        for b in range(self._next_bucket, done):
            reqs, prompt, output = self._pending.pop(b, (0.0, 0.0, 0.0))
            self._forecaster.observe(
                bucket_start=self._start + b * self._bucket,
                requests=reqs,
                prompt_tokens=prompt,
                output_tokens=output,
            )
        self._next_bucket = max(self._next_bucket, done)

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the planner's capacity for this tick (its reason is the planner's one-line explanation)."""
        self._accumulate(obs)
        self._flush(obs.now)
        now = self._start + obs.now
        observed = Observed(
            replicas_ready=obs.replicas_ready,
            replicas_starting=obs.replicas_starting,
            standby_ready=obs.standby_ready,
            standby_starting=obs.standby_starting,
            serverless_provisioned=obs.serverless_provisioned,
            request_rate=obs.arrivals / obs.interval if obs.interval > 0 else None,
        )
        forecast = self._forecaster.forecast(now=now)
        decision = plan(
            policy=self._policy, forecast=forecast, observed=observed, previous=self.previous, now=now
        )
        self.previous = decision
        self.decisions += 1
        serverless = (
            self._policy.bounds.serverless_quota > 0 and decision.bound_by != "serverless-unavailable"
        )
        return CapacityTarget(
            replicas=decision.replicas,
            standby=decision.standby,
            serverless_provisioned=decision.serverless_provisioned,
            serverless_enabled=serverless,
            reason=decision.reason,
        )
