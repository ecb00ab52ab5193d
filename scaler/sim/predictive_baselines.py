"""Predictive baselines: a Dynamo-planner-like scaler and AWS-style predictive scaling, with their defaults.

Both are :class:`scaler.sim.protocol.Controller` s that see only :class:`TickObservation` (no future),
run replicas only (no serverless) and clamp targets into the policy's replica bounds. Figures come from
the systems' documentation, no code:

* NVIDIA Dynamo, "Planner" / "SLA-based Planner" docs (docs.nvidia.com/dynamo, planner design and
  planner guide): every ``adjustment_interval`` (default 180 s) the planner reads the request count
  and the average input/output sequence lengths of the interval, forecasts the next interval's values
  with its load predictor (``constant``, ``arima``, ``prophet``, ``kalman``; versions of the docs
  differ on the default, ``arima`` or ``constant``), and sets the replica count that serves that load
  within the TTFT and ITL targets from its profiled throughput; at least ``min_endpoint`` = 1 replica,
  at most the GPU budget; it has no serverless tier.
* AWS, "How Application Auto Scaling predictive scaling works" and the EC2 Auto Scaling
  ``PredictiveScalingConfiguration`` API reference (docs.aws.amazon.com): it needs at least 24 hours
  of metric history, analyses up to the last 14 days for daily and weekly patterns, forecasts hourly
  load for the next 48 hours and refreshes the forecast every 6 hours; in forecast-and-scale mode it
  launches capacity ``SchedulingBufferTime`` ahead (default 300 s), never scales in on a forecast
  (dynamic scaling removes capacity), and with ``MaxCapacityBreachBehavior`` = ``HonorMaxCapacity``
  (the default) never exceeds the group's maximum. It is meant to run beside a target-tracking policy.
"""

from __future__ import annotations

import math

from scaler.core.policy import ModelPolicy
from scaler.core.queueing import instances_needed, request_work
from scaler.sim.protocol import CapacityTarget, TickObservation

DYNAMO_ADJUSTMENT_SECONDS = 180.0
DYNAMO_MIN_ENDPOINT = 1

AWS_HISTORY_MIN_SECONDS = 24 * 3600.0
AWS_HISTORY_MAX_SECONDS = 14 * 86_400.0
AWS_FORECAST_REFRESH_SECONDS = 6 * 3600.0
AWS_FORECAST_HOURS = 48
AWS_SCHEDULING_BUFFER_SECONDS = 300.0
AWS_METRIC_SECONDS = 60.0  # CloudWatch's one-minute metric period; target tracking evaluates at it
AWS_TARGET_UTILISATION = 0.7  # the target-tracking value used beside it (the HPA baseline's 70 %)
AWS_SCALE_IN_COOLDOWN_SECONDS = 300.0
HOUR, DAY, WEEK = 3600, 86_400, 7 * 86_400


def _clamp(n: int, policy: ModelPolicy) -> int:
    """Return ``n`` clamped into the policy's replica bounds."""
    return max(policy.bounds.min_replicas, min(policy.bounds.max_replicas, n))


class DynamoPlanner:
    """A Dynamo-planner-like predictive scaler: constant (last-interval) load predictor, 180 s interval.

    Each decision forecasts the next interval's request rate and mean prompt/output lengths as the
    last interval's (the ``constant`` predictor), and sizes replicas with Spillway's queueing model
    (:func:`scaler.core.queueing.instances_needed`: the fewest replicas that keep queue wait within
    the TTFT target for the SLO's share of requests), which stands in for Dynamo's profiled
    throughput at the TTFT/ITL targets. Dynamo's correction factors (measured over expected latency)
    are not modelled; the simulator's capacity model is exact by construction.
    """

    def __init__(
        self,
        *,
        policy: ModelPolicy,
        interval: float = DYNAMO_ADJUSTMENT_SECONDS,
        name: str = "dynamo-planner",
    ) -> None:
        """Create the controller; raises ValueError for a non-positive interval."""
        if not interval > 0:
            raise ValueError(f"adjustment interval must be > 0 seconds, got {interval}")
        self._policy = policy
        self._interval = interval
        self.name = name  # the report name

    @property
    def interval_seconds(self) -> float:
        """Return the adjustment interval (180 s)."""
        return self._interval

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the replicas that serve the last interval's load again within the TTFT target."""
        n = obs.arrivals
        if n <= 0 or obs.interval <= 0:
            replicas = _clamp(DYNAMO_MIN_ENDPOINT, self._policy)
            return CapacityTarget(replicas=replicas, reason="dynamo: no load, min endpoint")
        rate = n / obs.interval
        isl, osl = obs.prompt_tokens / n, obs.output_tokens / n
        need = instances_needed(rate, policy=self._policy, mean_prompt=isl, mean_output=osl)
        replicas = _clamp(max(DYNAMO_MIN_ENDPOINT, need), self._policy)
        return CapacityTarget(
            replicas=replicas,
            reason=f"dynamo: predict {rate:.2f} req/s, isl {isl:.0f}, osl {osl:.0f} -> {need}",
        )


