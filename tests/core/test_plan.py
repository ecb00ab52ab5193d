"""The planner: fractile tables, serverless and quota cases, bounds, and timelines of decisions."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from scaler.core import queueing, sizing
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, Observed, Unavailable

LEVELS = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
Z = np.array([statistics.NormalDist().inv_cdf(q) for q in LEVELS])
PROMPT, OUTPUT = 1000.0, 200.0


def policy(**sections: Any) -> ModelPolicy:
    return ModelPolicy.model_validate({"name": "m", **sections})


def forecast(
    mean: Callable[[float], float] | float,
    *,
    start: float,
    sd: float = 0.1,
    bucket: float = 60.0,
    buckets: int = 30,
) -> DemandForecast:
    """Return a forecast from ``start``: normal quantiles around ``mean(t)`` (sd as a share of the mean)."""
    times = start + bucket * np.arange(buckets)
    means = np.array([mean(t) if callable(mean) else mean for t in times], dtype=np.float64)
    quantiles = np.maximum(means[None, :] * (1 + sd * Z[:, None]), 0.0)
    return DemandForecast(
        start=start, bucket_seconds=bucket, levels=LEVELS, rate_mean=means, rate_quantiles=quantiles,
        mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT,
    )


def observed(ready: int = 0, *, rate: float | None = None, starting: int = 0, **more: Any) -> Observed:
    fields: dict[str, Any] = {
        "replicas_ready": ready, "replicas_starting": starting, "standby_ready": 0, "standby_starting": 0,
        "serverless_provisioned": 0, "request_rate": rate,
    }
    return Observed(**{**fields, **more})


def rate_for(p: ModelPolicy, instances: int, share: float = 0.5) -> float:
    """Return a rate strictly between what ``instances - 1`` and ``instances`` sustain."""
    lo = queueing.max_rate(instances - 1, policy=p, mean_prompt=PROMPT, mean_output=OUTPUT)
    hi = queueing.max_rate(instances, policy=p, mean_prompt=PROMPT, mean_output=OUTPUT)
    return lo + share * (hi - lo)


# --- tables -------------------------------------------------------------------------------------

# A hand-made demand distribution, the same in every bucket: pairs of levels fall inside one
# instance count, so the quantile between them needs exactly that many instances.
STEP_LEVELS = np.array([0.05, 0.2, 0.3, 0.45, 0.55, 0.7, 0.8, 0.95])
STEP_NEEDS = [1, 3, 3, 5, 5, 8, 8, 10]
STEP_SHARES = [0.5, 0.3, 0.7, 0.3, 0.7, 0.3, 0.7, 0.5]


def step_forecast(p: ModelPolicy, *, start: float = 0.0) -> DemandForecast:
    column = np.array([rate_for(p, n, s) for n, s in zip(STEP_NEEDS, STEP_SHARES, strict=True)])
    quantiles = np.repeat(column[:, None], 30, axis=1)
    return DemandForecast(
        start=start, bucket_seconds=60.0, levels=STEP_LEVELS, rate_mean=quantiles[3].copy(),
        rate_quantiles=quantiles, mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT,
    )


def priced(ratio: float, **sections: Any) -> ModelPolicy:
    """Return a policy whose c_k / c_s is ``ratio`` (busy serverless hour = $7.20)."""
    prices = {"serverless_per_gpu_second": 0.002, "replica_per_hour": ratio * 7.2}
    bounds = {"max_replicas": 20, "serverless_quota": 20, "max_standby": 0}
    return policy(prices=prices, bounds=bounds, behavior={"max_step_up": 20}, **sections)


def uniform_work_forecast(p: ModelPolicy, *, low: float, high: float) -> DemandForecast:
    """Return a forecast whose demand, in instance units (rate x work), is uniform on [low, high]."""
    work = queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    levels = np.linspace(0.0001, 0.9999, 81)
    column = (low + (high - low) * levels) / work
    quantiles = np.repeat(column[:, None], 30, axis=1)
    return DemandForecast(
        start=0.0, bucket_seconds=60.0, levels=levels, rate_mean=quantiles[40].copy(),
        rate_quantiles=quantiles, mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT,
    )


def whole_window(f: DemandForecast) -> np.ndarray:
    return sizing.window_weights(f, t0=f.start, t1=f.start + f.horizon_seconds)


# Demand uniform on [2, 6] instances: the n-th replica is busy E[clip(a - (n-1), 0, 1)] of the time,
# by hand 1, 1, 0.875, 0.625, 0.375, 0.125, 0 for n = 1..7. It pays off while that is >= c_k/c_s.
@pytest.mark.parametrize(
    ("ratio", "replicas"),
    [(0.95, 2), (0.75, 3), (0.5, 4), (0.25, 5), (0.1, 6), (0.0, 6)],
)
def test_a_replica_pays_off_while_its_busy_share_beats_the_break_even(ratio: float, replicas: int) -> None:
    p = priced(0.5)
    f = uniform_work_forecast(p, low=2.0, high=6.0)
    work = queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    assert sizing.replicas_worth_paying(f, weights=whole_window(f), work=work, ratio=ratio) == replicas


@pytest.mark.parametrize(("ratio", "replicas"), [(0.4, 5), (0.6, 4)])
def test_a_half_busy_replica_pays_off_only_below_a_half_break_even(ratio: float, replicas: int) -> None:
    p = priced(0.5)  # steady demand of 4.5 instances: the fifth replica would be busy half the time
    f = uniform_work_forecast(p, low=4.5, high=4.5)
    work = queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    assert sizing.replicas_worth_paying(f, weights=whole_window(f), work=work, ratio=ratio) == replicas


# The planner adds a replica when it pays off at 10% less demand (uniform on [1.8, 5.4]: shares
# 1, .94, .81, .53, .25, .02 by hand) and keeps one while it pays off at 10% more ([2.2, 6.6]:
# the third is busy .93, the fourth .70, the sixth .25, the seventh .04).
@pytest.mark.parametrize(
    ("ratio", "running", "replicas", "bound_by"),
    [
        (0.75, 0, 3, "fractile"),
        (0.5, 0, 4, "fractile"),
        (0.1, 0, 5, "fractile"),
        (0.1, 6, 6, "fractile"),  # inside the deadband: kept
        (0.1, 7, 6, "fractile"),
        (0.75, 4, 3, "fractile"),
        (0.75, 5, 4, "step_down"),  # wants 3, one step at a time
    ],
)
def test_replicas_follow_the_break_even_with_a_deadband(
    ratio: float, running: int, replicas: int, bound_by: str
) -> None:
    p = priced(ratio)
    d = plan(policy=p, forecast=uniform_work_forecast(p, low=2.0, high=6.0), observed=observed(running),
             previous=None, now=0.0)
    assert d.quantile == pytest.approx(1 - ratio)
    assert (d.replicas, d.bound_by) == (replicas, bound_by)
    assert f"p{(1 - ratio) * 100:.4g}" in d.reason


def test_quantile_override_replaces_the_fractile() -> None:
    p = priced(0.5, forecast={"quantile": 0.75})
    d = plan(policy=p, forecast=step_forecast(p), observed=observed(), previous=None, now=0.0)
    assert (d.quantile, d.replicas) == (0.75, 8)


@pytest.mark.parametrize(("min_replicas", "expected"), [(0, 0), (2, 2)])
def test_all_serverless_when_serverless_is_cheaper(min_replicas: int, expected: int) -> None:
    p = policy(
        prices={"serverless_per_gpu_second": 0.0005, "replica_per_hour": 4.0},
        bounds={"min_replicas": min_replicas},
    )
    obs = observed(rate=30.0)
    d = plan(policy=p, forecast=forecast(30.0, start=0.0), observed=obs, previous=None, now=0.0)
    assert d.replicas == expected
    assert d.spill_fraction > 0.0
    assert d.cost_per_hour["all_serverless"] < d.cost_per_hour["all_kubernetes"]


@pytest.mark.parametrize(
    ("busy_share", "replicas", "bound_by"),
    [(0.05, 0, "break_even"), (0.4, 0, "break_even"), (0.7, 1, "fractile")],
)
def test_a_trickle_is_left_to_serverless(busy_share: float, replicas: int, bound_by: str) -> None:
    # Default prices: a replica pays off above 53% busy. The rate below keeps one replica this busy.
    p = policy()
    rate = busy_share / queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    d = plan(policy=p, forecast=forecast(rate, start=0.0, sd=0.05), observed=observed(rate=rate),
             previous=None, now=0.0)
    assert (d.replicas, d.bound_by) == (replicas, bound_by)
    if replicas == 0:
        assert d.spill_fraction == 1.0
        assert d.serverless_provisioned == 1  # its cold start (15 s) would break the 2 s TTFT


def worth_paying(p: ModelPolicy, f: DemandForecast, *, now: float = 0.0) -> int:
    """Return the replicas the marginal rule (tested by hand above) gives over a replica's lifetime."""
    start = now + p.lead_times.cold_start_seconds
    weights = sizing.window_weights(f, t0=start, t1=start + p.behavior.scale_down_delay_seconds)
    work = queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    return sizing.replicas_worth_paying(f, weights=weights, work=work, ratio=p.break_even_utilisation)


