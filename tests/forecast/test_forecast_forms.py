"""The form choice: seasons are dropped where day-to-day shifts drown them, kept where they hold."""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from scaler.forecast import checkpoint
from scaler.forecast.models import DemandForecaster

BUCKET = 60
DAY = 48  # buckets per "day" (a short season keeps the tests quick)
HORIZON = 6


def _shifting(days: int, seed: int) -> np.ndarray:
    """Return a series whose level jumps at random times and whose daily shape is new every day."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    level = np.repeat(rng.uniform(200.0, 1200.0, n // 12), 12)[:n]
    shape = np.concatenate([rng.normal(0.0, 150.0, DAY) for _ in range(days)])
    return np.asarray(np.maximum(rng.poisson(np.maximum(level + shape, 1.0)), 0).astype(np.float64))


def _seasonal(days: int, seed: int) -> np.ndarray:
    """Return a steady daily wave with Poisson noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    return np.asarray(rng.poisson(400.0 + 300.0 * np.sin(2 * np.pi * t / DAY)).astype(np.float64))


def _online(y: np.ndarray, fc: DemandForecaster | None = None) -> tuple[DemandForecaster, float]:
    """Feed ``y`` bucket by bucket into ``fc`` (default: a cold forecaster); return it and its mean absolute
    error over the horizon on the last two days."""
    if fc is None:
        fc = DemandForecaster(
            bucket_seconds=BUCKET, horizon_buckets=HORIZON, season_buckets=[DAY], min_buckets=1
        )
    errors = []
    for k, v in enumerate(y):
        if k >= max(1, y.size - 2 * DAY) and k + HORIZON <= y.size:
            f = fc.forecast(now=k * BUCKET)
            errors.append(float(np.mean(np.abs(f.rate_mean * BUCKET - y[k : k + HORIZON]))))
        fc.observe(bucket_start=k * BUCKET, requests=v, prompt_tokens=v * 100, output_tokens=v * 10)
    return fc, float(np.mean(errors))


def test_a_cold_forecaster_drops_a_daily_shape_that_never_repeats() -> None:
    y = _shifting(days=8, seed=1)
    fc, err = _online(y)
    assert fc.params[0, 4] == 0.0, "the level model should have replaced the seasons"
    forced = DemandForecaster(bucket_seconds=BUCKET, horizon_buckets=HORIZON, season_buckets=[DAY])
    forced.refit_every = 10**9  # never refits: keeps the seasons it learned in the first cycle
    _, forced_err = _online(y, forced)
    assert err < 0.9 * forced_err


def test_a_steady_daily_wave_keeps_its_seasons_online_and_seeded() -> None:
    y = _seasonal(days=6, seed=2)
    fc, err = _online(y)
    assert fc.params[0, 4] == 1.0
    assert err < 0.2 * 300.0  # well inside the wave's amplitude
    seeded = DemandForecaster(bucket_seconds=BUCKET, horizon_buckets=HORIZON, season_buckets=[DAY])
    seeded.seed(start=0.0, requests=y, prompt_tokens=y * 100, output_tokens=y * 10)
    assert seeded.params[0, 4] == 1.0


def test_the_choice_waits_for_a_cycle_it_was_not_initialised_from() -> None:
    y = _shifting(days=1, seed=3)
    fc, _ = _online(np.concatenate([y, y[:HORIZON]]))  # one cycle and a few buckets: nothing to judge on
    assert fc.params[0, 4] == 1.0


def test_a_level_model_survives_a_checkpoint_and_a_version_2_checkpoint_loads_seasonal() -> None:
    y = _shifting(days=4, seed=4)
    fc = DemandForecaster(bucket_seconds=BUCKET, horizon_buckets=HORIZON, season_buckets=[DAY])
    fc.seed(start=0.0, requests=y, prompt_tokens=y * 100, output_tokens=y * 10)
    assert fc.params[0, 4] == 0.0
    restored = DemandForecaster.from_bytes(fc.to_bytes())
    now = y.size * BUCKET
    np.testing.assert_array_equal(restored.forecast(now=now).rate_mean, fc.forecast(now=now).rate_mean)

    # The same state written as version 2 (params without the form flag) loads with the seasons on.
    data = fc.to_bytes()
    at = len(checkpoint.MAGIC)
    (size,) = struct.unpack(">I", data[at : at + 4])
    header = json.loads(data[at + 4 : at + 4 + size])
    with np.load(io.BytesIO(data[at + 4 + size :]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["params"] = arrays["params"][:, :4]
    header["version"] = 2
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = json.dumps(header).encode()
    old = DemandForecaster.from_bytes(checkpoint.MAGIC + struct.pack(">I", len(raw)) + raw + buf.getvalue())
    np.testing.assert_array_equal(old.params[:, 4], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(old.params[:, :4], fc.params[:, :4])
    assert old.forecast(now=now).valid
