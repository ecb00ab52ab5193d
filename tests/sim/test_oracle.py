"""Hindsight oracle: hand-computed schedules, cold starts, never dearer than an SLO-meeting fixed policy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.policy import Bounds, LeadTimes, ModelPolicy, Prices, Replica, Slo
from scaler.sim import synthetic as scenarios
from scaler.sim.engine import simulate
from scaler.sim.oracle import hindsight_oracle, requirement, shave_peaks
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.workload import RateWorkload, Workload

C_K = 0.001  # replica price per second (3.6 per hour)
C_S = 0.01  # serverless price per busy instance-second


@dataclasses.dataclass
class Fixed:
    replicas: int
    serverless: bool
    name: str = "fixed"
    interval_seconds: float = 10.0

    def decide(self, obs: TickObservation) -> CapacityTarget:
        return CapacityTarget(replicas=self.replicas, serverless_enabled=self.serverless)


EXACT = 1.0 - 1e-9  # an attainment goal that leaves (next to) no miss allowance


def make_policy(
    *, concurrency: int = 1, cold: float = 30.0, warm: int = 0, quota: int = 50, attainment: float = EXACT
) -> ModelPolicy:
    """One slot per instance by default; a request of P=1000, O=100 holds it 2 s."""
    return ModelPolicy(
        name="m",
        slo=Slo(ttft_seconds=2.0, attainment=attainment),
        replica=Replica(
            prefill_tokens_per_second=1000.0, decode_tokens_per_second=100.0, max_concurrency=concurrency
        ),
        lead_times=LeadTimes(cold_start_seconds=cold, serverless_cold_start_seconds=0.5),
        prices=Prices(
            replica_per_hour=C_K * 3600, serverless_per_gpu_second=C_S, serverless_per_million_tokens=0.0
        ),
        bounds=Bounds(min_replicas=warm, max_replicas=100, serverless_quota=quota),
    )


def back_to_back(*stretches: tuple[float, float], duration: float) -> Workload:
    """Requests of 2 s, one after another, keeping one slot busy over each ``[start, end)`` stretch."""
    arrivals = np.concatenate([np.arange(a, b, 2.0) for a, b in stretches])
    n = arrivals.shape[0]
    return Workload(
        name="stretches",
        arrivals=arrivals,
        prompt_tokens=np.full(n, 1000, dtype=np.int64),
        output_tokens=np.full(n, 100, dtype=np.int64),
        duration=duration,
    )


def test_requirement_counts_busy_slot_seconds_per_second() -> None:
    # one request busy over [0.5, 2.5), two over [1, 2)
    r = requirement(np.array([0.5, 1.0]), np.array([2.0, 1.0]), np.array([1.0, 2.0]), seconds=3)
    assert r == pytest.approx([0.5, 3.0, 0.5])


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (0.0, [1.0, 5.0, 2.0]),
        (2.0, [1.0, 3.0, 2.0]),  # the top 2 units of the peak
        (4.0, [1.0, 1.5, 1.5]),  # 3.5 from the peak and 0.5 from its neighbour
        (100.0, [0.0, 0.0, 0.0]),
    ],
)
def test_shave_peaks_takes_the_budget_from_the_top(budget: float, expected: list[float]) -> None:
    assert shave_peaks(np.array([1.0, 5.0, 2.0]), budget=budget) == pytest.approx(expected, abs=1e-9)


def test_miss_allowance_lowers_the_bound() -> None:
    # a 4-slot spike for 10 s over a steady single slot: with a 10% allowance the spike is left to miss
    w = back_to_back((0.0, 600.0), duration=600.0)
    spike = np.arange(300.0, 310.0, 2.0)
    arrivals = np.sort(np.concatenate([w.arrivals, np.repeat(spike, 3)]))
    n = arrivals.shape[0]
    spiky = dataclasses.replace(
        w, arrivals=arrivals, prompt_tokens=np.full(n, 1000), output_tokens=np.full(n, 100)
    )
    strict = hindsight_oracle(spiky, policy=make_policy(warm=1)).summary
    lenient = hindsight_oracle(spiky, policy=make_policy(warm=1, attainment=0.9)).summary
    # strict: three more levels for 10 s, each a replica (30 s cold start + 10 s) rather than serverless
    assert strict.cost.total == pytest.approx(600 * C_K + 3 * (30 + 10) * C_K)
    assert lenient.cost.total == pytest.approx(600 * C_K)
    assert lenient.slo_attainment == 0.9


def test_a_lone_request_goes_to_serverless() -> None:
    summary = hindsight_oracle(back_to_back((10.0, 12.0), duration=600.0), policy=make_policy()).summary
    assert summary.cost.total == pytest.approx(2.0 * C_S)
    assert summary.cost.replicas == 0.0
    assert (summary.served_serverless, summary.served_kubernetes) == (1, 0)


@pytest.mark.parametrize(
    ("warm", "expected"),
    [
        (1, 600 * C_K),  # a warm replica serves the whole run
        (0, 30 * C_S + 600 * C_K),  # serverless until a replica started at t=0 is ready at t=30
    ],
)
def test_steady_full_load_uses_a_replica_after_its_cold_start(warm: int, expected: float) -> None:
    result = hindsight_oracle(back_to_back((0.0, 600.0), duration=600.0), policy=make_policy(warm=warm))
    assert result.summary.cost.total == pytest.approx(expected)
    if warm == 0:
        assert result.timeline.replicas_ready[0] == pytest.approx(30.0 / 60.0)  # ready from t=30 only


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (20.0, (100 + 20 + 100) * C_K),  # a 20 s gap is cheaper to sit through than a 30 s cold start
        (100.0, (100 + 30 + 100) * C_K),  # a 100 s gap: release, then pay a new cold start
    ],
)
def test_idle_gap_keep_or_release(gap: float, expected: float) -> None:
    w = back_to_back((0.0, 100.0), (100.0 + gap, 200.0 + gap), duration=200.0 + gap)
    summary = hindsight_oracle(w, policy=make_policy(warm=1)).summary
    assert summary.cost.total == pytest.approx(expected)
    assert summary.cost.serverless_busy == 0.0


def test_summary_reports_the_goal_and_zero_wait() -> None:
    summary = hindsight_oracle(back_to_back((0.0, 60.0), duration=60.0), policy=make_policy()).summary
    assert summary.policy == "oracle"
    assert summary.slo_attainment == EXACT
    assert (summary.wait_p50, summary.wait_p99) == (0.0, 0.0)
    assert summary.ttft_p50 == pytest.approx(1.0)  # the prefill of 1000 tokens at 1000 tokens/s
    assert "lower bound" in summary.note


def test_rate_workload_gives_the_same_bound_as_its_requests() -> None:
    policy = make_policy(concurrency=8, cold=60.0, warm=1)
    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, 1200).astype(np.float64)
    rates = RateWorkload(name="r", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=100.0)
    arrivals = np.repeat(np.arange(1200.0), counts.astype(np.int64)) + 0.5
    n = arrivals.shape[0]
    requests = Workload(
        name="r",
        arrivals=arrivals,
        prompt_tokens=np.full(n, 1000, dtype=np.int64),
        output_tokens=np.full(n, 100, dtype=np.int64),
        duration=1200.0,
    )
    fluid = hindsight_oracle(rates, policy=policy).summary
    per_request = hindsight_oracle(requests, policy=policy).summary
    assert fluid.model == "fluid"
    assert fluid.cost.total == pytest.approx(per_request.cost.total)


def synthetic(shape: str, *, seed: int, duration: int = 1800) -> Workload:
    """Poisson arrivals with a steady, on/off or ramping rate; requests hold a slot ~2-6 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(duration, dtype=np.float64)
    if shape == "steady":
        rate = np.full(duration, 2.0)
    elif shape == "bursts":
        rate = np.where((t // 300) % 2 == 0, 4.0, 0.1)
    else:
        rate = 0.2 + 4.0 * t / duration
    counts = rng.poisson(rate)
    arrivals = np.sort(np.repeat(t, counts) + rng.uniform(0.0, 1.0, int(counts.sum())))
    n = arrivals.shape[0]
    return Workload(
        name=shape,
        arrivals=arrivals,
        prompt_tokens=rng.integers(200, 1500, n),
        output_tokens=rng.integers(50, 300, n),
        duration=float(duration),
    )


def check_oracle_is_cheapest(w: Workload, *, cold: float) -> int:
    """Assert the oracle costs no more than any fixed policy meeting the SLO; return how many did."""
    concurrency = 4
    hold = concurrency * (w.prompt_tokens / 1000.0 + w.output_tokens / 100.0)
    busy = requirement(w.arrivals, hold, np.ones(w.requests), seconds=math.ceil(w.duration))
    peak = math.ceil(float(busy.max()) / concurrency)  # static peak: enough replicas for the busiest second
    meeting = 0
    for replicas in range(peak + 3):
        policy = make_policy(concurrency=concurrency, cold=cold, warm=replicas, attainment=0.99)
        oracle = hindsight_oracle(w, policy=policy).summary.cost.total
        for serverless in (False, True):
            summary = simulate(w, Fixed(replicas, serverless), policy=policy).summary
            if summary.slo_attainment >= policy.slo.attainment:
                meeting += 1
                assert oracle <= summary.cost.total * (1 + 1e-9), (replicas, serverless)
    return meeting


@pytest.mark.parametrize("shape", ["steady", "bursts", "ramp"])
def test_oracle_is_never_dearer_than_a_fixed_policy_that_meets_the_slo(shape: str) -> None:
    assert check_oracle_is_cheapest(synthetic(shape, seed=11), cold=120.0) >= 3


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from(["steady", "bursts", "ramp"]),
    seed=st.integers(0, 10_000),
    cold=st.sampled_from([0.0, 60.0, 300.0]),
)
def test_oracle_bound_holds_on_random_loads(shape: str, seed: int, cold: float) -> None:
    assert check_oracle_is_cheapest(synthetic(shape, seed=seed, duration=900), cold=cold) >= 1


def test_a_warm_start_never_makes_the_oracle_dearer() -> None:
    policy = ModelPolicy.model_validate({"name": "m"})
    work = scenarios.synthetic("flash-crowd", seed=1)
    cold = hindsight_oracle(work, policy=policy).summary.cost.total
    warm = hindsight_oracle(work, policy=policy, initial_replicas=2).summary.cost.total
    assert warm <= cold
    assert warm < cold or cold == 0.0  # two replicas free at t=0 save their cold start
