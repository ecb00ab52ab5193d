"""The perfect forecaster: the true future demand, bucket by bucket, fed to the daemon's own controller."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.core.policy import ModelPolicy
from scaler.sim.engine import simulate
from scaler.sim.perfect_forecast import PerfectForecaster
from scaler.sim.spillway import SpillwayController, bucket_counts
from scaler.sim.workload import Workload

STEP_AT = 1800


def _policy() -> ModelPolicy:
    return ModelPolicy.model_validate(
        {"name": "m", "lead_times": {"cold_start_seconds": 300}, "forecast": {"horizon_seconds": 1800}}
    )


def _step(seed: int = 5) -> Workload:
    rng = np.random.default_rng(seed)
    seconds = np.arange(3600)
    counts = rng.poisson(np.where(seconds < STEP_AT, 2.0, 30.0))
    arrivals = np.sort(np.repeat(seconds, counts) + rng.uniform(0, 1, int(counts.sum())))
    n = arrivals.shape[0]
    return Workload(
        name="step",
        arrivals=arrivals,
        prompt_tokens=np.full(n, 1000, dtype=np.int64),
        output_tokens=np.full(n, 200, dtype=np.int64),
        duration=3600.0,
    )


def test_it_forecasts_the_true_rate_of_every_bucket_ahead() -> None:
    workload, policy = _step(), _policy()
    forecaster = PerfectForecaster.from_workload(workload, policy=policy)
    reqs, _, _ = bucket_counts(workload, bucket_seconds=60)
    forecast = forecaster.forecast(now=1500.0)
    assert forecast.valid
    assert forecast.start == 1500.0  # the bucket holding now
    np.testing.assert_allclose(forecast.rate_mean[:10], reqs[25:35] / 60)
    assert (forecast.rate_quantiles == forecast.rate_mean).all()  # a point mass per bucket
    assert forecast.mean_prompt_tokens == pytest.approx(1000.0)
    assert forecaster.forecast(now=3590.0).rate_mean[1:].sum() == 0  # nothing after the end


def test_with_the_future_known_replicas_are_ready_when_the_step_arrives() -> None:
    workload, policy = _step(), _policy()
    forecaster = PerfectForecaster.from_workload(workload, policy=policy)
    perfect = simulate(workload, SpillwayController(policy, workload, forecaster=forecaster), policy=policy)
    blind = simulate(workload, SpillwayController(policy, workload), policy=policy)
    at = STEP_AT // 60
    # a cold start ahead of the step, the perfect forecast already asked for the replicas it needs
    assert perfect.timeline.replicas_ready[at] >= blind.timeline.replicas_ready[at] + 2
    assert perfect.summary.serverless_share < blind.summary.serverless_share
