"""Workload value types and lognormal token sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.sim.workload import AZURE_CONV_TOKENS, RateWorkload, TokenSizes, Workload, sample_tokens


def test_workload_refuses_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        Workload(
            name="w",
            arrivals=np.array([0.0, 1.0]),
            prompt_tokens=np.array([1], dtype=np.int64),
            output_tokens=np.array([1, 2], dtype=np.int64),
            duration=2.0,
        )


def test_rate_workload_counts_requests_and_seconds() -> None:
    rates = RateWorkload(
        name="r", counts=np.array([0.4, 1.3, 2.0]), mean_prompt_tokens=1.0, mean_output_tokens=1.0
    )
    assert (rates.duration, rates.requests) == (3.0, 4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mean_prompt", 0.5, "mean_prompt must be at least 1"),
        ("mean_output", float("nan"), "mean_output must be at least 1"),
        ("sigma_prompt", -0.1, r"sigma_prompt must be in \[0, 5\]"),
        ("sigma_output", 9.0, r"sigma_output must be in \[0, 5\]"),
    ],
)
def test_token_sizes_refuse_bad_values_by_name(field: str, value: float, message: str) -> None:
    values = {
        "mean_prompt": 100.0,
        "mean_output": 10.0,
        "sigma_prompt": 1.0,
        "sigma_output": 1.0,
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        TokenSizes(**values)


def test_sampled_tokens_have_the_stated_means() -> None:
    prompt, output = sample_tokens(AZURE_CONV_TOKENS, 200_000, np.random.default_rng(3))
    assert prompt.mean() == pytest.approx(AZURE_CONV_TOKENS.mean_prompt, rel=0.02)
    assert output.mean() == pytest.approx(AZURE_CONV_TOKENS.mean_output, rel=0.02)
    assert np.std(np.log(prompt)) == pytest.approx(AZURE_CONV_TOKENS.sigma_prompt, rel=0.03)


def test_sampled_tokens_repeat_with_the_seed() -> None:
    first = sample_tokens(AZURE_CONV_TOKENS, 50, np.random.default_rng(7))
    again = sample_tokens(AZURE_CONV_TOKENS, 50, np.random.default_rng(7))
    other = sample_tokens(AZURE_CONV_TOKENS, 50, np.random.default_rng(8))
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


TOKEN_SIZES = st.builds(
    TokenSizes,
    mean_prompt=st.floats(1.0, 1e5),
    mean_output=st.floats(1.0, 1e4),
    sigma_prompt=st.floats(0.0, 5.0),
    sigma_output=st.floats(0.0, 5.0),
)


@settings(max_examples=40, deadline=None)
@given(sizes=TOKEN_SIZES, n=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_sampled_tokens_are_whole_positive_counts(sizes: TokenSizes, n: int, seed: int) -> None:
    prompt, output = sample_tokens(sizes, n, np.random.default_rng(seed))
    assert prompt.shape == output.shape == (n,)
    assert prompt.dtype == output.dtype == np.int64
    assert (prompt >= 1).all()
    assert (output >= 1).all()
