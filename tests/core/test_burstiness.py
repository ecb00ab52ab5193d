"""The within-bucket burst factor: tables for one bucket, a timeline of buckets, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.core.burstiness import (
    MAX_FACTOR,
    MIN_PER_SLOT,
    MIN_SEEN,
    SLOTS,
    WINDOW,
    BurstFactor,
    bucket_factor,
    slot_count,
)


@pytest.mark.parametrize(
    ("requests", "peak", "expected"),
    [
        (600, 100, 1.0),  # spread evenly: no burst
        (600, 110, 1.0),  # within what Poisson arrivals reach in their busiest slot
        (600, 300, 300 / (100 + math.sqrt(2 * math.log(SLOTS) * 100))),  # half of it in one slot
        (600, 600, MAX_FACTOR),  # all in one slot: capped
        (MIN_PER_SLOT * SLOTS - 1, MIN_PER_SLOT * SLOTS - 1, None),  # too few to say
        (600, None, None),  # not counted by slot (restored from a checkpoint)
        (600, 601, None),  # a peak above the total is not one
    ],
)
def test_one_bucket(requests: int, peak: int | None, expected: float | None) -> None:
    found = bucket_factor(requests=requests, peak_slot=peak)
    assert found == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("bucket", "slots"), [(60, 6), (10, 5), (30, 6), (7, 1), (1, 1), (8, 4), (300, 6)]
)
def test_a_bucket_is_split_into_equal_slots_of_whole_seconds(bucket: int, slots: int) -> None:
    assert slot_count(bucket) == slots


def test_a_bucket_of_one_slot_says_nothing() -> None:
    assert bucket_factor(requests=1000, peak_slot=1000, slots=1) is None
    two = bucket_factor(requests=1000, peak_slot=900, slots=2)  # the Poisson bound follows the slot count
    assert two == pytest.approx(900 / (500 + math.sqrt(2 * math.log(2) * 500)))


def test_the_factor_is_the_median_of_recent_buckets_and_forgets_old_ones() -> None:
    learner = BurstFactor()
    for _ in range(MIN_SEEN - 1):
        learner.observe(requests=600, peak_slot=600)
    assert learner.factor == 1.0  # too few buckets yet
    learner.observe(requests=600, peak_slot=600)
    bursty = bucket_factor(requests=600, peak_slot=600)
    assert learner.factor == pytest.approx(bursty, rel=1e-6)
    for _ in range(WINDOW):  # an hour of steady traffic replaces the bursty hour
        learner.observe(requests=600, peak_slot=100)
    assert (learner.factor, learner.seen) == (1.0, WINDOW)
    learner.observe(requests=5, peak_slot=5)  # says nothing: not remembered
    assert learner.seen == WINDOW


def test_the_state_round_trips_and_bad_states_are_refused() -> None:
    learner = BurstFactor()
    for peak in (600, 300, 200, 150, 600, 400):
        learner.observe(requests=600, peak_slot=peak)
    again = BurstFactor.from_state(learner.to_state())
    assert (again.factor, again.to_state()) == (learner.factor, learner.to_state())
    for bad in ({"ratios": []}, [1.5] * (WINDOW + 1), ["2"], [True], [0.5], [MAX_FACTOR + 1], [math.nan]):
        with pytest.raises(ValueError, match="burstiness"):
            BurstFactor.from_state(bad)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=200))
def test_the_factor_stays_within_its_bounds(buckets: list[tuple[int, int]]) -> None:
    learner = BurstFactor()
    for requests, peak in buckets:
        learner.observe(requests=requests, peak_slot=peak)
        assert 1.0 <= learner.factor <= MAX_FACTOR
    assert BurstFactor.from_state(learner.to_state()).factor == learner.factor
