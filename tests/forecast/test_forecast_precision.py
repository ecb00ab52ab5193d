"""Float32 history: forecasts match a forecaster storing float64, and version-1 checkpoints still load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.core.policy import ModelPolicy
from scaler.core.types import DemandForecast
from scaler.forecast.models import DemandForecaster

FIXTURES = Path(__file__).parent / "fixtures"
BUCKET = 60


def _stored_as_float64(fc: DemandForecaster) -> DemandForecaster:
    """Return ``fc`` holding its history, profiles and residuals in float64 (as version 1 did)."""
    fc.seas = fc.seas.astype(np.float64)  # type: ignore[assignment]
    fc.res = fc.res.astype(np.float64)  # type: ignore[assignment]
    fc.hist = fc.hist.astype(np.float64)  # type: ignore[assignment]
    return fc


def _close(a: DemandForecast, b: DemandForecast, *, rtol: float) -> None:
    assert a.valid == b.valid
    if not a.valid:
        return
    assert a.start == b.start
    scale = max(float(np.max(b.rate_quantiles)), 1.0 / BUCKET)  # a rate of one request per bucket
    np.testing.assert_allclose(a.rate_mean, b.rate_mean, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(a.rate_quantiles, b.rate_quantiles, rtol=rtol, atol=rtol * scale)
    for x, y in ((a.mean_prompt_tokens, b.mean_prompt_tokens), (a.mean_output_tokens, b.mean_output_tokens)):
        assert math.isclose(x, y, rel_tol=rtol, abs_tol=rtol)


counts = st.one_of(st.integers(min_value=0, max_value=5000).map(float), st.just(math.nan))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(counts, min_size=1, max_size=80),
    online=st.lists(st.tuples(st.integers(min_value=1, max_value=3), counts), max_size=20),
    season=st.sampled_from([(), (4,), (3, 7), (12,)]),
    tokens=st.integers(min_value=1, max_value=20_000),
)
def test_float32_history_forecasts_as_float64_history_does(
    history: list[float], online: list[tuple[int, float]], season: tuple[int, ...], tokens: int
) -> None:
    def make() -> DemandForecaster:
        return DemandForecaster(
            bucket_seconds=BUCKET, horizon_buckets=6, season_buckets=season, min_buckets=1
        )

    ours, wide = make(), _stored_as_float64(make())
    reqs = np.array(history)
    for fc in (ours, wide):
        fc.seed(start=0.0, requests=reqs, prompt_tokens=reqs * tokens, output_tokens=reqs * 7)
    _close(ours.forecast(now=len(history) * BUCKET), wide.forecast(now=len(history) * BUCKET), rtol=1e-4)
    k = len(history) - 1
    for skip, y in online:
        k += skip
        for fc in (ours, wide):
            fc.observe(bucket_start=k * BUCKET, requests=y, prompt_tokens=y * tokens, output_tokens=y * 7)
        _close(ours.forecast(now=(k + 1.5) * BUCKET), wide.forecast(now=(k + 1.5) * BUCKET), rtol=1e-4)


def test_default_policy_over_days_of_large_token_counts_matches_float64() -> None:
    """Three days of one-minute buckets, token sums beyond float32's exact integers, a refit on the way."""
    rng = np.random.default_rng(4)
    n = 3 * 1440 + 200
    t = np.arange(n)
    reqs = rng.poisson(20_000 + 12_000 * np.sin(2 * np.pi * t / 1440)).astype(np.float64)
    prompt = reqs * rng.uniform(1500, 2500, n).round()  # ~4e7 tokens a minute: not exact in float32
    output = reqs * rng.uniform(200, 400, n).round()
    policy = ModelPolicy(name="big")
    ours = DemandForecaster.from_policy(policy)
    wide = _stored_as_float64(DemandForecaster.from_policy(policy))
    seeded = 2 * 1440
    for fc in (ours, wide):
        fc.seed(
            start=0.0, requests=reqs[:seeded], prompt_tokens=prompt[:seeded], output_tokens=output[:seeded]
        )
    for k in range(seeded, n):
        for fc in (ours, wide):
            fc.observe(
                bucket_start=k * BUCKET, requests=reqs[k], prompt_tokens=prompt[k], output_tokens=output[k]
            )
        if k % 97 == 0 or k == n - 1:
            _close(ours.forecast(now=(k + 1) * BUCKET), wide.forecast(now=(k + 1) * BUCKET), rtol=1e-5)


def test_version_1_checkpoint_loads_and_forecasts_as_the_version_1_code_did() -> None:
    """The fixture was written by the version-1 forecaster (commit 7ca4a4d) with the forecasts it gave.

    It is the checkpoint tests' ``_trained()`` forecaster: seasons of 12 and 36 buckets, noisy counts, gaps.
    """
    data = (FIXTURES / "forecaster-v1.ckpt").read_bytes()
    expected = json.loads((FIXTURES / "forecaster-v1.json").read_text())
    restored = DemandForecaster.from_bytes(data)
    for case in expected.values():
        f = restored.forecast(now=case["now"])
        assert f.valid
        assert f.start == case["start"]
        np.testing.assert_allclose(f.rate_mean, case["rate_mean"], rtol=1e-5)
        np.testing.assert_allclose(f.rate_quantiles, case["rate_quantiles"], rtol=1e-5)
        assert math.isclose(f.mean_prompt_tokens, case["mean_prompt_tokens"], rel_tol=1e-5)
        assert math.isclose(f.mean_output_tokens, case["mean_output_tokens"], rel_tol=1e-5)
    resaved = DemandForecaster.from_bytes(restored.to_bytes())  # now written as the current version
    now = expected["later"]["now"]
    np.testing.assert_array_equal(
        resaved.forecast(now=now).rate_quantiles, restored.forecast(now=now).rate_quantiles
    )


def test_a_checkpoint_of_the_default_policy_is_half_the_size_it_was() -> None:
    fc = DemandForecaster.from_policy(ModelPolicy(name="m"))
    for k in range(3000):
        fc.observe(bucket_start=k * BUCKET, requests=k % 50, prompt_tokens=k % 50 * 900, output_tokens=k % 7)
    size = len(fc.to_bytes())
    float64_bytes = 8 * (3 * 3000 + 3 * 1440 + 3 * 256)  # hist, seas, res as version 1 wrote them
    assert size < 0.55 * float64_bytes
