"""Baseline autoscalers, each configured like its real counterpart with that system's documented defaults.

Every baseline is a :class:`scaler.sim.protocol.Controller` (the predictive ones, Dynamo-planner-like
and AWS-style, live in :mod:`scaler.sim.predictive_baselines`) that sees only :class:`TickObservation`
(no future knowledge), except :class:`StaticPeak`, which is sized up front from the workload's peak
the way people provision statically. All targets are clamped into the policy's
``[min_replicas, max_replicas]``; the serverless quota is enforced by the simulated cluster.

Capacity model (the simulator's): a request holds one of a replica's ``C`` slots for
``C * (P/Tp + O/Td)`` seconds, so ``busy_slots / C`` is the number of replicas' worth of work in use.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np

from scaler.core.policy import ModelPolicy
from scaler.sim.cluster import hold_seconds
from scaler.sim.predictive_baselines import AwsPredictive, DynamoPlanner
from scaler.sim.protocol import CapacityTarget, Controller, TickObservation
from scaler.sim.workload import RateWorkload, Workload

# Sources: Kubernetes docs "Horizontal Pod Autoscaling" (kubernetes.io, autoscaling/v2 behavior
# defaults); KEDA docs "ScaledObject specification" and "Apache Kafka" scaler (keda.sh); Knative docs
# "Configuring the autoscaler" / config-autoscaler ConfigMap (knative.dev). Figures only, no code.
#
# Kubernetes HorizontalPodAutoscaler (autoscaling/v2) defaults: controller sync period 15 s
# (--horizontal-pod-autoscaler-sync-period), tolerance 0.1 (--horizontal-pod-autoscaler-tolerance),
# scale-up: no stabilisation, policies "4 pods per 15 s" and "100 % per 15 s", the larger wins;
# scale-down: stabilisation window 300 s (the highest recommendation over the window is used),
# policy "100 % per 15 s".
HPA_SYNC_SECONDS = 15.0
HPA_TOLERANCE = 0.1
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_PERCENT = 100.0
HPA_SCALE_DOWN_WINDOW_SECONDS = 300.0

# KEDA defaults (ScaledObject and the Kafka scaler): pollingInterval 30 s, cooldownPeriod 300 s
# (applies only to the last replica, i.e. scaling to zero), minReplicaCount 0, Kafka lagThreshold 10
# and activationLagThreshold 0. KEDA hands the metric to an HPA, whose defaults apply on top.
KEDA_POLLING_SECONDS = 30.0
KEDA_COOLDOWN_SECONDS = 300.0
KEDA_DEFAULT_LAG_THRESHOLD = 10.0

# Knative Serving KPA defaults (config-autoscaler): tick 2 s, stable window 60 s, panic window 10 %
# of it (6 s), panic threshold 200 %, target utilisation 70 % of the concurrency target,
# max scale-up rate 1000x, max scale-down rate 2x per tick, scale-to-zero grace period 30 s.
KPA_TICK_SECONDS = 2.0
KPA_STABLE_WINDOW_SECONDS = 60.0
KPA_PANIC_WINDOW_SECONDS = 6.0
KPA_PANIC_THRESHOLD = 2.0
KPA_TARGET_UTILISATION = 0.7
KPA_MAX_SCALE_UP_RATE = 1000.0
KPA_MAX_SCALE_DOWN_RATE = 2.0
KPA_SCALE_TO_ZERO_GRACE_SECONDS = 30.0


def _clamp(n: int, policy: ModelPolicy) -> int:
    """Return ``n`` clamped into the policy's replica bounds."""
    bounds = policy.bounds
    return max(bounds.min_replicas, min(bounds.max_replicas, n))


