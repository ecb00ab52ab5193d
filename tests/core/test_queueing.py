"""Erlang C and SLO sizing: textbook values, stability for thousands of slots, monotonicity."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import queueing
from scaler.core.policy import ModelPolicy


def policy(**sections: Any) -> ModelPolicy:
    return ModelPolicy.model_validate({"name": "m", **sections})


def erlang_c_by_formula(c: int, a: float) -> float:
    """Erlang C from its closed form (sum of a^k/k!), an independent check for small c."""
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) * c / (c - a)
    return tail / (head + tail)


def erlang_b_full(c: int, a: float) -> float:
    """Erlang B by the plain recursion over every k (no shortcut), for large c."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


@pytest.mark.parametrize(
    ("c", "a", "expected"),
    [
        (1, 0.5, 0.5),  # M/M/1: P(wait) = utilisation
        (2, 1.0, 1 / 3),
        (5, 3.0, 0.2362),  # textbook table
        (10, 8.0, 0.4092),
    ],
)
def test_textbook_erlang_c_values(c: int, a: float, expected: float) -> None:
    assert queueing.wait_probability(c, a) == pytest.approx(expected, abs=5e-4)


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 60), rho=st.floats(0.01, 0.99))
def test_erlang_c_matches_closed_form(c: int, rho: float) -> None:
    a = rho * c
    assert queueing.wait_probability(c, a) == pytest.approx(erlang_c_by_formula(c, a), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("c", "a"), [(500, 480.0), (2000, 1900.0), (5000, 4850.0), (3000, 1500.0)])
def test_large_c_matches_full_recursion(c: int, a: float) -> None:
    b = erlang_b_full(c, a)
    expected = c * b / (c - a * (1 - b))
    got = queueing.wait_probability(c, a)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_saturated_and_empty_systems() -> None:
    assert queueing.wait_probability(4, 4.0) == 1.0
    assert queueing.wait_probability(4, 9.0) == 1.0
    assert queueing.wait_probability(4, 0.0) == 0.0
    assert queueing.wait_probability(0, 1.0) == 1.0
    assert queueing.prob_wait_exceeds(4, 5.0, 1.0, 10.0) == 1.0


def test_wait_vanishes_as_servers_grow_at_fixed_utilisation() -> None:
    probs = [queueing.wait_probability(c, 0.8 * c) for c in (10, 100, 1000, 4000)]
    assert all(later < earlier for earlier, later in itertools.pairwise(probs))
    assert probs[-1] < 1e-6


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 300), rho=st.floats(0.05, 0.98), t1=st.floats(0, 5), t2=st.floats(0, 5))
def test_more_slack_means_less_wait(c: int, rho: float, t1: float, t2: float) -> None:
    lo, hi = sorted((t1, t2))
    a = rho * c
    assert queueing.prob_wait_exceeds(c, a, 2.0, hi) <= queueing.prob_wait_exceeds(c, a, 2.0, lo)
    assert queueing.wait_probability(c + 1, a) <= queueing.wait_probability(c, a)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: queueing.wait_probability(-1, 1.0), "c >= 0"),
        (lambda: queueing.wait_probability(3, float("nan")), "offered_load"),
        (lambda: queueing.prob_wait_exceeds(3, 1.0, 0.0, 1.0), "service_time"),
        (lambda: queueing.instances_needed(-1.0, policy=policy(), mean_prompt=100, mean_output=10), "rate"),
    ],
)
def test_bad_input_names_the_argument(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_max_rate_meets_the_slo_and_no_more() -> None:
    p = policy()
    table = queueing.sizing_table(p, mean_prompt=1000, mean_output=200)
    hold = table.slots * table.work
    wait = queueing.wait_budget(p, mean_prompt=1000)
    eps = 1 - p.slo.attainment
    for n in (1, 2, 5, 16):
        rate = table.max_rate(n)
        c = n * table.slots
        assert queueing.prob_wait_exceeds(c, rate * hold, hold, wait) <= eps * (1 + 1e-6)
        assert queueing.prob_wait_exceeds(c, rate * 1.001 * hold, hold, wait) > eps


def test_max_rate_grows_with_instances_and_nears_full_use_at_scale() -> None:
    p = policy(bounds={"max_replicas": 64, "serverless_quota": 0, "max_standby": 0})
    rates = [queueing.max_rate(n, policy=p, mean_prompt=1000, mean_output=200) for n in range(0, 65)]
    assert rates[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(rates))
    work = queueing.work_seconds(p, mean_prompt=1000, mean_output=200)
    utilisation = [rates[n] * work / n for n in (1, 8, 64)]
    assert utilisation[0] < utilisation[1] < utilisation[2] <= 1.0
    assert utilisation[2] > 0.95  # 4096 slots: pooling makes the SLO cheap


def test_tighter_slo_sustains_less() -> None:
    loose = queueing.max_rate(4, policy=policy(slo={"ttft_seconds": 5.0}), mean_prompt=1000, mean_output=200)
    tight = queueing.max_rate(
        4, policy=policy(slo={"ttft_seconds": 0.5, "attainment": 0.999}), mean_prompt=1000, mean_output=200
    )
    assert tight < loose


@settings(max_examples=40, deadline=None)
@given(rate=st.floats(0.0, 2000.0), prompt=st.floats(1, 8000), output=st.floats(1, 2000))
def test_instances_needed_is_the_smallest_sufficient_count(rate: float, prompt: float, output: float) -> None:
    p = policy()
    n = queueing.instances_needed(rate, policy=p, mean_prompt=prompt, mean_output=output)
    if rate == 0.0:
        assert n == 0
        return
    assert queueing.max_rate(n, policy=p, mean_prompt=prompt, mean_output=output) >= rate
    assert queueing.max_rate(n - 1, policy=p, mean_prompt=prompt, mean_output=output) < rate


def test_table_extends_past_the_policy_bounds() -> None:
    p = policy(bounds={"max_replicas": 2, "serverless_quota": 1, "max_standby": 0})
    small = queueing.instances_needed(5.0, policy=p, mean_prompt=500, mean_output=100)
    big = queueing.instances_needed(2000.0, policy=p, mean_prompt=500, mean_output=100)
    assert small >= 1
    assert big > 100 * small
    assert queueing.max_rate(big, policy=p, mean_prompt=500, mean_output=100) >= 2000.0
