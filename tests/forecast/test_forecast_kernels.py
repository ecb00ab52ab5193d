"""Kernel building blocks: season initialisation from history and gap filling."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.forecast import kernels


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([np.nan, 1.0, np.nan, 3.0], [2.0, 1.0, 2.0, 3.0]),  # interpolates across the wrap-around too
        ([5.0, np.nan, np.nan, np.nan], [5.0, 5.0, 5.0, 5.0]),
        ([0.0, np.nan, 6.0, np.nan, np.nan, np.nan], [0.0, 3.0, 6.0, 4.5, 3.0, 1.5]),
        ([np.nan, np.nan], [0.0, 0.0]),
        ([1.0, 2.0], [1.0, 2.0]),
    ],
)
def test_fill_circular(given: list[float], expected: list[float]) -> None:
    v = np.array(given)
    kernels._fill_circular(v)
    np.testing.assert_allclose(v, expected)


@pytest.mark.parametrize("slope", [0.0, 0.5, -0.2])
def test_start_recovers_the_seasonal_profile_under_a_trend(slope: float) -> None:
    m = 12
    t = np.arange(6 * m)
    shape = np.sin(2 * np.pi * np.arange(m) / m) * 10
    y = 100 + slope * t + shape[t % m]
    st = np.zeros(kernels.N_STATE)
    seas = np.zeros(m)
    kernels.start(y, m, 0, st, seas)
    assert st[kernels.READY1] == 1.0
    np.testing.assert_allclose(seas, shape - shape.mean(), atol=0.6)


def test_start_leaves_a_season_without_a_complete_cycle_to_the_online_path() -> None:
    st = np.zeros(kernels.N_STATE)
    seas = np.zeros(12 + 40)
    kernels.start(np.arange(30.0), 12, 40, st, seas)
    assert st[kernels.READY1] == 1.0
    assert st[kernels.READY2] == 0.0


def test_missing_bucket_advances_the_damped_trend_without_correction() -> None:
    st = np.zeros(kernels.N_STATE)
    seas = np.zeros(0)
    res = np.zeros(4)
    for y in (10.0, 12.0, 14.0):
        kernels.step(y, 0.5, 0.5, 0.0, 0.9, 0, 0, st, seas, res)
    level, trend = st[kernels.LEVEL], st[kernels.TREND]
    err = kernels.step(np.nan, 0.5, 0.5, 0.0, 0.9, 0, 0, st, seas, res)
    assert np.isnan(err)
    assert st[kernels.LEVEL] == pytest.approx(level + 0.9 * trend)
    assert st[kernels.TREND] == pytest.approx(0.9 * trend)
    assert st[kernels.RES_COUNT] == 2.0  # only real errors are kept (the first bucket sets the level)
