"""Compile every numba kernel the daemon calls into numba's cache (run at image build time).

Goes through the daemon's own code paths, so the cached signatures are the ones it will ask for:
the forecaster seeded from history (fit, run_fresh), fed bucket by bucket with a gap and a refit
(run, fit), asked for a forecast (forecast_means, forecast_quantiles), and the planner on that
forecast (the sizing and queueing kernels). Prints how many kernels it compiled; exits 1 if the
cache directory (NUMBA_CACHE_DIR) is unset or nothing was cached.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from scaler.core import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed
from scaler.forecast.models import DemandForecaster


def warm() -> None:
    """Run the forecaster and the planner once through every path the daemon takes."""
    policy = ModelPolicy(name="warm-up")
    forecaster = DemandForecaster.from_policy(policy)
    bucket = float(forecaster.bucket_seconds)
    rng = np.random.default_rng(0)
    n = 64
    requests = rng.poisson(20.0, n).astype(np.float64)
    forecaster.seed(
        start=0.0, requests=requests, prompt_tokens=requests * 200.0, output_tokens=requests * 50.0
    )
    k = n
    for _ in range(forecaster.refit_every + 1):
        forecaster.observe(bucket_start=k * bucket, requests=20.0, prompt_tokens=4000.0, output_tokens=1000.0)
        k += 1
    k += 3  # a gap: missing buckets go through the same kernel as one wider step
    forecaster.observe(bucket_start=k * bucket, requests=25.0, prompt_tokens=5000.0, output_tokens=1250.0)
    now = (k + 1) * bucket
    observed = Observed(
        replicas_ready=1,
        replicas_starting=0,
        standby_ready=0,
        standby_starting=0,
        serverless_provisioned=0,
        request_rate=20.0 / bucket,
    )
    previous = None
    for step in range(3):
        forecast = forecaster.forecast(now=now + step * bucket)
        previous = plan.plan(
            policy=policy, forecast=forecast, observed=observed, previous=previous, now=now + step * bucket
        )
    empty = DemandForecaster.from_policy(policy)  # a model with no traffic yet
    plan.plan(policy=policy, forecast=empty.forecast(now=now), observed=observed, previous=None, now=now)


def main() -> int:
    """Warm the cache; return 0, or 1 when NUMBA_CACHE_DIR is unset or ends up empty."""
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        print("warm_kernels: NUMBA_CACHE_DIR is not set", file=sys.stderr)
        return 1
    warm()
    indexes = sorted(Path(cache).rglob("*.nbi"))
    if not indexes:
        print(f"warm_kernels: nothing was cached under {cache}", file=sys.stderr)
        return 1
    print(f"warm_kernels: {len(indexes)} kernels cached under {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
