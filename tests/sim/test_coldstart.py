"""Drawn cold starts in the simulator, the pods it reports, standby priced as the mechanism, and the
daemon's controller learning the cold starts the simulated cluster draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaler.core.policy import ModelPolicy
from scaler.sim.coldstart import ColdStarts
from scaler.sim.engine import simulate
from scaler.sim.fleet import Fleet
from scaler.sim.protocol import CapacityTarget
from scaler.sim.spillway import SpillwayController
from scaler.sim.workload import Workload
from tests.sim.test_cluster import Scripted, make_policy, workload


def test_the_default_reads_published_figures_as_p5_p95_and_is_seeded() -> None:
    draw = ColdStarts().sampler()
    values = np.array([draw() for _ in range(20_000)])
    assert np.percentile(values, 5) == pytest.approx(90.0, rel=0.05)
    assert np.percentile(values, 95) == pytest.approx(480.0, rel=0.05)
    again = ColdStarts().sampler()
    assert [again() for _ in range(5)] == list(values[:5])  # seeded: the same run twice
    other = ColdStarts(seed=1).sampler()
    assert [other() for _ in range(5)] != list(values[:5])
    wide = ColdStarts.between(60.0, 900.0).sampler()
    assert all(20.0 <= wide() <= 3600.0 for _ in range(1000))


@pytest.mark.parametrize("bad", [{"median_seconds": 0.0}, {"sigma": -1.0}, {"low": 10.0, "high": 5.0}])
def test_a_distribution_that_cannot_be_drawn_is_a_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="cold starts"):
        ColdStarts(**bad)


def test_pods_keep_their_creation_and_ready_time_through_promotion() -> None:
    draws = iter([40.0, 70.0, 100.0])
    lead = make_policy().lead_times
    fleet = Fleet(lead=lead, warm=1, drain_end=lambda rid, now: now, cold=lambda: next(draws))
    fleet.apply(replicas=2, standby=1, now=10.0)  # one cold start (40 s), one standby (70 s)
    assert sorted(fleet.pods()) == [(1, 10.0, 50.0), (2, 10.0, 80.0)]  # the warm replica is no pod seen
    fleet.apply(replicas=3, standby=0, now=90.0)  # the ready standby is promoted: the same pod
    assert sorted(fleet.pods()) == [(1, 10.0, 50.0), (2, 10.0, 80.0)]
    assert fleet.counts(now=96.0) == (3, 0, 0, 0)  # promoted in 5 s, not a new cold start


def test_standby_is_billed_at_its_own_price() -> None:
    base = make_policy(cold=100.0, promotion=5.0)
    policy = base.model_copy(update={"prices": base.prices.model_copy(update={"standby_per_hour": 1.8})})
    w = workload([201.0], duration=400.0)
    script = Scripted(
        [(0.0, CapacityTarget(replicas=0, standby=1)), (200.0, CapacityTarget(replicas=1, standby=0))]
    )
    result = simulate(w, script, policy=policy).summary
    assert result.cost.standby == pytest.approx(200 * 0.0005)  # half the replica's 0.001 per second


def _steady(rate: float, seconds: int) -> Workload:
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0.0, seconds, int(rate * seconds)))
    n = arrivals.shape[0]
    return Workload(
        name="steady-rise",
        arrivals=arrivals * np.sqrt(arrivals / seconds),  # load rising over the run: replicas start
        prompt_tokens=np.full(n, 1000, dtype=np.int64),
        output_tokens=np.full(n, 200, dtype=np.int64),
        duration=float(seconds),
    )


def test_the_controller_learns_the_cold_starts_the_cluster_draws() -> None:
    policy = ModelPolicy.model_validate(
        {"name": "m", "lead_times": {"cold_start_seconds": 300}, "bounds": {"serverless_quota": 2}}
    )
    w = _steady(rate=30.0, seconds=5400)
    controller = SpillwayController(policy, w, record=True)
    simulate(w, controller, policy=policy, cold_starts=ColdStarts(median_seconds=120.0, sigma=0.0))
    assert controller.recorded is not None
    first = controller.recorded[0].step.lead_times[0]
    last = controller.recorded[-1].step.lead_times[0]
    assert (first.source, first.seconds) == ("configured", 300.0)
    assert last.source == "learned"
    assert last.observations >= 3
    assert math.isclose(last.seconds, 120.0)
    window = controller.recorded[-1].step.decision.reason
    assert "[t+120s," in window  # the decision leads by the learned cold start
