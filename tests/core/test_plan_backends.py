"""The planner with each serverless backend's profile: what it provisions, spills and sizes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import queueing
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from tests.core.test_plan import OUTPUT, PROMPT, forecast, observed

BEDROCK = {"backend": "bedrock", "model_id": "meta.llama3-1-8b-instruct-v1:0"}
LAMBDA = {"backend": "lambda", "function_name": "chat-burst", "alias": "live"}
PER_TOKEN = {"serverless_per_million_input_tokens": 0.22, "serverless_per_million_output_tokens": 0.22}
TOKENS = PROMPT + OUTPUT


def bedrock(tokens_per_minute: int, **sections: Any) -> ModelPolicy:
    prices = {**PER_TOKEN, **sections.pop("prices", {})}
    serverless = {**BEDROCK, "tokens_per_minute": tokens_per_minute}
    return ModelPolicy.model_validate(
        {"name": "m", "prices": prices, "targets": {"serverless": serverless}, **sections}
    )


@pytest.mark.parametrize(
    ("tokens_per_minute", "rate", "ready", "spill"),
    [
        (72_000 * 100, 10.0, 0, 1.0),  # quota for 100 req/s: everything above the replicas spills
        (72_000 * 2, 10.0, 0, 0.2),  # quota for 2 req/s of 1,200 tokens: 2 of 10 req/s
        (72_000 * 2, 4.0, 0, 0.5),
        (72_000, 1.0, 0, 1.0),
    ],
)
def test_bedrock_spills_only_what_its_tokens_per_minute_admit(
    tokens_per_minute: int, rate: float, ready: int, spill: float
) -> None:
    pol = bedrock(tokens_per_minute, bounds={"max_replicas": 16})
    decision = plan(
        policy=pol,
        forecast=forecast(rate, start=0.0),
        observed=observed(ready, rate=rate),
        previous=None,
        now=0.0,
    )
    assert decision.spill_fraction == pytest.approx(spill)
    assert decision.serverless_provisioned == 0  # nothing to provision on a per-token backend


def test_a_cold_lambda_is_kept_provisioned_where_bedrock_needs_nothing() -> None:
    fc = forecast(20.0, start=0.0)
    lam = ModelPolicy.model_validate({"name": "m", "targets": {"serverless": LAMBDA}})
    assert lam.serverless_profile.cold_start_seconds == 120.0  # longer than the 2 s TTFT: pre-warm
    assert (
        plan(
            policy=lam, forecast=fc, observed=observed(rate=20.0), previous=None, now=0.0
        ).serverless_provisioned
        > 0
    )
    bed = bedrock(10_000_000)
    assert (
        plan(
            policy=bed, forecast=fc, observed=observed(rate=20.0), previous=None, now=0.0
        ).serverless_provisioned
        == 0
    )


def test_a_small_token_quota_keeps_replicas_for_what_it_cannot_take() -> None:
    fc = forecast(12.0, start=0.0)
    roomy = plan(
        policy=bedrock(100_000_000), forecast=fc, observed=observed(rate=12.0), previous=None, now=0.0
    )
    tight = plan(policy=bedrock(72_000), forecast=fc, observed=observed(rate=12.0), previous=None, now=0.0)
    assert tight.replicas > roomy.replicas
    assert tight.bound_by == "quota"


def test_token_prices_set_the_break_even_against_a_replica() -> None:
    fc = forecast(3.0, start=0.0, sd=0.05)
    work = queueing.work_seconds(bedrock(10**9), mean_prompt=PROMPT, mean_output=OUTPUT)
    # $/M tokens at which a busy replica-second and a Bedrock second of such requests cost the same
    even = 4.0 / 3600.0 * work / TOKENS * 1e6
    cheap = bedrock(10**9, prices=dict.fromkeys(PER_TOKEN, even / 4))
    dear = bedrock(10**9, prices=dict.fromkeys(PER_TOKEN, even * 4))
    on_cheap = plan(policy=cheap, forecast=fc, observed=observed(rate=3.0), previous=None, now=0.0)
    on_dear = plan(policy=dear, forecast=fc, observed=observed(rate=3.0), previous=None, now=0.0)
    assert on_cheap.replicas == 0
    assert on_cheap.bound_by in {"fractile", "break_even"}
    assert on_dear.replicas >= 1
    assert on_dear.cost_per_hour["all_serverless"] == pytest.approx(
        16 * on_cheap.cost_per_hour["all_serverless"], rel=1e-6
    )
    assert on_dear.cost_per_hour["all_serverless"] == pytest.approx(
        3.0 * 3600 * TOKENS * even * 4 / 1e6, rel=0.05
    )


@settings(max_examples=60, deadline=None)
@given(
    tokens_per_minute=st.integers(min_value=1, max_value=50_000_000),
    rate=st.floats(min_value=0.01, max_value=500.0),
    ready=st.integers(min_value=0, max_value=16),
    sd=st.floats(min_value=0.0, max_value=1.0),
)
def test_bedrock_spill_never_exceeds_its_quota_and_nothing_is_provisioned(
    tokens_per_minute: int, rate: float, ready: int, sd: float
) -> None:
    pol = bedrock(tokens_per_minute)
    decision = plan(
        policy=pol,
        forecast=forecast(rate, start=0.0, sd=sd),
        observed=observed(ready, rate=rate),
        previous=None,
        now=0.0,
    )
    assert decision.serverless_provisioned == 0
    assert decision.spill_fraction * rate * TOKENS <= tokens_per_minute / 60.0 * (1 + 1e-9)
    assert 0.0 <= decision.spill_fraction <= 1.0
