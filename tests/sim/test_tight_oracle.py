"""Tight oracle: the MILP against brute force on tiny horizons, and both bounds against the cluster model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scaler.core.policy import Bounds, LeadTimes, ModelPolicy, Prices, Replica, Slo
from scaler.sim import synthetic
from scaler.sim.engine import simulate
from scaler.sim.oracle import requirement
from scaler.sim.tight_oracle import (
    MIP_REL_GAP,
    Playback,
    Problem,
    Solution,
    build_problem,
    playback,
    solve,
    tight_oracle,
)
from scaler.sim.workload import RateWorkload, Workload

C_K = 0.001  # replica price per second
C_S = 0.01  # serverless price per busy instance-second


def make_policy(
    *,
    cold: float = 10.0,
    warm: int = 0,
    max_replicas: int = 2,
    quota: int = 1,
    attainment: float = 1.0 - 1e-9,
    sv_cold: float = 0.5,
    c_prov_hour: float = 3.6,
    queue_wait: float | None = None,
) -> ModelPolicy:
    """One slot per instance; a request of P=1000, O=100 holds it 2 s and needs 1 s of prefill."""
    return ModelPolicy(
        name="m",
        slo=Slo(
            ttft_seconds=None if queue_wait is not None else 2.0,
            queue_wait_seconds=queue_wait,
            attainment=attainment,
        ),
        replica=Replica(prefill_tokens_per_second=1000.0, decode_tokens_per_second=100.0, max_concurrency=1),
        lead_times=LeadTimes(cold_start_seconds=cold, serverless_cold_start_seconds=sv_cold),
        prices=Prices(
            replica_per_hour=C_K * 3600,
            serverless_per_gpu_second=C_S,
            serverless_per_million_tokens=0.0,
            serverless_provisioned_per_hour=c_prov_hour,
        ),
        bounds=Bounds(min_replicas=warm, max_replicas=max_replicas, serverless_quota=quota),
    )


def requests_at(arrivals: list[float], *, duration: float) -> Workload:
    """Requests of 2 s each (P=1000, O=100 under :func:`make_policy`) arriving at ``arrivals``."""
    arr = np.sort(np.asarray(arrivals, dtype=np.float64))
    n = arr.shape[0]
    return Workload(
        name="tiny",
        arrivals=arr,
        prompt_tokens=np.full(n, 1000, dtype=np.int64),
        output_tokens=np.full(n, 100, dtype=np.int64),
        duration=duration,
    )


# ---- brute force on the coarse model ----------------------------------------------------------------


def late_at(pb: Problem, t: int, x: float) -> float:
    """Return the late work of step ``t`` with capacity ``x`` (the convex table, extended linearly)."""
    xs, ys = pb.knots[t], pb.late[t]
    if x >= xs[-1]:
        return 0.0
    if x < xs[0]:
        return float(ys[0] + (ys[1] - ys[0]) * (x - xs[0]))
    return float(np.interp(x, xs, ys))


def schedule_cost(
    pb: Problem, a: tuple[int, ...], u: tuple[int, ...], p: tuple[int, ...], w: tuple[int, ...]
) -> float:
    """Return the cheapest cost of one whole schedule (inf if it breaks a constraint or the budget).

    Replicas take all they can; the miss budget is spent where a late request saves the most work
    (fractional knapsack over the steps, fewest requests per instance-second first).
    """
    n, lead = pb.steps, pb.lead_steps
    prev = pb.warm
    for t in range(n):
        arriving = u[t - lead] if t - lead >= 0 else 0
        if a[t] > prev + arriving:
            return math.inf
        in_service = a[t] + sum(u[max(0, t - lead + 1) : t + 1])
        if not pb.min_replicas <= in_service <= pb.max_replicas or p[t] + w[t] > pb.quota:
            return math.inf
        prev = a[t]
    starts = sum(max(0, w[t] - (w[t - 1] if t else 0)) for t in range(n))
    floor = [late_at(pb, t, a[t] + p[t] + w[t]) for t in range(n)]
    over_replicas = [late_at(pb, t, a[t]) for t in range(n)]
    budget = pb.budget - pb.miss_per_start * starts - sum(pb.per_work[t] * floor[t] for t in range(n))
    if budget < -1e-9:
        return math.inf
    serverless = [over_replicas[t] - floor[t] for t in range(n)]
    for t in sorted(range(n), key=lambda t: pb.per_work[t]):
        if pb.per_work[t] <= 0:
            serverless[t] = 0.0
            continue
        shift = min(serverless[t], budget / pb.per_work[t])
        serverless[t] -= shift
        budget -= shift * pb.per_work[t]
    cost = sum(
        pb.c_rep * (pb.widths[t] * a[t] + pb.cold * u[t]) + pb.c_prov * pb.widths[t] * p[t] for t in range(n)
    )
    return cost + pb.c_sv * sum(serverless)


def brute_force(pb: Problem) -> float:
    """Return the cheapest schedule's cost by enumerating every schedule within the bounds."""
    n = pb.steps
    reps = range(pb.max_replicas + 1)
    sv = range(pb.quota + 1)
    best = math.inf
    for a in itertools.product(reps, repeat=n):
        for u in itertools.product(reps, repeat=n):
            for p in itertools.product(sv, repeat=n):
                for w in itertools.product(sv, repeat=n):
                    best = min(best, schedule_cost(pb, a, u, p, w))
    return best