def test_more_replicas_when_the_quota_binds() -> None:
    roomy = priced(0.5)
    tight = roomy.model_copy(update={"bounds": roomy.bounds.model_copy(update={"serverless_quota": 1})})
    rate = rate_for(tight, 10)  # steady, between what 9 and 10 instances sustain (~5% above 9's)
    d_roomy = plan(policy=roomy, forecast=forecast(rate, start=0.0, sd=0.0), observed=observed(),
                   previous=None, now=0.0)
    d_tight = plan(policy=tight, forecast=forecast(rate, start=0.0, sd=0.0), observed=observed(),
                   previous=None, now=0.0)
    assert d_roomy.bound_by == "fractile"
    # 9 replicas + 1 serverless instance hold the rate; 8 + 1 would leave ~5% of requests over the
    # quota, beyond the SLO's 1% allowance.
    assert (d_tight.replicas, d_tight.bound_by) == (9, "quota")


def test_the_quota_floor_counts_expected_overflow_not_the_tail() -> None:
    # A wide upper tail (p99 at 4x the mean, as after a burst) does not pin replicas at the p99 need:
    # the floor keeps the expected share of requests beyond replicas + quota within 1%.
    p = priced(0.5)
    p = p.model_copy(update={"bounds": p.bounds.model_copy(update={"serverless_quota": 2})})
    f = forecast(20.0, start=0.0, sd=1.3)
    d = plan(policy=p, forecast=f, observed=observed(), previous=None, now=0.0)
    p99_need = queueing.instances_needed(float(f.rate_quantiles[-1, 0]), policy=p, mean_prompt=PROMPT,
                                         mean_output=OUTPUT)
    assert d.replicas < p99_need - 2
    start = p.lead_times.cold_start_seconds
    weights = sizing.window_weights(f, t0=start, t1=start + p.behavior.scale_down_delay_seconds)
    table = queueing.sizing_table(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    assert sizing.overflow_share(f, weights=weights, capacity_rate=table.max_rate(d.replicas + 2)) <= 0.01


def test_without_serverless_replicas_cover_the_slo_quantile() -> None:
    p = priced(0.5)
    obs = observed(rate=10.0, unavailable=Unavailable.SERVERLESS)
    d = plan(policy=p, forecast=step_forecast(p), observed=obs, previous=None, now=0.0)
    assert (d.replicas, d.bound_by, d.quantile) == (10, "serverless-unavailable", p.slo.attainment)
    assert (d.serverless_provisioned, d.spill_fraction) == (0, 0.0)


def test_quota_zero_sizes_replicas_for_the_slo() -> None:
    p = priced(0.5)
    p = p.model_copy(update={"bounds": p.bounds.model_copy(update={"serverless_quota": 0})})
    d = plan(policy=p, forecast=step_forecast(p), observed=observed(rate=10.0), previous=None, now=0.0)
    assert (d.replicas, d.bound_by, d.spill_fraction) == (10, "slo", 0.0)


def test_kubernetes_unavailable_holds_replicas_and_spills_the_rest() -> None:
    p = priced(0.5)
    obs = observed(2, rate=rate_for(p, 6), unavailable=Unavailable.KUBERNETES)
    d = plan(policy=p, forecast=step_forecast(p), observed=obs, previous=None, now=0.0)
    assert (d.replicas, d.bound_by) == (2, "kubernetes-unavailable")
    assert d.spill_fraction > 0.5
    assert d.serverless_provisioned > 0


@pytest.mark.parametrize(
    ("bounds", "expected", "bound_by"),
    [
        ({"max_replicas": 3}, 3, "max_replicas"),
        ({"min_replicas": 7}, 7, "min_replicas"),
    ],
)
def test_bounds_clamp_the_target(bounds: dict[str, int], expected: int, bound_by: str) -> None:
    p = policy(prices={"serverless_per_gpu_second": 0.002, "replica_per_hour": 3.6},
               bounds=bounds, behavior={"max_step_up": 20})
    d = plan(policy=p, forecast=step_forecast(p), observed=observed(), previous=None, now=0.0)
    assert (d.replicas, d.bound_by) == (expected, bound_by)


def test_an_active_schedule_clamps_and_is_named() -> None:
    p = policy(
        prices={"serverless_per_gpu_second": 0.002, "replica_per_hour": 3.6},
        behavior={"max_step_up": 20},
        schedules=[{"name": "night", "start": "00:00", "end": "06:00", "max_replicas": 2, "max_standby": 0}],
    )
    at_night = plan(policy=p, forecast=step_forecast(p, start=3600.0), observed=observed(),
                    previous=None, now=3600.0)
    at_noon = plan(policy=p, forecast=step_forecast(p, start=43200.0), observed=observed(),
                   previous=None, now=43200.0)
    assert (at_night.replicas, at_night.bound_by, at_night.standby) == (2, "schedule:night", 0)
    expected = worth_paying(p, step_forecast(p, start=43200.0), now=43200.0)
    assert expected > 2
    assert (at_noon.replicas, at_noon.bound_by) == (expected, "fractile")


def test_costs_compare_the_mix_with_the_alternatives() -> None:
    p = policy()
    d = plan(policy=p, forecast=forecast(40.0, start=0.0), observed=observed(8, rate=40.0),
             previous=None, now=0.0)
    assert set(d.cost_per_hour) == {"chosen", "all_kubernetes", "all_serverless"}
    costs = d.cost_per_hour
    assert costs["chosen"] <= max(costs["all_kubernetes"], costs["all_serverless"])
    work = queueing.work_seconds(p, mean_prompt=PROMPT, mean_output=OUTPUT)
    assert d.cost_per_hour["all_serverless"] == pytest.approx(40.0 * work * 3600 * 0.0021)


# --- timelines ----------------------------------------------------------------------------------

def run(
    p: ModelPolicy,
    *,
    mean_at: Callable[[float, float], float],
    rate_at: Callable[[float], float] | None = None,
    ready_at: Callable[[Decision | None], int] | None = None,
    until: float,
    sd: float = 0.1,
    noise: Callable[[], float] | None = None,
) -> list[Decision]:
    """Plan every 10 s from 0 to ``until``; ``mean_at(now, t)`` is the forecast made at ``now`` for ``t``."""
    decisions: list[Decision] = []
    previous: Decision | None = None
    for now in np.arange(0.0, until, 10.0):
        factor = noise() if noise is not None else 1.0
        fc = forecast(lambda t, now=now, f=factor: mean_at(now, t) * f, start=float(now), sd=sd)
        ready = ready_at(previous) if ready_at is not None else (previous.replicas if previous else 0)
        obs = observed(ready, rate=rate_at(now) if rate_at else None)
        previous = plan(policy=p, forecast=fc, observed=obs, previous=previous, now=float(now))
        decisions.append(previous)
    return decisions


def test_an_unforeseen_step_is_answered_by_serverless_in_the_same_tick() -> None:
    p = policy()
    low, high, step = 4.5, 60.0, 600.0

    def mean_at(now: float, t: float) -> float:  # the forecaster learns the step when it happens
        return high if now >= step else low

    decisions = run(p, mean_at=mean_at, rate_at=lambda now: high if now >= step else low,
                    ready_at=lambda prev: prev.replicas if prev else 0, until=step + 10)
    before, at_step = decisions[-2], decisions[-1]
    assert before.spill_fraction == 0.0
    assert at_step.spill_fraction > 0.5
    assert at_step.serverless_provisioned > before.serverless_provisioned
    assert at_step.replicas == before.replicas + p.behavior.max_step_up  # replicas start now too


def test_a_foreseen_step_starts_replicas_a_cold_start_ahead() -> None:
    p = policy()
    low, high, step = 5.0, 60.0, 3600.0
    decisions = run(p, mean_at=lambda now, t: high if t >= step else low, until=step + 10)
    low_target = decisions[0].replicas
    first_rise = next(d.at for d in decisions if d.replicas > low_target)
    assert first_rise <= step - p.lead_times.cold_start_seconds
    assert decisions[-1].replicas >= queueing.instances_needed(
        high, policy=p, mean_prompt=PROMPT, mean_output=OUTPUT
    ) - p.bounds.serverless_quota


def test_noisy_steady_load_does_not_flap() -> None:
    p = policy()
    rng = np.random.default_rng(7)
    decisions = run(p, mean_at=lambda now, t: 40.0, until=4500.0,
                    noise=lambda: float(rng.normal(1.0, 0.08)))
    settled = [d.replicas for d in decisions if d.at >= 900.0]  # one hour after 15 min of settling
    changes = sum(a != b for a, b in itertools.pairwise(settled))
    down = sum(b < a for a, b in itertools.pairwise(settled))
    assert changes <= 2
    assert down == 0


def test_scale_down_waits_for_its_delay_then_steps() -> None:
    p = policy(behavior={"max_step_down": 1, "scale_down_delay_seconds": 600})
    drop = 1200.0
    decisions = run(p, mean_at=lambda now, t: 60.0 if now < drop else 5.0, until=drop + 1500)
    high = next(d.replicas for d in decisions if d.at == drop - 10)
    low = decisions[-1].replicas
    assert high > low + 2
    during = [d for d in decisions if drop <= d.at < drop + 600]
    assert all(d.replicas == high for d in during)
    assert all(d.bound_by == "scale_down_delay" for d in during)
    after = [d.replicas for d in decisions if d.at >= drop + 600]
    steps = [a - b for a, b in itertools.pairwise(after)]
    assert after[0] == high - 1
    assert set(steps) <= {0, 1}


def test_no_data_holds_the_previous_decision() -> None:
    p = policy()
    first = plan(policy=p, forecast=forecast(40.0, start=0.0), observed=observed(4, rate=40.0),
                 previous=None, now=0.0)
    held = plan(policy=p, forecast=DemandForecast.unusable(start=10.0, note="metrics source down"),
                observed=observed(0), previous=first, now=10.0)
    assert held.held
    assert held.bound_by == "no-data"
    assert "metrics source down" in held.reason
    assert (held.replicas, held.standby, held.serverless_provisioned) == (
        first.replicas, first.standby, first.serverless_provisioned
    )


@pytest.mark.parametrize(
    ("bounds", "ready", "starting", "expected"),
    [({}, 3, 1, 4), ({"min_replicas": 5}, 3, 1, 5), ({}, 0, 0, 0), ({"max_replicas": 2}, 3, 1, 2)],
)
def test_no_data_without_history_holds_the_observed_state(
    bounds: dict[str, int], ready: int, starting: int, expected: int
) -> None:
    p = policy(bounds=bounds)
    d = plan(policy=p, forecast=DemandForecast.unusable(start=0.0, note="cold start of the forecaster"),
             observed=observed(ready, starting=starting), previous=None, now=0.0)
    assert (d.replicas, d.held, d.bound_by) == (expected, True, "no-data")


def test_non_finite_forecast_holds() -> None:
    p = policy()
    fc = forecast(40.0, start=0.0)
    fc.rate_quantiles[-1, 3] = np.nan
    d = plan(policy=p, forecast=fc, observed=observed(3), previous=None, now=0.0)
    assert (d.replicas, d.bound_by, d.held) == (3, "no-data", True)
    assert "non-finite" in d.reason


def test_empty_but_valid_forecast_holds_too() -> None:
    p = policy()
    empty = DemandForecast(start=0.0, bucket_seconds=60.0, levels=LEVELS, rate_mean=np.zeros(0),
                           rate_quantiles=np.zeros((LEVELS.size, 0)), mean_prompt_tokens=PROMPT,
                           mean_output_tokens=OUTPUT)
    d = plan(policy=p, forecast=empty, observed=observed(3), previous=None, now=0.0)
    assert (d.replicas, d.bound_by) == (3, "no-data")


def test_standby_covers_what_replicas_and_serverless_cannot_within_a_cold_start_where_it_pays() -> None:
    def falling(t: float) -> float:  # a peak now that the forecast sees fading before a replica is up
        return 40.0 if t < 300.0 else 5.0

    def decide(quota: int, **prices: float) -> Decision:
        p = policy(bounds={"serverless_quota": quota, "max_standby": 3}, prices=prices)
        return plan(policy=p, forecast=forecast(falling, start=0.0), observed=observed(rate=40.0),
                    previous=None, now=0.0)

    roomy, tight = decide(8, standby_per_hour=1.0), decide(1, standby_per_hour=1.0)
    assert roomy.standby == 0
    assert tight.standby == 3  # clamped to max_standby
    assert "standby 3" in tight.reason
    # priced as a replica (the default), a standby never pays: serving replicas take the gap instead
    same = decide(1)
    assert same.standby == 0
    assert same.replicas == tight.replicas + 3
    assert same.bound_by == "cold_start"
    assert "3 serving replicas cover the cold start" in same.reason
    # a second standby workload is promoted by a scale-up of the serving one (new pods start cold): however
    # cheap, its standby covers nothing, so serving replicas take the gap too
    workload = {"kubernetes": {"namespace": "llm", "name": "chat", "standby_name": "chat-standby"}}
    bounds = {"serverless_quota": 1, "max_standby": 3}
    p = policy(bounds=bounds, prices={"standby_per_hour": 1.0}, targets=workload)
    assert p.standby_promotion_seconds == p.lead_times.cold_start_seconds
    second = plan(policy=p, forecast=forecast(falling, start=0.0), observed=observed(rate=40.0),
                  previous=None, now=0.0)
    assert (second.standby, second.replicas, second.bound_by) == (0, same.replicas, "cold_start")


# --- the mixture over a window ---------------------------------------------------------------

def test_window_weights_follow_the_overlap_with_each_bucket() -> None:
    fc = forecast(1.0, start=100.0, buckets=4)
    assert list(sizing.window_weights(fc, t0=130.0, t1=220.0)) == pytest.approx([1 / 3, 2 / 3, 0, 0])
    assert list(sizing.window_weights(fc, t0=1000.0, t1=2000.0)) == [0, 0, 0, 1]  # past the horizon
    assert list(sizing.window_weights(fc, t0=0.0, t1=50.0)) == [1, 0, 0, 0]  # before the start


@pytest.mark.parametrize(("q", "expected"), [(0.25, 10.0), (0.49, 10.0), (0.75, 50.0), (0.99, 50.0)])
def test_quantile_of_a_mixture_of_two_buckets(q: float, expected: float) -> None:
    # Half the window at ~10 req/s, half at ~50: below the median the low bucket, above it the high one.
    fc = forecast(lambda t: 10.0 if t < 60.0 else 50.0, start=0.0, sd=0.01, buckets=2)
    weights = sizing.window_weights(fc, t0=0.0, t1=120.0)
    assert sizing.rate_quantile(fc, weights=weights, q=q) == pytest.approx(expected, rel=0.05)


def test_mixture_quantile_interpolates_between_levels_and_clamps_tails() -> None:
    fc = DemandForecast(start=0.0, bucket_seconds=60.0, levels=np.array([0.2, 0.8]),
                        rate_mean=np.array([15.0]), rate_quantiles=np.array([[10.0], [20.0]]),
                        mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT)
    w = np.array([1.0])
    assert sizing.rate_quantile(fc, weights=w, q=0.5) == pytest.approx(15.0)
    assert sizing.rate_quantile(fc, weights=w, q=0.35) == pytest.approx(12.5)
    assert sizing.rate_quantile(fc, weights=w, q=0.95) == pytest.approx(20.0)
    assert sizing.rate_quantile(fc, weights=w, q=0.05) == pytest.approx(10.0)
    # E[min(rate, cap)]: 0.2 * 10 + 0.6 * 15 + 0.2 * 20 = 15 uncapped; capped at 12 by hand:
    # 0.2 * 10 + 0.6 * (0.2 * 11 + 0.8 * 12) + 0.2 * 12 = 11.48
    assert sizing.capped_mean_rate(fc, weights=w, cap=1e9) == pytest.approx(15.0)
    assert sizing.capped_mean_rate(fc, weights=w, cap=12.0) == pytest.approx(11.48)


def test_provisioned_serverless_rises_at_once_and_falls_past_a_deadband() -> None:
    p = policy(bounds={"serverless_quota": 40, "max_replicas": 2})

    def decide(rate: float, previous: Decision | None, now: float) -> Decision:
        return plan(policy=p, forecast=forecast(rate, start=now), observed=observed(0, rate=rate),
                    previous=previous, now=now)

    high = decide(100.0, None, 0.0)
    assert high.serverless_provisioned > 8
    slightly_lower = decide(95.0, high, 10.0)
    assert slightly_lower.serverless_provisioned == high.serverless_provisioned  # within the deadband
    much_lower = decide(40.0, slightly_lower, 20.0)
    fresh = decide(40.0, None, 20.0)
    assert much_lower.serverless_provisioned == fresh.serverless_provisioned < high.serverless_provisioned
    higher = decide(120.0, much_lower, 30.0)
    assert higher.serverless_provisioned > high.serverless_provisioned
    # Small counts have no deadband: the last provisioned instance goes when it is not needed.
    one = decide(0.5, None, 40.0)
    none = decide(0.0, one, 50.0)
    assert (one.serverless_provisioned, none.serverless_provisioned) == (1, 0)


@pytest.mark.parametrize(("cap", "share"), [(8.0, 0.2), (10.0, 0.0), (0.0, 1.0), (12.0, 0.0)])
def test_overflow_share_of_a_steady_rate(cap: float, share: float) -> None:
    f = forecast(10.0, start=0.0, sd=0.0)
    assert sizing.overflow_share(f, weights=whole_window(f), capacity_rate=cap) == pytest.approx(share)


def test_overflow_share_of_a_uniform_rate() -> None:
    # Rate uniform on [0, 10] (mean 5): above 5 lies E[(r - 5)+] = 1.25, a quarter of the demand.
    levels = np.linspace(0.0001, 0.9999, 201)
    column = 10.0 * levels
    f = DemandForecast(start=0.0, bucket_seconds=60.0, levels=levels, rate_mean=np.array([5.0]),
                       rate_quantiles=column[:, None], mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT)
    share = sizing.overflow_share(f, weights=np.array([1.0]), capacity_rate=5.0)
    assert share == pytest.approx(0.25, abs=1e-3)


# --- two replica leads: the lifetime starts at the typical one, the coverage spans the other ---


def test_the_replica_lifetime_starts_at_the_typical_lead() -> None:
    p = policy(lead_times={"cold_start_seconds": 600, "lifetime_start_seconds": 120})
    d = plan(policy=p, forecast=forecast(20.0, start=0.0), observed=observed(2), previous=None, now=0.0)
    assert "[t+120s, " in d.reason
    unset = policy(lead_times={"cold_start_seconds": 600})
    d = plan(policy=unset, forecast=forecast(20.0, start=0.0), observed=observed(2), previous=None, now=0.0)
    assert "[t+600s, " in d.reason  # no typical lead: the cold start, as before
    later = policy(lead_times={"cold_start_seconds": 200, "lifetime_start_seconds": 500})
    assert later.lead_times.typical_cold_start_seconds == 200.0  # never after the coverage ends


def test_the_lifetime_sizes_replicas_to_the_demand_at_the_typical_lead() -> None:
    """Demand doubles at t = 400 s: a lifetime from t+120 s (the typical lead) meets less of it than one
    from t+600 s (the coverage lead), so fewer replicas are ordered now."""

    def rising(t: float) -> float:
        return 10.0 if t < 400.0 else 40.0

    sections = {"behavior": {"scale_down_delay_seconds": 120, "max_step_up": 50}}
    early = policy(lead_times={"cold_start_seconds": 600, "lifetime_start_seconds": 120}, **sections)
    late = policy(lead_times={"cold_start_seconds": 600}, **sections)
    f = forecast(rising, start=0.0)
    a = plan(policy=early, forecast=f, observed=observed(2), previous=None, now=0.0)
    b = plan(policy=late, forecast=f, observed=observed(2), previous=None, now=0.0)
    assert a.replicas < b.replicas


def test_the_cold_start_coverage_spans_the_coverage_lead() -> None:
    """Cheap standby covers demand until replicas are surely up: a burst at t = 400 s lies within a 600 s
    coverage lead (standby for it) and outside a 300 s one, whatever the typical lead."""

    def burst(t: float) -> float:
        return 60.0 if 400.0 <= t < 520.0 else 5.0

    def standby(cold: float) -> int:
        p = policy(
            lead_times={"cold_start_seconds": cold, "lifetime_start_seconds": 120},
            prices={"standby_per_hour": 0.5},
            bounds={"max_standby": 50, "serverless_quota": 4},
            behavior={"scale_down_delay_seconds": 120},
        )
        f = forecast(burst, start=0.0)
        return plan(policy=p, forecast=f, observed=observed(2), previous=None, now=0.0).standby

    assert standby(600.0) > standby(300.0)


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0, 3.0])
def test_serverless_is_provisioned_for_the_bursts_inside_a_bucket(factor: float) -> None:
    # a bursty model (arrivals in bursts shorter than a bucket) is provisioned as if the bucket's
    # rate were ``factor`` times higher; replicas, sized for the bucket's mean, are not changed
    p = policy(bounds={"serverless_quota": 100, "max_replicas": 2})

    def decide(rate: float, burst: float) -> Decision:
        seen = observed(0, rate=20.0, burst_factor=burst)
        return plan(policy=p, forecast=forecast(rate, start=0.0), observed=seen, previous=None, now=0.0)

    steady = decide(20.0, 1.0)
    bursty = decide(20.0, factor)
    assert bursty.serverless_provisioned == decide(20.0 * max(factor, 1.0), 1.0).serverless_provisioned
    assert (bursty.serverless_provisioned > steady.serverless_provisioned) == (factor > 1.0)
    assert bursty.replicas == steady.replicas
