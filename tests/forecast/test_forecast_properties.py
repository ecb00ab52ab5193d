"""Property: any finite non-negative counts (with holes) give the planner a usable distribution."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.forecast.models import DemandForecaster, fit_many

BUCKET = 30
counts = st.one_of(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), st.just(math.nan), st.just(0.0))
seasons = st.sampled_from([(), (4,), (3, 7), (12,)])


def _check(fc: DemandForecaster, now: float) -> None:
    f = fc.forecast(now=now)
    if not f.valid:
        assert f.note
        return
    assert f.rate_mean.shape == (fc.horizon_buckets,)
    assert np.all(np.isfinite(f.rate_mean))
    assert np.all(f.rate_mean >= 0.0)
    assert np.all(np.isfinite(f.rate_quantiles))
    assert np.all(f.rate_quantiles >= 0.0)
    assert np.all(np.diff(f.rate_quantiles, axis=0) >= 0.0), "quantiles sorted by level"
    assert math.isfinite(f.mean_prompt_tokens)
    assert f.mean_prompt_tokens >= 0.0
    assert math.isfinite(f.mean_output_tokens)
    assert f.mean_output_tokens >= 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(counts, min_size=1, max_size=60),
    online=st.lists(st.tuples(st.integers(min_value=1, max_value=4), counts), max_size=30),
    season=seasons,
    horizon=st.integers(min_value=1, max_value=20),
)
def test_any_non_negative_series_gives_finite_sorted_non_negative_forecasts(
    history: list[float], online: list[tuple[int, float]], season: tuple[int, ...], horizon: int
) -> None:
    fc = DemandForecaster(
        bucket_seconds=BUCKET, horizon_buckets=horizon, season_buckets=season, min_buckets=1
    )
    reqs = np.array(history)
    fc.seed(start=0.0, requests=reqs, prompt_tokens=reqs * 3, output_tokens=reqs / 2)
    _check(fc, len(history) * BUCKET)
    k = len(history) - 1
    for skip, y in online:  # skip > 1 leaves a gap of missing buckets
        k += skip
        fc.observe(bucket_start=k * BUCKET, requests=y, prompt_tokens=y * 3, output_tokens=y / 2)
        _check(fc, (k + 1) * BUCKET + 0.5 * BUCKET)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(counts, min_size=30, max_size=30), min_size=1, max_size=4), season=seasons)
def test_fit_many_always_returns_params_inside_the_stable_box(
    rows: list[list[float]], season: tuple[int, ...]
) -> None:
    for p in fit_many(np.array(rows), season_buckets=season):
        assert 0.0 < p.alpha < 1.0
        assert 0.0 <= p.beta <= 1.0
        assert 0.0 <= p.gamma < 1.0
        assert 0.0 < p.phi < 1.0