CASES = {
    # one slot busy all 30 s, nothing warm: serverless until a replica started at 0 is ready at 10 s
    "steady-cold": (requests_at([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28], duration=30), {}),
    # warm replica, busy, idle, busy: keeping it through the gap beats a new cold start
    "gap-warm": (requests_at([0, 2, 4, 6, 8, 20, 22, 24, 26, 28], duration=30), {"warm": 1}),
    # two slots busy at the end: the quota of one serverless instance forces a second replica
    "quota-binds": (requests_at([0, 2, 4, 6, 8, 20, 20, 22, 22, 24, 24, 26, 26, 28, 28], duration=30), {}),
    # provisioned serverless at a tenth of the replica price beats a replica for a short busy step
    "cheap-provisioned": (requests_at([10, 12, 14, 16, 18], duration=30), {"c_prov_hour": 0.36}),
    # a 10 % miss allowance lets the busiest requests go late instead of buying capacity
    "miss-allowance": (requests_at([0, 2, 4, 6, 8, 10, 20, 20, 22, 22], duration=30), {"attainment": 0.8}),
    # serverless cold start (5 s) longer than the wait slack: each on-demand start costs a late request
    "cold-serverless": (requests_at([10, 12, 14, 16, 18], duration=30), {"sv_cold": 5.0, "attainment": 0.7}),
}


def assert_within_the_gap(sol: Solution, best: float) -> None:
    """Check HiGHS's contract against the brute-force optimum: bound <= best <= cost <= best + gap."""
    slack = 1e-9 * (1.0 + best)  # float noise only
    assert sol.bound <= best + slack  # a proven lower bound is never above the optimum
    assert best - slack <= sol.cost <= best * (1.0 + MIP_REL_GAP) + slack  # e.g. 0.035 against 0.0349999


@pytest.mark.parametrize("case", list(CASES))
def test_milp_matches_brute_force_on_tiny_horizons(case: str) -> None:
    workload, overrides = CASES[case]
    policy = make_policy(**overrides)  # type: ignore[arg-type]
    pb = build_problem(workload, policy=policy, step=10.0, initial_replicas=overrides.get("warm"))  # type: ignore[arg-type]
    sol = solve(pb)
    assert sol.optimal
    assert_within_the_gap(sol, brute_force(pb))


def test_steady_cold_case_costs_what_a_hand_schedule_costs() -> None:
    workload, _ = CASES["steady-cold"]
    pb = build_problem(workload, policy=make_policy(), step=10.0)
    sol = solve(pb)
    # serverless for the first 10 s (0.1), one replica started at 0: 10 s cold + 20 s ready (0.03)
    assert sol.cost == pytest.approx(10 * C_S + 30 * C_K)
    assert list(sol.ready) == [0, 1, 1]
    assert list(sol.starts) == [1, 0, 0]


@given(
    arrivals=st.lists(st.floats(0.0, 29.0, allow_nan=False), min_size=1, max_size=8),
    attainment=st.sampled_from([1.0 - 1e-9, 0.9, 0.75]),
    cold=st.sampled_from([0.0, 10.0, 20.0]),
    prov=st.sampled_from([0.36, 3.6, 36.0]),
    sv_cold=st.sampled_from([0.5, 5.0]),
)
# HiGHS stopped at its gap here: 0.035 against the optimum 0.0349999 (a seed of a CI run found it)
@example(arrivals=[0.0, 2.00001, 1.0, 10.5, 10.0, 20.0], attainment=0.75, cold=0.0, prov=0.36, sv_cold=0.5)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_milp_matches_brute_force_on_random_tiny_workloads(
    arrivals: list[float], attainment: float, cold: float, prov: float, sv_cold: float
) -> None:
    policy = make_policy(cold=cold, attainment=attainment, c_prov_hour=prov, sv_cold=sv_cold)
    pb = build_problem(requests_at(arrivals, duration=30.0), policy=policy, step=10.0)
    best = brute_force(pb)
    if math.isinf(best):  # e.g. two requests at t=0, nothing warm and a quota of one
        with pytest.raises(ValueError, match="no schedule meets the SLO"):
            solve(pb)
    else:
        assert_within_the_gap(solve(pb), best)


