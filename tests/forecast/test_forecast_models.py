"""DemandForecaster as timelines: feed buckets, ask for a forecast, check what a planner would see."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaler.core.policy import Forecast, ModelPolicy
from scaler.forecast.models import DEFAULT_LEVELS, DemandForecaster

BUCKET = 60
PERIOD = 24


def _wave(t: np.ndarray, *, base: float = 100.0, amp: float = 40.0) -> np.ndarray:
    return base + amp * np.sin(2 * np.pi * t / PERIOD)


def _make(*, horizon: int = 6, seasons: tuple[int, ...] = (PERIOD,)) -> DemandForecaster:
    return DemandForecaster(bucket_seconds=BUCKET, horizon_buckets=horizon, season_buckets=seasons)


def _observe_all(fc: DemandForecaster, reqs: np.ndarray, *, first: int = 0) -> None:
    for k, r in enumerate(reqs, start=first):
        if not math.isnan(r):
            fc.observe(bucket_start=k * BUCKET, requests=r, prompt_tokens=100 * r, output_tokens=20 * r)


def _seed(fc: DemandForecaster, reqs: np.ndarray) -> None:
    fc.seed(start=0.0, requests=reqs, prompt_tokens=100 * reqs, output_tokens=20 * reqs)


def _counts(fc: DemandForecaster, now: float) -> np.ndarray:
    f = fc.forecast(now=now)
    assert f.valid, f.note
    return f.rate_mean * BUCKET


def test_pure_seasonal_series_is_learned_online_after_two_seasons() -> None:
    fc = _make(horizon=PERIOD)
    n = 3 * PERIOD
    _observe_all(fc, _wave(np.arange(n)))
    got = _counts(fc, n * BUCKET)
    want = _wave(np.arange(n, n + PERIOD))
    assert np.max(np.abs(got - want)) < 0.05 * 40  # within 5 % of the amplitude, over a whole season


def test_seeded_seasonal_series_with_noise_forecasts_the_shape() -> None:
    rng = np.random.default_rng(3)
    n = 10 * PERIOD
    fc = _make(horizon=PERIOD)
    _seed(fc, _wave(np.arange(n)) + rng.normal(0, 4, n))
    got = _counts(fc, n * BUCKET)
    want = _wave(np.arange(n, n + PERIOD))
    assert np.mean(np.abs(got - want)) < 4.0
    assert np.corrcoef(got, want)[0, 1] > 0.95


def test_level_shift_is_followed() -> None:
    fc = _make(seasons=())
    _seed(fc, np.full(200, 100.0))
    _observe_all(fc, np.full(15, 300.0), first=200)
    got = _counts(fc, 215 * BUCKET)
    assert np.all(np.abs(got - 300.0) < 10.0)


def test_level_shift_in_noise_is_followed_once_refitted() -> None:
    rng = np.random.default_rng(4)
    fc = _make(seasons=())
    _seed(fc, 100.0 + rng.normal(0, 5, 200))
    n = fc.refit_every + 10
    _observe_all(fc, 300.0 + rng.normal(0, 5, n), first=200)
    got = _counts(fc, (200 + n) * BUCKET)
    assert np.all(np.abs(got - 300.0) < 15.0)


def test_damped_trend_does_not_explode() -> None:
    fc = _make(seasons=(), horizon=2000)
    slope = 2.0
    _seed(fc, 50 + slope * np.arange(300))
    got = _counts(fc, 300 * BUCKET)
    last = 50 + slope * 299
    steps = np.diff(got)
    assert got[0] > last, "an upward trend is extrapolated"
    assert np.all(steps >= -1e-9)
    assert np.all(np.diff(steps) <= 1e-9), "increments shrink: the trend is damped"
    assert got[-1] < last + slope * 200, "phi <= 0.995 bounds the sum of the trend"


def test_nan_gaps_in_history_do_not_break_or_bias_the_forecast() -> None:
    rng = np.random.default_rng(11)
    n = 8 * PERIOD
    clean = _wave(np.arange(n)) + rng.normal(0, 2, n)
    holed = clean.copy()
    holed[rng.random(n) < 0.25] = np.nan
    holed[5 * PERIOD : 5 * PERIOD + 10] = np.nan  # and one long hole
    fc = _make(horizon=PERIOD)
    _seed(fc, holed)
    got = _counts(fc, n * BUCKET)
    want = _wave(np.arange(n, n + PERIOD))
    assert abs(np.mean(got - want)) < 3.0, "no bias"
    assert np.mean(np.abs(got - want)) < 5.0


def test_skipped_buckets_in_observe_count_as_missing() -> None:
    n = 6 * PERIOD
    series = _wave(np.arange(n))
    series[np.arange(n) % 5 == 2] = np.nan  # _observe_all skips these buckets entirely
    fc = _make(horizon=PERIOD)
    _observe_all(fc, series)
    got = _counts(fc, n * BUCKET)
    want = _wave(np.arange(n, n + PERIOD))
    assert np.max(np.abs(got - want)) < 0.1 * 40
    assert fc.observed_buckets == int(np.count_nonzero(~np.isnan(series)))


def test_series_shorter_than_a_season_gives_a_sane_forecast() -> None:
    fc = _make(seasons=(PERIOD, 7 * PERIOD), horizon=3 * PERIOD)
    _seed(fc, np.array([10.0, 12.0, 9.0, 11.0, 10.0]))
    got = _counts(fc, 5 * BUCKET)
    assert np.all(np.isfinite(got))
    assert np.all((got > 5.0) & (got < 15.0))


def test_forecast_never_negative_on_a_falling_series() -> None:
    fc = _make(seasons=())
    _seed(fc, np.maximum(200.0 - 10.0 * np.arange(40), 0.0))
    f = fc.forecast(now=40 * BUCKET)
    assert np.all(f.rate_mean >= 0.0)
    assert np.all(f.rate_quantiles >= 0.0)


def test_quantiles_are_sorted_and_p90_is_calibrated_on_gaussian_noise() -> None:
    rng = np.random.default_rng(2024)
    fc = _make(seasons=(), horizon=1)
    _seed(fc, 1000.0 + rng.normal(0, 30, 300))
    levels = list(fc.levels)
    k10, k50, k90 = levels.index(0.1), levels.index(0.5), levels.index(0.9)
    hits = np.zeros(3)
    n = 2000
    for k in range(300, 300 + n):
        f = fc.forecast(now=k * BUCKET)
        q = f.rate_quantiles[:, 0] * BUCKET
        assert np.all(np.diff(q) >= 0.0)
        y = 1000.0 + rng.normal(0, 30)
        hits += y <= q[[k10, k50, k90]]
        fc.observe(bucket_start=k * BUCKET, requests=y, prompt_tokens=y, output_tokens=y)
    cover = hits / n
    assert 0.05 <= cover[0] <= 0.15
    assert 0.45 <= cover[1] <= 0.55
    assert 0.85 <= cover[2] <= 0.95


def test_quantile_band_widens_with_the_horizon() -> None:
    rng = np.random.default_rng(5)
    fc = _make(seasons=(), horizon=12)
    _seed(fc, 500 + np.cumsum(rng.normal(0, 5, 300)))
    f = fc.forecast(now=300 * BUCKET)
    k05, k95 = list(f.levels).index(0.05), list(f.levels).index(0.95)
    width = f.rate_quantiles[k95] - f.rate_quantiles[k05]
    assert width[-1] > width[0]


def test_seed_equals_observing_one_by_one_then_rebuild() -> None:
    rng = np.random.default_rng(9)
    n = 3 * PERIOD + 5
    reqs = _wave(np.arange(n)) + rng.normal(0, 3, n)
    reqs[[4, 30, 31, 50]] = np.nan
    seeded = _make(horizon=10)
    _seed(seeded, reqs)
    online = _make(horizon=10)
    _observe_all(online, reqs)
    online.rebuild()
    for now in (n * BUCKET, (n + 3.5) * BUCKET):
        a, b = seeded.forecast(now=now), online.forecast(now=now)
        np.testing.assert_array_equal(a.rate_mean, b.rate_mean)
        np.testing.assert_array_equal(a.rate_quantiles, b.rate_quantiles)
        assert a.mean_prompt_tokens == b.mean_prompt_tokens


def test_forecast_starts_at_the_bucket_containing_now_but_never_before_the_next_unobserved() -> None:
    fc = _make(seasons=(), horizon=4)
    _seed(fc, np.full(20, 60.0))  # buckets 0..19 observed
    assert fc.forecast(now=19.5 * BUCKET).start == 20 * BUCKET
    assert fc.forecast(now=20.0 * BUCKET).start == 20 * BUCKET
    f = fc.forecast(now=23.2 * BUCKET)
    assert f.start == 23 * BUCKET
    assert f.bucket_seconds == BUCKET
    assert f.horizon_seconds == 4 * BUCKET
    np.testing.assert_allclose(f.rate_mean, 1.0, rtol=1e-6)  # 60 requests per 60 s bucket


def test_tokens_per_request_come_from_the_token_series() -> None:
    fc = _make(seasons=())
    _seed(fc, np.full(50, 30.0))
    f = fc.forecast(now=50 * BUCKET)
    assert f.mean_prompt_tokens == pytest.approx(100.0)
    assert f.mean_output_tokens == pytest.approx(20.0)


def test_tokens_fall_back_to_recent_means_when_no_requests_are_forecast() -> None:
    fc = _make(seasons=())
    reqs = np.concatenate([np.full(30, 10.0), np.zeros(30)])
    fc.seed(start=0.0, requests=reqs, prompt_tokens=reqs * 50, output_tokens=reqs * 5)
    f = fc.forecast(now=60 * BUCKET)
    assert f.valid
    assert np.all(f.rate_mean < 0.05)
    assert f.mean_prompt_tokens >= 0.0
    assert f.mean_output_tokens >= 0.0


@pytest.mark.parametrize(
    ("observed", "now_bucket", "note"),
    [
        (0, 0, "0 buckets observed"),
        (2, 2, "2 buckets observed, need 3"),
        (10, 10 + 2 * 6 + 1, "stale"),
    ],
)
def test_unusable_forecasts_say_why(observed: int, now_bucket: int, note: str) -> None:
    fc = _make(seasons=())
    _observe_all(fc, np.full(observed, 5.0))
    f = fc.forecast(now=now_bucket * BUCKET)
    assert not f.valid
    assert note in f.note


def test_just_before_stale_is_still_valid() -> None:
    fc = _make(seasons=())
    _observe_all(fc, np.full(10, 5.0))
    assert fc.forecast(now=(10 + 2 * 6) * BUCKET).valid


def test_replayed_bucket_is_ignored() -> None:
    fc = _make(seasons=())
    _observe_all(fc, np.full(10, 5.0))
    before = fc.forecast(now=10 * BUCKET)
    fc.observe(bucket_start=9 * BUCKET, requests=500.0, prompt_tokens=1.0, output_tokens=1.0)
    fc.observe(bucket_start=3 * BUCKET, requests=500.0, prompt_tokens=1.0, output_tokens=1.0)
    after = fc.forecast(now=10 * BUCKET)
    np.testing.assert_array_equal(before.rate_mean, after.rate_mean)
    assert fc.observed_buckets == 10


def test_gap_longer_than_the_history_restarts_cleanly() -> None:
    fc = _make(seasons=(), horizon=3)
    _observe_all(fc, np.full(20, 5.0))
    far = 20 + 10 * fc.capacity
    _observe_all(fc, np.full(5, 50.0), first=far)
    got = _counts(fc, (far + 5) * BUCKET)
    assert np.all(np.abs(got - 50.0) < 5.0)


def test_periodic_refit_keeps_forecasting() -> None:
    rng = np.random.default_rng(1)
    fc = _make(horizon=PERIOD)
    n = fc.refit_every * 3 + 7
    _observe_all(fc, _wave(np.arange(n)) + rng.normal(0, 2, n))
    assert fc.since_fit < fc.refit_every
    got = _counts(fc, n * BUCKET)
    assert np.mean(np.abs(got - _wave(np.arange(n, n + PERIOD)))) < 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": -1.0}, "requests"),
        ({"prompt_tokens": math.inf}, "prompt_tokens"),
        ({"bucket_start": math.nan}, "bucket_start"),
    ],
)
def test_bad_observation_is_rejected_with_its_name(kwargs: dict[str, float], message: str) -> None:
    fc = _make()
    args = {"bucket_start": 0.0, "requests": 1.0, "prompt_tokens": 1.0, "output_tokens": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        fc.observe(**args)


def test_bad_seed_names_the_array_and_index() -> None:
    fc = _make()
    with pytest.raises(ValueError, match=r"output_tokens\[2\]"):
        fc.seed(
            start=0.0, requests=np.ones(4), prompt_tokens=np.ones(4), output_tokens=np.array([1, 1, -3, 1])
        )
    with pytest.raises(ValueError, match="same non-zero length"):
        fc.seed(start=0.0, requests=np.ones(4), prompt_tokens=np.ones(3), output_tokens=np.ones(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket_seconds": 0}, "bucket_seconds"),
        ({"horizon_buckets": 0}, "horizon_buckets"),
        ({"levels": (0.5, 0.2)}, "levels"),
        ({"levels": (0.0, 0.5)}, "levels"),
        ({"season_buckets": (1,)}, "season"),
        ({"min_buckets": 0}, "min_buckets"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"bucket_seconds": 60, "horizon_buckets": 5, "season_buckets": (), **kwargs}
    with pytest.raises(ValueError, match=message):
        DemandForecaster(**args)  # type: ignore[arg-type]


def test_from_policy_maps_bucket_horizon_and_seasons() -> None:
    policy = ModelPolicy(
        name="llama",
        forecast=Forecast(bucket_seconds=60, horizon_seconds=1830, seasonalities_seconds=[90, 86_400]),
    )
    fc = DemandForecaster.from_policy(policy)
    assert fc.bucket_seconds == 60
    assert fc.horizon_buckets == 31
    assert fc.season_buckets == (1440,)  # 90 s is under two buckets: dropped
    assert tuple(fc.levels) == DEFAULT_LEVELS


def test_a_policy_forecaster_is_usable_after_one_bucket() -> None:
    # A model that starts taking traffic must get provisioned capacity after one bucket, not three.
    fc = DemandForecaster.from_policy(ModelPolicy.model_validate({"name": "m"}))
    assert not fc.forecast(now=30.0).valid
    fc.observe(bucket_start=0.0, requests=600.0, prompt_tokens=600_000.0, output_tokens=120_000.0)
    f = fc.forecast(now=61.0)
    assert f.valid
    assert f.rate_mean[0] == pytest.approx(10.0, rel=0.05)  # 600 requests in a 60 s bucket
    assert f.rate_quantiles[-1, 0] > f.rate_mean[0] > f.rate_quantiles[0, 0]
    assert (f.mean_prompt_tokens, f.mean_output_tokens) == pytest.approx((1000.0, 200.0))


def _fed(counts: np.ndarray) -> DemandForecaster:
    fc = DemandForecaster(bucket_seconds=60, horizon_buckets=5, season_buckets=[])
    for i, n in enumerate(counts):
        fc.observe(
            bucket_start=60.0 * i, requests=float(n), prompt_tokens=1000.0 * n, output_tokens=200.0 * n
        )
    return fc


def test_one_burst_does_not_pin_the_upper_quantiles_at_its_size() -> None:
    # 60 calm buckets, one 10x burst, 30 calm buckets: a single residual is no evidence for a 1% tail.
    rng = np.random.default_rng(3)
    counts = np.concatenate([rng.poisson(600, 60), [6000], rng.poisson(600, 30)])
    f = _fed(counts).forecast(now=60.0 * counts.size)
    p99 = f.rate_quantiles[list(DEFAULT_LEVELS).index(0.99), 0]
    assert p99 < 1.5 * f.rate_mean[0]
    assert p99 > f.rate_mean[0]


def test_frequent_bursts_do_widen_the_upper_quantiles() -> None:
    # One bucket in ten at 3x: the p95 must see them (enough residuals support it).
    rng = np.random.default_rng(4)
    counts = rng.poisson(600, 200).astype(float)
    counts[::10] *= 3.0
    f = _fed(counts).forecast(now=60.0 * counts.size)
    p95 = f.rate_quantiles[list(DEFAULT_LEVELS).index(0.95), 0]
    assert p95 > 1.5 * f.rate_mean[0]
