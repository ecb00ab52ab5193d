"""fit_many: one batch call fits each series as if alone, and the params suit the series."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.forecast.models import HWParams, fit_many, split_seasons


def _seasonal(n: int, *, period: int, base: float, amp: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return base + amp * np.sin(2 * np.pi * t / period) + rng.normal(0.0, noise, n)


def test_batch_fit_equals_fitting_each_series_alone() -> None:
    rows = [
        _seasonal(200, period=24, base=100, amp=40, noise=3, seed=1),
        _seasonal(200, period=24, base=5, amp=4, noise=2, seed=2),
        np.linspace(10, 60, 200),
        np.where(
            np.arange(200) % 7 == 0, np.nan, _seasonal(200, period=24, base=50, amp=10, noise=5, seed=3)
        ),
    ]
    batch = fit_many(np.vstack(rows), season_buckets=[24])
    alone = [fit_many(r[None, :], season_buckets=[24])[0] for r in rows]
    assert batch == alone
    assert len({(p.alpha, p.gamma) for p in batch}) > 1, "different series should get different params"


def test_params_stay_in_the_search_box() -> None:
    rows = np.vstack([_seasonal(150, period=12, base=20, amp=s, noise=1, seed=s) for s in range(5)])
    for p in fit_many(rows, season_buckets=[12]):
        assert 0.0 < p.alpha < 1.0
        assert 0.0 <= p.beta <= 1.0
        assert 0.0 <= p.gamma < 1.0
        assert 0.0 < p.phi < 1.0


def test_noisy_flat_series_gets_low_alpha_and_random_walk_gets_high_alpha() -> None:
    rng = np.random.default_rng(7)
    flat = 100 + rng.normal(0, 10, 400)
    walk = 100 + np.cumsum(rng.normal(0, 10, 400)) + 500
    p_flat, p_walk = fit_many(np.vstack([flat, walk]), season_buckets=[])
    assert p_flat.alpha < 0.2
    assert p_walk.alpha > 0.6


def test_too_few_observations_fall_back_to_defaults() -> None:
    rows = np.array([[np.nan, 1.0, np.nan, 2.0, np.nan]])
    (p,) = fit_many(rows, season_buckets=[])
    assert isinstance(p, HWParams)
    assert 0 < p.alpha < 1


@pytest.mark.parametrize(
    ("series", "seasons", "message"),
    [
        (np.ones(10), [], "shape"),
        (np.array([[1.0, np.inf, 2.0]]), [], "infinite"),
        (np.ones((1, 10)), [1], "at least 2"),
        (np.ones((1, 10)), [4, 4], "duplicate"),
        (np.ones((1, 10)), [2, 3, 4], "at most two"),
    ],
)
def test_bad_input_is_named(series: np.ndarray, seasons: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_many(series, season_buckets=seasons)


@pytest.mark.parametrize(
    ("seasons", "expected"),
    [([], (0, 0)), ([24], (24, 0)), ([168, 24], (24, 168))],
)
def test_split_seasons_orders_short_then_long(seasons: list[int], expected: tuple[int, int]) -> None:
    assert split_seasons(seasons) == expected
