"""Synthetic scenarios: reproducible per seed, and each has the shape it claims."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.sim.synthetic import (
    DEFAULT_DURATIONS,
    MIXED_AT,
    REPLICA_RATE,
    SCENARIOS,
    default_scenario,
    scenario_rate,
    synthetic,
)
from scaler.sim.workload import Workload


def per_minute(workload: Workload) -> np.ndarray:
    """Return requests/s averaged over each minute."""
    edges = np.arange(0.0, workload.duration + 60.0, 60.0)
    return np.histogram(workload.arrivals, bins=edges)[0] / 60.0


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_repeat_per_seed_and_differ_across_seeds(name: str) -> None:
    first, again, other = synthetic(name, seed=1), synthetic(name, seed=1), synthetic(name, seed=2)
    assert np.array_equal(first.arrivals, again.arrivals)
    assert np.array_equal(first.output_tokens, again.output_tokens)
    assert first.requests != other.requests or not np.array_equal(first.arrivals, other.arrivals)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_are_sorted_requests_inside_their_duration(name: str) -> None:
    workload = synthetic(name, seed=0)
    assert workload.duration == DEFAULT_DURATIONS[name]
    assert np.all(np.diff(workload.arrivals) >= 0)
    assert workload.arrivals[0] >= 0.0
    assert workload.arrivals[-1] < workload.duration
    assert workload.name == f"synthetic:{name}"


def test_the_default_scenario_is_mixed_and_modest() -> None:
    assert default_scenario() == "mixed"
    workload = synthetic(default_scenario(), seed=0)
    assert 50_000 <= workload.requests <= 300_000
    assert workload.prompt_tokens.mean() == pytest.approx(1000, rel=0.03)
    assert workload.output_tokens.mean() == pytest.approx(200, rel=0.03)


def test_diurnal_swings_from_about_one_replica_at_night_to_several_at_midday() -> None:
    rate = per_minute(synthetic("diurnal", seed=0)) / REPLICA_RATE
    minutes = rate.shape[0]
    night = np.concatenate([rate[:10], rate[-10:]]).mean()
    midday = rate[minutes // 2 - 10 : minutes // 2 + 10].mean()
    assert 0.5 < night < 2.0
    assert 5.0 < midday < 10.0
    assert abs(int(np.argmax(rate)) - minutes // 2) < minutes // 6


def test_flash_crowd_bursts_five_to_ten_times_the_base_for_minutes() -> None:
    rate = per_minute(synthetic("flash-crowd", seed=0))
    base = np.median(rate)
    burst = rate > 3 * base
    assert 5.0 <= rate.max() / base <= 10.0
    assert 3 <= burst.sum() <= 10  # minutes above three times the base
    assert np.all(np.diff(np.flatnonzero(burst)) == 1)  # one contiguous burst


def test_sporadic_is_a_trickle_with_long_idle_gaps() -> None:
    workload = synthetic("sporadic", seed=0)
    assert 0 < workload.requests / workload.duration < REPLICA_RATE / 10
    assert np.diff(workload.arrivals).max() > 300.0


def test_ramp_climbs_from_low_to_high() -> None:
    rate = per_minute(synthetic("ramp", seed=0)) / REPLICA_RATE
    blocks = rate.reshape(12, -1).mean(axis=1)
    assert blocks[0] < 1.0
    assert blocks[-1] > 8.0
    assert np.all(np.diff(blocks) > 0)


def test_mixed_holds_a_flash_crowd_on_the_morning_rise() -> None:
    workload = synthetic("mixed", seed=0)
    rate = per_minute(workload)
    at = int(MIXED_AT * workload.duration / 60)
    before = rate[at - 10 : at].mean()
    assert rate[at : at + 6].max() > 4 * before
    diurnal = per_minute(synthetic("diurnal", seed=0))
    assert rate.max() > 1.5 * diurnal.max()


@pytest.mark.parametrize("name", ["diurnal", "ramp"])
def test_duration_stretches_the_shape(name: str) -> None:
    short, long = scenario_rate(name, duration=3600.0), scenario_rate(name, duration=7200.0)
    assert long.shape[0] == 2 * short.shape[0]
    assert long[::2] == pytest.approx(short, abs=0.01 * short.max())


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("weekly", {}, r"unknown scenario 'weekly'; choose one of diurnal, flash-crowd"),
        ("ramp", {"duration": 30.0}, "duration must be at least 600 s"),
        ("ramp", {"duration": float("inf")}, "duration must be at least 600 s"),
        ("ramp", {"seed": -3}, "seed must be non-negative"),
    ],
)
def test_bad_arguments_are_refused_by_name(name: str, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic(name, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(SCENARIOS), seed=st.integers(0, 2**32), duration=st.floats(600.0, 2400.0))
def test_any_scenario_length_gives_sorted_requests_inside_it(name: str, seed: int, duration: float) -> None:
    workload = synthetic(name, seed=seed, duration=duration)
    assert workload.duration == duration
    assert np.all(np.diff(workload.arrivals) >= 0)
    assert np.all((workload.arrivals >= 0) & (workload.arrivals < duration))
    assert np.all(scenario_rate(name, seed=seed, duration=duration) >= 0)