class AwsPredictive:
    """AWS-style predictive scaling (forecast and scale) beside target tracking, replicas only.

    History: the work arriving each hour (instance-hours, from the observed token counts). Forecast,
    refreshed every 6 hours once 24 hours are seen: each of the next 48 hours gets the mean of the same
    hour on the last days of history (up to 14), or of the same hour of the week when two weeks are
    seen; capacity for an hour is its forecast load over the 70 % target. Each minute the target is the
    larger of the forecast capacity of the hour starting ``SchedulingBufferTime`` (300 s) from now and
    target tracking's ``ceil(busy replicas / 0.7)``; the forecast never lowers capacity, target tracking
    lowers it only after a 300 s scale-in cooldown, and the group's maximum is honoured.
    """

    interval_seconds: float = AWS_METRIC_SECONDS  # the metric period (60 s)

    def __init__(
        self,
        *,
        policy: ModelPolicy,
        buffer_seconds: float = AWS_SCHEDULING_BUFFER_SECONDS,
        target: float = AWS_TARGET_UTILISATION,
        name: str = "aws-predictive",
    ) -> None:
        """Create the controller; raises ValueError unless 0 < target <= 1 and 0 <= buffer < 3600."""
        if not 0 < target <= 1:
            raise ValueError(f"target utilisation must be in (0, 1], got {target}")
        if not 0 <= buffer_seconds < HOUR:
            raise ValueError(f"SchedulingBufferTime must be in [0, 3600) seconds, got {buffer_seconds}")
        self._policy = policy
        self._buffer = buffer_seconds
        self._target = target
        self.name = name  # the report name
        self._hourly: dict[int, float] = {}  # hour index -> instance-seconds of work arrived
        self._forecast: dict[int, int] = {}  # hour index -> replicas
        self._refreshed_at = -math.inf
        self._current = _clamp(1, policy)
        self._last_up = -math.inf

    def forecast(self, hour: int) -> int | None:
        """Return the forecast replicas for hour index ``hour`` (None before any forecast covers it)."""
        return self._forecast.get(hour)

    def _refresh(self, now: float) -> None:
        """Recompute the 48-hour forecast from the history seen before ``now``; returns nothing."""
        self._refreshed_at = now
        this_hour = int(now // HOUR)
        period = WEEK if now >= 2 * WEEK else DAY
        first = max(0, this_hour - int(AWS_HISTORY_MAX_SECONDS // HOUR))
        self._forecast = {}
        for hour in range(this_hour, this_hour + AWS_FORECAST_HOURS):
            past = [
                self._hourly.get(h, 0.0)
                for h in range(hour - period // HOUR, first - 1, -(period // HOUR))
                if h < this_hour
            ]
            if not past:
                continue
            load = sum(past) / len(past) / HOUR  # mean instances busy over the hour
            self._forecast[hour] = math.ceil(load / self._target - 1e-9)

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return max(forecast capacity ahead, target tracking), within the bounds."""
        now = obs.now
        work = request_work(self._policy, obs.prompt_tokens, obs.output_tokens)
        start = int(max(0.0, now - obs.interval) // HOUR)
        self._hourly[start] = self._hourly.get(start, 0.0) + work
        if now >= AWS_HISTORY_MIN_SECONDS and now - self._refreshed_at >= AWS_FORECAST_REFRESH_SECONDS:
            self._refresh(now)
        ahead = self._forecast.get(int((now + self._buffer) // HOUR), 0)
        slots = max(obs.slots_per_replica, 1)
        tracking = math.ceil(obs.busy_slots / slots / self._target - 1e-9) + obs.queue_length // slots
        desired = max(ahead, tracking, 1)
        if desired > self._current:
            self._current, self._last_up = desired, now
        elif desired < self._current and now - self._last_up >= AWS_SCALE_IN_COOLDOWN_SECONDS:
            self._current = max(desired, ahead)
        self._current = _clamp(self._current, self._policy)
        return CapacityTarget(
            replicas=self._current, reason=f"aws: forecast {ahead}, tracking {tracking} -> {self._current}"
        )