def _window_work(workload: Workload | RateWorkload, *, policy: ModelPolicy, window: float) -> np.ndarray:
    """Return instance-seconds of work arriving in each consecutive ``window``-second window."""
    if window <= 0:
        raise ValueError(f"window must be > 0 seconds, got {window}")
    rows = workload.rows()
    if not rows.weights.any():
        return np.zeros(0)
    slots = policy.replica.max_concurrency  # a request holds one of C slots: C slot-seconds = 1 instance-s
    each = rows.weights * hold_seconds(policy, rows.prompt_tokens, rows.output_tokens) / slots
    bins = (rows.arrivals // window).astype(np.int64)
    return np.bincount(bins, weights=each)


def peak_instances(workload: Workload | RateWorkload, *, policy: ModelPolicy, window: float = 60.0) -> float:
    """Return the most instances' worth of work arriving in any ``window``-second window (>= 0).

    Raises ValueError for a non-positive window.
    """
    return float(_window_work(workload, policy=policy, window=window).max(initial=0.0)) / window


def opening_instances(
    workload: Workload | RateWorkload, *, policy: ModelPolicy, window: float = 60.0
) -> float:
    """Return the instances' worth of work arriving in the first ``window`` seconds (>= 0).

    A trace is a slice of a service already running: a fair start gives every policy the replicas
    its opening minute keeps busy. Raises ValueError for a non-positive window.
    """
    work = _window_work(workload, policy=policy, window=window)
    return float(work[0]) / window if work.shape[0] else 0.0


def warm_replicas(workload: Workload | RateWorkload, *, policy: ModelPolicy) -> int:
    """Return the replicas ready at t=0 for a warm start: what the opening minute keeps busy, in bounds."""
    need = math.ceil(opening_instances(workload, policy=policy) - 1e-9)
    bounds = policy.bounds
    return min(max(need, bounds.min_replicas), bounds.max_replicas)


class StaticPeak:
    """A fixed number of replicas sized for the workload's peak minute, no serverless.

    This is how capacity is provisioned statically: look at the peak, add headroom, never change it.
    """

    interval_seconds: float = 300.0  # the decision interval (it never changes its mind, so a long one)

    def __init__(self, replicas: int, *, policy: ModelPolicy, name: str = "static-peak") -> None:
        """Keep ``replicas`` (clamped into the policy's bounds) for the whole run."""
        self._replicas = _clamp(replicas, policy)
        self.name = name  # the report name

    @classmethod
    def for_workload(
        cls, workload: Workload | RateWorkload, *, policy: ModelPolicy, utilisation: float = 0.8
    ) -> StaticPeak:
        """Return a StaticPeak with ``ceil(peak-minute work / utilisation)`` replicas (at least 1).

        A 0.8 target keeps 20 % headroom over the peak minute for bursts within it.
        Raises ValueError unless 0 < utilisation <= 1.
        """
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
        need = peak_instances(workload, policy=policy) / utilisation
        return cls(max(1, math.ceil(need - 1e-9)), policy=policy)

    @property
    def replicas(self) -> int:
        """Return the fixed replica count."""
        return self._replicas

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the fixed replica count, whatever was observed."""
        del obs
        return CapacityTarget(replicas=self._replicas, reason=f"static: {self._replicas} for the peak")


class ServerlessOnly:
    """No replicas at all: every request goes to on-demand serverless (up to the quota)."""

    interval_seconds: float = 60.0  # the decision interval

    def __init__(self, *, name: str = "serverless-only") -> None:
        """Create the controller."""
        self.name = name  # the report name

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return zero replicas with serverless enabled."""
        del obs
        return CapacityTarget(replicas=0, serverless_enabled=True, reason="serverless only")


class _HpaCore:
    """The HPA's replica arithmetic: tolerance, scale-up rate limit, scale-down stabilisation window."""

    def __init__(self, *, policy: ModelPolicy, min_replicas: int) -> None:
        self.policy = policy
        self.min_replicas = min_replicas
        self.current = _clamp(min_replicas, policy)
        self.recommendations: collections.deque[tuple[float, int]] = collections.deque()
        self.last_up_at = -math.inf

    def step(self, *, now: float, desired: int) -> tuple[int, str]:
        """Return (replicas, reason) after applying HPA behaviour to a raw ``desired`` count."""
        bounds = self.policy.bounds
        lo = max(self.min_replicas, bounds.min_replicas)
        desired = max(lo, min(bounds.max_replicas, desired))
        self.recommendations.append((now, desired))
        while self.recommendations and self.recommendations[0][0] < now - HPA_SCALE_DOWN_WINDOW_SECONDS:
            self.recommendations.popleft()
        reason = f"hpa: recommend {desired}"
        if desired < self.current:
            stabilised = max(r for _, r in self.recommendations)
            target = min(self.current, stabilised)
            if target > desired:
                reason += f", held at {target} by the {HPA_SCALE_DOWN_WINDOW_SECONDS:.0f} s window"
        elif desired > self.current:
            limit = max(
                self.current + HPA_SCALE_UP_PODS,
                math.ceil(self.current * (1 + HPA_SCALE_UP_PERCENT / 100)),
            )
            target = min(desired, limit)
            if target < desired:
                reason += f", limited to {target} by the scale-up policy"
        else:
            target = desired
        self.current = _clamp(target, self.policy)
        return self.current, reason


class Hpa:
    """Kubernetes HPA on utilisation ``busy_slots / (ready * slots)``, target 70 %, no serverless.

    Like the HPA with a resource metric, pods still starting count as 0 % used, so the raw
    recommendation is ``ceil(busy_slots / slots / target)``; within 10 % of the target nothing
    changes; at least one replica (the HPA cannot scale to zero by default).
    """

    interval_seconds: float = HPA_SYNC_SECONDS  # the HPA sync period (15 s)

    def __init__(
        self,
        *,
        policy: ModelPolicy,
        target: float = 0.7,
        serverless: bool = False,
        name: str = "hpa",
    ) -> None:
        """Create the controller; raises ValueError unless 0 < target <= 1."""
        if not 0 < target <= 1:
            raise ValueError(f"target utilisation must be in (0, 1], got {target}")
        self.name = name  # the report name
        self._target = target
        self._serverless = serverless
        self._core = _HpaCore(policy=policy, min_replicas=1)

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the HPA's replica count after this sync."""
        current = obs.replicas_ready + obs.replicas_starting
        pods = max(current, 1)
        slots = max(obs.slots_per_replica, 1)
        ratio = obs.busy_slots / (pods * slots) / self._target
        if obs.replicas_ready == 0 or abs(ratio - 1.0) <= HPA_TOLERANCE:
            desired = self._core.current
        else:
            desired = math.ceil(obs.busy_slots / slots / self._target - 1e-9)
        replicas, reason = self._core.step(now=obs.now, desired=desired)
        return CapacityTarget(replicas=replicas, serverless_enabled=self._serverless, reason=reason)


class ReactiveHybrid(Hpa):
    """Spock-style reactive hybrid (Gunasekaran et al., "Spock", IEEE CLOUD 2019): the HPA above on
    replicas, plus serverless overflow for whatever the replicas cannot take at once.
    """

    def __init__(self, *, policy: ModelPolicy, target: float = 0.7, name: str = "reactive-hybrid") -> None:
        """Create the controller; raises ValueError unless 0 < target <= 1."""
        super().__init__(policy=policy, target=target, serverless=True, name=name)


def reactive_hybrid(*, policy: ModelPolicy, target: float = 0.7) -> ReactiveHybrid:
    """Return a :class:`ReactiveHybrid` with the HPA's default 70 % target."""
    return ReactiveHybrid(policy=policy, target=target)


class Keda:
    """KEDA with a Kafka trigger: lag per replica, polled every 30 s, HPA underneath, scale to zero.

    Lag is the messages not yet committed: ``queue_length + in_flight`` (a consumer commits when a
    request completes). KEDA's Kafka default lagThreshold is 10 messages per replica, tuned for
    consumers that handle one message at a time; a vLLM replica serves ``slots`` at once, so the
    default here is 70 % of the slots per replica (``lag_threshold=None``), like the HPA target.
    Activation when lag > 0 (activationLagThreshold 0) brings the first replica; scaling from one
    replica to zero waits ``cooldownPeriod`` (300 s) after the last poll that saw lag.
    """

    interval_seconds: float = KEDA_POLLING_SECONDS  # KEDA's polling interval (30 s)

    def __init__(
        self, *, policy: ModelPolicy, lag_threshold: float | None = None, name: str = "keda"
    ) -> None:
        """Create the controller; raises ValueError for a non-positive lag threshold."""
        if lag_threshold is not None and lag_threshold <= 0:
            raise ValueError(f"lag_threshold must be > 0, got {lag_threshold}")
        self.name = name  # the report name
        self._lag_threshold = lag_threshold
        self._core = _HpaCore(policy=policy, min_replicas=0)
        self._last_active = -math.inf

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the replica count after this poll."""
        threshold = self._lag_threshold or KPA_TARGET_UTILISATION * max(obs.slots_per_replica, 1)
        lag = obs.queue_length + obs.in_flight
        if lag > 0:
            self._last_active = obs.now
        active = obs.now - self._last_active < KEDA_COOLDOWN_SECONDS
        if not active:
            self._core.current = _clamp(0, self._core.policy)
            self._core.recommendations.clear()
            return CapacityTarget(
                replicas=self._core.current, reason="keda: idle past cooldown, scale to zero"
            )
        desired = max(1, math.ceil(lag / threshold - 1e-9))
        current = self._core.current
        if current > 0 and abs(lag / threshold / current - 1.0) <= HPA_TOLERANCE:
            desired = current
        replicas, reason = self._core.step(now=obs.now, desired=desired)
        return CapacityTarget(replicas=max(replicas, 1), reason=f"keda lag {lag}: " + reason)


class KnativeKpa:
    """Knative's KPA on concurrency (``in_flight + queue_length``), no serverless.

    Per-replica target: 70 % of the slots (containerConcurrency = slots, target utilisation 70 %).
    Every 2 s tick it averages concurrency over the 60 s stable and 6 s panic windows; it panics
    when the panic-window demand reaches 200 % of the ready replicas and then never scales down
    until 60 s pass without that condition. Scale-up at most 1000x, scale-down at most 2x per tick;
    to zero only after 30 s (the scale-to-zero grace period) with a desired count of zero.
    """

    interval_seconds: float = KPA_TICK_SECONDS  # the KPA tick (2 s)

    def __init__(self, *, policy: ModelPolicy, name: str = "knative-kpa") -> None:
        """Create the controller."""
        self.name = name  # the report name
        self._policy = policy
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._panic_since: float | None = None
        self._last_panic_signal = -math.inf
        self._zero_since: float | None = None
        self._current = _clamp(0, policy)

    @property
    def panicking(self) -> bool:
        """Return whether the autoscaler is in panic mode after its last tick."""
        return self._panic_since is not None

    def _average(self, now: float, window: float) -> float:
        values = [c for t, c in self._samples if t > now - window]
        return sum(values) / len(values) if values else 0.0

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the replica count after this tick."""
        now = obs.now
        self._samples.append((now, float(obs.in_flight + obs.queue_length)))
        while self._samples and self._samples[0][0] <= now - KPA_STABLE_WINDOW_SECONDS:
            self._samples.popleft()
        target = KPA_TARGET_UTILISATION * max(obs.slots_per_replica, 1)
        stable = math.ceil(self._average(now, KPA_STABLE_WINDOW_SECONDS) / target - 1e-9)
        panic = math.ceil(self._average(now, KPA_PANIC_WINDOW_SECONDS) / target - 1e-9)
        ready = max(obs.replicas_ready, 1)
        if panic / ready >= KPA_PANIC_THRESHOLD:
            self._last_panic_signal = now
            if self._panic_since is None:
                self._panic_since = now
        elif self._panic_since is not None and now - self._last_panic_signal >= KPA_STABLE_WINDOW_SECONDS:
            self._panic_since = None
        if self._panic_since is not None:
            desired = max(panic, self._current)
            mode = "panic"
        else:
            desired = stable
            mode = "stable"
        up_limit = math.ceil(KPA_MAX_SCALE_UP_RATE * ready)
        down_limit = math.floor(ready / KPA_MAX_SCALE_DOWN_RATE)
        desired = min(desired, up_limit)
        if 0 < desired < down_limit:
            desired = down_limit
        if desired == 0 and self._current > 0:
            if self._zero_since is None:
                self._zero_since = now
            if now - self._zero_since < KPA_SCALE_TO_ZERO_GRACE_SECONDS:
                desired = max(1, min(self._current, down_limit))
        else:
            self._zero_since = None
        self._current = _clamp(desired, self._policy)
        return CapacityTarget(replicas=self._current, reason=f"kpa {mode}: {self._current}")


BASELINES: dict[str, Callable[[ModelPolicy, Workload | RateWorkload], Controller]] = {
    "static-peak": lambda policy, workload: StaticPeak.for_workload(workload, policy=policy),
    "hpa": lambda policy, workload: Hpa(policy=policy),
    "keda": lambda policy, workload: Keda(policy=policy),
    "knative-kpa": lambda policy, workload: KnativeKpa(policy=policy),
    "serverless-only": lambda policy, workload: ServerlessOnly(),
    "reactive-hybrid": lambda policy, workload: ReactiveHybrid(policy=policy),
    "dynamo-planner": lambda policy, workload: DynamoPlanner(policy=policy),
    "aws-predictive": lambda policy, workload: AwsPredictive(policy=policy),
}
"""Every baseline by report name: a factory taking the policy and the workload (only static-peak uses it)."""
