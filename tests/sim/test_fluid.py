"""Fluid model: agreement with the per-request model on steady loads, conservation, errors, helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.policy import Bounds, LeadTimes, ModelPolicy
from scaler.sim.cluster import GIVE_UP_SECONDS
from scaler.sim.engine import simulate
from scaler.sim.fluid import bin_sums, hist_percentiles
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.workload import RateWorkload, Workload


@dataclasses.dataclass
class Fixed:
    replicas: int
    serverless: bool = False
    name: str = "fixed"
    interval_seconds: float = 10.0

    def decide(self, obs: TickObservation) -> CapacityTarget:
        return CapacityTarget(replicas=self.replicas, serverless_enabled=self.serverless)


def poisson_pair(*, rate: float, duration: int, seed: int) -> tuple[Workload, RateWorkload]:
    """Return the same Poisson load as individual requests and as per-second counts."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration))
    arrivals = np.sort(rng.uniform(0.0, duration, n))
    prompt = rng.integers(200, 2000, n)
    output = rng.integers(50, 400, n)
    requests = Workload(
        name="poisson",
        arrivals=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        duration=float(duration),
    )
    counts = np.bincount(arrivals.astype(np.int64), minlength=duration).astype(np.float64)
    rates = RateWorkload(
        name="poisson",
        counts=counts,
        mean_prompt_tokens=float(prompt.mean()),
        mean_output_tokens=float(output.mean()),
    )
    return requests, rates


@pytest.mark.parametrize(
    ("warm", "replicas", "serverless"),
    [
        (4, 4, False),  # enough replicas, warm from the start
        (4, 3, True),  # steady overflow to serverless
        (0, 4, True),  # cold start covered by serverless, then replicas
    ],
)
def test_fluid_agrees_with_per_request_on_a_steady_load(warm: int, replicas: int, serverless: bool) -> None:
    # 20 req/s of ~11.6 s slot holds on 64-slot instances: ~3.6 instances busy on average
    policy = ModelPolicy(name="m", bounds=Bounds(min_replicas=warm))
    per_request, fluid = (
        simulate(w, Fixed(replicas, serverless), policy=policy).summary
        for w in poisson_pair(rate=20.0, duration=1800, seed=7)
    )
    assert fluid.model == "fluid"
    assert per_request.model == "per-request"
    assert fluid.requests == per_request.requests
    assert fluid.cost.total == pytest.approx(per_request.cost.total, rel=0.03)
    assert fluid.slo_attainment == pytest.approx(per_request.slo_attainment, abs=0.01)
    assert fluid.serverless_share == pytest.approx(per_request.serverless_share, abs=0.02)
    paid_hours = per_request.cost.replicas / policy.prices.replica_per_hour
    # the fluid has no variance within a second, so it packs replicas a little tighter
    assert fluid.idle_replica_hours == pytest.approx(per_request.idle_replica_hours, abs=0.03 * paid_hours)


def test_fluid_without_any_capacity_drops_everything() -> None:
    w = RateWorkload(name="r", counts=np.full(300, 2.0), mean_prompt_tokens=100.0, mean_output_tokens=10.0)
    summary = simulate(w, Fixed(0), policy=ModelPolicy(name="m")).summary
    assert summary.dropped == 600
    assert summary.slo_attainment == 0.0
    assert summary.cost.total == 0.0


def test_fluid_queue_waits_then_gives_up() -> None:
    # one warm replica of 64 slots; a burst of 2000 at t=0 with 64 s holds: 64 start at once, about one
    # slot frees per second after that, and whoever is still waiting after 60 s drops
    policy = ModelPolicy(
        name="m", bounds=Bounds(min_replicas=1), lead_times=LeadTimes(cold_start_seconds=300.0)
    )
    counts = np.zeros(600)
    counts[0] = 2000.0
    w = RateWorkload(name="burst", counts=counts, mean_prompt_tokens=0.0, mean_output_tokens=2500.0)
    summary = simulate(w, Fixed(1), policy=policy).summary
    assert 64 + 40 <= summary.served_kubernetes <= 64 + 64
    assert summary.served_kubernetes + summary.dropped == pytest.approx(2000, abs=1)
    assert summary.wait_p50 == 0.0
    assert 30.0 <= summary.wait_p95 <= GIVE_UP_SECONDS


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.floats(0.0, 50.0), min_size=1, max_size=400),
    replicas=st.integers(0, 3),
    serverless=st.booleans(),
    quota=st.integers(0, 3),
)
def test_fluid_conserves_requests(counts: list[float], replicas: int, serverless: bool, quota: int) -> None:
    policy = ModelPolicy(name="m", bounds=Bounds(min_replicas=1, serverless_quota=quota))
    w = RateWorkload(name="h", counts=np.asarray(counts), mean_prompt_tokens=800.0, mean_output_tokens=200.0)
    summary = simulate(w, Fixed(replicas, serverless), policy=policy).summary
    total = summary.served_kubernetes + summary.served_serverless + summary.dropped
    assert total == pytest.approx(sum(counts), abs=2.0)
    assert 0.0 <= summary.slo_attainment <= 1.0 + 1e-9
    if not serverless or quota == 0:
        assert summary.served_serverless == 0


@pytest.mark.parametrize("counts", [[1.0, -1.0], [np.nan, 1.0], [np.inf]])
def test_bad_counts_are_a_clear_error(counts: list[float]) -> None:
    w = RateWorkload(name="bad", counts=np.asarray(counts), mean_prompt_tokens=1.0, mean_output_tokens=1.0)
    with pytest.raises(ValueError, match="workload 'bad': counts must be finite, non-negative"):
        simulate(w, Fixed(1), policy=ModelPolicy(name="m"))


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ([0.0, 2.0, 4.0], [3.0, 7.0]),
        ([0.0, 1.5, 4.0], [1.0 + 1.0, 1.0 + 3.0 + 4.0]),  # half of second 1 falls in each bin
        ([0.0, 4.0], [10.0]),
    ],
)
def test_bin_sums(edges: list[float], expected: list[float]) -> None:
    assert bin_sums(np.array([1.0, 2.0, 3.0, 4.0]), np.asarray(edges)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("hist", "expected"),
    [
        ([100.0, 0.0, 0.0], (0.0, 0.0, 0.0)),
        ([50.0, 45.0, 5.0], (0.0, 0.25, 0.5)),
        ([0.0, 0.0, 1.0], (0.5, 0.5, 0.5)),
    ],
)
def test_hist_percentiles(hist: list[float], expected: tuple[float, float, float]) -> None:
    assert hist_percentiles(np.asarray(hist), 0.25) == pytest.approx(expected)


def test_hist_percentiles_of_nothing_are_nan() -> None:
    assert all(np.isnan(v) for v in hist_percentiles(np.zeros(4), 0.25))