def test_late_tables_are_the_late_work_of_the_per_second_requirement() -> None:
    workload = requests_at([0.5, 1.0, 1.5, 13.0, 13.2], duration=30.0)
    pb = build_problem(workload, policy=make_policy(max_replicas=4), step=10.0)
    r = requirement(workload.arrivals, np.full(5, 2.0), np.ones(5), seconds=30)
    for t in range(3):
        row = r[10 * t : 10 * (t + 1)]
        for x, y in zip(pb.knots[t], pb.late[t], strict=True):
            assert y == pytest.approx(float(np.maximum(row - x, 0.0).sum()))
    assert pb.work.sum() == pytest.approx(10.0)  # five requests of 2 s
    assert pb.per_work[0] == pytest.approx(3 / pb.work[0])


def test_requests_whose_prefill_misses_use_up_the_allowance_and_need_no_capacity() -> None:
    # a 3,000-token prompt needs 3 s of prefill against a 2 s target: nothing can serve it in time
    workload = Workload(
        name="long",
        arrivals=np.array([0.0, 5.0, 10.0, 15.0]),
        prompt_tokens=np.array([3000, 1000, 3000, 1000], dtype=np.int64),
        output_tokens=np.full(4, 100, dtype=np.int64),
        duration=20.0,
    )
    pb = build_problem(workload, policy=make_policy(attainment=0.5), step=10.0)
    assert pb.work.sum() == pytest.approx(4.0)  # only the two short requests count
    assert pb.budget == pytest.approx(0.0)  # half must meet: the two short ones, no more misses


# ---- both bounds against the cluster model ----------------------------------------------------------


@given(
    starts=st.lists(st.floats(40.0, 170.0, allow_nan=False), min_size=1, max_size=40),
    attainment=st.sampled_from([0.999999, 0.95, 0.8]),
    quota=st.sampled_from([0, 2]),
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_lower_bound_is_below_an_upper_bound_that_meets_the_slo_in_the_cluster_model(
    starts: list[float], attainment: float, quota: int
) -> None:
    # a queue-wait target of 1 ms: waiting is not a way to need less capacity (the bound assumes so);
    # arrivals after the 30 s cold start and room for every request at once: a schedule exists
    policy = make_policy(cold=30.0, max_replicas=40, quota=quota, attainment=attainment, queue_wait=0.001)
    workload = requests_at(starts, duration=180.0)
    oracle = tight_oracle(workload, policy=policy, step=10.0, time_limit=20.0)
    assert oracle.upper is not None, [r.summary.slo_attainment for r in oracle.replays]
    assert oracle.upper.summary.slo_attainment >= oracle.feasibility.judged_goal
    assert oracle.lower <= oracle.upper.summary.cost.total + 1e-9
    again = simulate(workload, oracle_playback(workload, policy), policy=policy, timeline_step=10.0)
    assert again.summary.requests == workload.requests


def oracle_playback(workload: Workload, policy: ModelPolicy) -> Playback:
    """Return the playback of the coarse model's optimum with 10 s steps."""
    pb = build_problem(workload, policy=policy, step=10.0)
    return playback(solve(pb), pb)


def test_on_a_flash_crowd_the_upper_bound_meets_the_slo_above_the_lower_bound() -> None:
    policy = ModelPolicy(name="m")
    workload = synthetic.synthetic("flash-crowd", seed=1, duration=1800.0)
    oracle = tight_oracle(workload, policy=policy, initial_replicas=2)
    assert oracle.optimal
    assert oracle.upper is not None
    assert oracle.upper.summary.slo_attainment >= policy.slo.attainment
    assert 0 < oracle.lower <= oracle.upper.summary.cost.total


def test_a_fluid_workload_is_replayed_through_the_fluid_model() -> None:
    policy = ModelPolicy(name="m")
    counts = np.concatenate([np.full(600, 6.0), np.full(600, 30.0), np.full(600, 6.0)])
    workload = RateWorkload(name="steps", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    oracle = tight_oracle(workload, policy=policy, initial_replicas=1)
    assert oracle.upper is not None
    assert oracle.upper.summary.model == "fluid"
    assert oracle.lower <= oracle.upper.summary.cost.total
    assert oracle.upper.summary.slo_attainment >= 0.99


def test_bad_step_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="step must be a positive whole number"):
        build_problem(requests_at([1.0], duration=10.0), policy=make_policy(), step=2.5)
