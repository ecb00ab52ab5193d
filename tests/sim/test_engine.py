"""Simulation engine: tick schedule, observations, scaling actions, progress, errors, summary and timeline."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from scaler.core.policy import Bounds, LeadTimes, ModelPolicy, Replica, Slo
from scaler.sim.engine import simulate
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.workload import RateWorkload, Workload


@dataclasses.dataclass
class Recorder:
    """Asks for a scripted sequence of targets (one per tick, the last repeats) and keeps what it saw."""

    targets: list[CapacityTarget]
    interval_seconds: float = 10.0
    name: str = "recorder"
    seen: list[TickObservation] = dataclasses.field(default_factory=list)

    def decide(self, obs: TickObservation) -> CapacityTarget:
        self.seen.append(obs)
        return self.targets[min(len(self.seen) - 1, len(self.targets) - 1)]


POLICY = ModelPolicy(
    name="m",
    slo=Slo(ttft_seconds=2.0),
    replica=Replica(prefill_tokens_per_second=1000.0, decode_tokens_per_second=100.0, max_concurrency=2),
    lead_times=LeadTimes(cold_start_seconds=20.0, serverless_cold_start_seconds=5.0),
    bounds=Bounds(min_replicas=1, max_replicas=10, serverless_quota=2),
)


def steady(duration: float = 120.0, rate: float = 0.5) -> Workload:
    n = int(duration * rate)
    arrivals = np.arange(n, dtype=np.float64) / rate
    return Workload(
        name="steady",
        arrivals=arrivals,
        prompt_tokens=np.full(n, 500, dtype=np.int64),
        output_tokens=np.full(n, 50, dtype=np.int64),
        duration=duration,
    )


def test_controller_is_called_every_interval_from_zero_with_zero_counts_first() -> None:
    ctl = Recorder([CapacityTarget(replicas=1)])
    simulate(steady(), ctl, policy=POLICY)
    assert [o.now for o in ctl.seen] == pytest.approx(np.arange(0.0, 120.0, 10.0))
    first = ctl.seen[0]
    assert (first.arrivals, first.prompt_tokens, first.output_tokens) == (0, 0, 0)
    assert first.replicas_ready == POLICY.bounds.min_replicas  # warm start
    assert first.slots_per_replica == 2
    # one request every 2 s: 5 per 10 s interval, each with 500 prompt tokens
    assert [o.arrivals for o in ctl.seen[1:]] == [5] * 11
    assert all(o.prompt_tokens == 2500 for o in ctl.seen[1:])
    # each request holds a slot 2 * (0.5 + 0.5) = 2 s, one arrives every 2 s: one slot busy on average
    assert ctl.seen[5].busy_slots == pytest.approx(1.0, abs=0.05)


def test_observation_shows_replicas_starting_then_ready() -> None:
    ctl = Recorder([CapacityTarget(replicas=3)])
    simulate(steady(), ctl, policy=POLICY)
    by_time = {o.now: o for o in ctl.seen}
    assert (by_time[10.0].replicas_ready, by_time[10.0].replicas_starting) == (1, 2)
    assert (by_time[20.0].replicas_ready, by_time[20.0].replicas_starting) == (3, 0)


def test_scaling_actions_count_target_changes() -> None:
    targets = [
        CapacityTarget(replicas=1),  # same as the warm start: no action
        CapacityTarget(replicas=2),
        CapacityTarget(replicas=2, serverless_enabled=True),  # routing only: no action
        CapacityTarget(replicas=2, standby=1),
        CapacityTarget(replicas=2, standby=1, serverless_provisioned=1),
        CapacityTarget(replicas=1),
    ]
    result = simulate(steady(), Recorder(targets), policy=POLICY)
    assert result.summary.scaling_actions == 4


def test_progress_rises_to_one() -> None:
    seen: list[float] = []
    simulate(
        steady(duration=95.0), Recorder([CapacityTarget(replicas=1)]), policy=POLICY, on_progress=seen.append
    )
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(1.0)
    assert len(seen) == math.ceil(95.0 / 10.0)


@pytest.mark.parametrize(
    ("target", "field"),
    [(CapacityTarget(replicas=-1), "replicas"), (CapacityTarget(replicas=1, standby=-2), "standby")],
)
def test_negative_target_is_a_clear_error(target: CapacityTarget, field: str) -> None:
    with pytest.raises(ValueError, match=rf"controller 'recorder' at t=0s: {field} must be"):
        simulate(steady(), Recorder([target]), policy=POLICY)


def test_bad_timeline_step_and_interval_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="timeline_step must be > 0"):
        simulate(steady(), Recorder([CapacityTarget(replicas=1)]), policy=POLICY, timeline_step=0.0)
    with pytest.raises(ValueError, match="interval_seconds must be > 0"):
        simulate(steady(), Recorder([CapacityTarget(replicas=1)], interval_seconds=0.0), policy=POLICY)


def test_timeline_adds_up_to_the_summary() -> None:
    w = steady(duration=150.0)
    result = simulate(w, Recorder([CapacityTarget(replicas=0)]), policy=POLICY, timeline_step=60.0)
    tl = result.timeline
    widths = np.diff(np.append(tl.t, 150.0))
    assert tl.t == pytest.approx([0.0, 60.0, 120.0])
    assert float((tl.arrival_rate * widths).sum()) == pytest.approx(w.requests)
    missed = round((1.0 - result.summary.slo_attainment) * w.requests)
    assert float(tl.slo_misses.sum()) == pytest.approx(missed)
    # the warm replica was released at t=0: no replica in the timeline, and nothing served by one
    assert tl.replicas_ready == pytest.approx(np.zeros(3))
    assert result.summary.served_kubernetes == 0
    assert result.summary.dropped == w.requests  # no serverless enabled, no replica: everything gives up
    assert result.summary.slo_attainment == 0.0


def test_rate_workload_runs_on_the_fluid_model() -> None:
    w = RateWorkload(name="r", counts=np.full(120, 0.5), mean_prompt_tokens=500.0, mean_output_tokens=50.0)
    result = simulate(w, Recorder([CapacityTarget(replicas=1)]), policy=POLICY)
    assert result.summary.model == "fluid"
    assert result.summary.policy == "recorder"
    assert result.summary.workload == "r"
    assert result.summary.served_kubernetes == 60
    assert result.summary.cost.replicas == pytest.approx(120 * POLICY.prices.replica_per_hour / 3600)


def test_idle_replica_hours_are_paid_minus_busy() -> None:
    # one warm replica (2 slots) for 120 s, one slot busy on average: half of it idle
    result = simulate(steady(), Recorder([CapacityTarget(replicas=1)]), policy=POLICY)
    assert result.summary.idle_replica_hours == pytest.approx(60.0 / 3600.0, rel=0.05)


def test_initial_replicas_start_warm_and_serve_from_the_first_request() -> None:
    # A trace cut from a running service: two replicas already ready at t=0 serve 1.5 req/s at once,
    # where a cold start leaves the first 20 s to serverless.
    policy = POLICY.model_copy(update={"bounds": Bounds(min_replicas=0, max_replicas=10, serverless_quota=2)})
    work = steady(duration=120.0, rate=1.5)
    keep_two = [CapacityTarget(replicas=2, serverless_enabled=True)]
    warm = simulate(work, Recorder(keep_two), policy=policy, initial_replicas=2).summary
    cold = simulate(work, Recorder(keep_two), policy=policy).summary
    assert (warm.served_serverless, warm.dropped, warm.wait_p99) == (0, 0, 0.0)
    assert warm.scaling_actions == 0  # the target equals the warm start: nothing changed
    assert cold.served_serverless > 0
    assert warm.cost.replicas == pytest.approx(2 * 120.0 / 3600.0 * policy.prices.replica_per_hour)


def test_initial_replicas_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="initial_replicas must be >= 0, got -1"):
        simulate(steady(), Recorder([CapacityTarget(replicas=1)]), policy=POLICY, initial_replicas=-1)
