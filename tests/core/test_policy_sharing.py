"""Models whose policy parts are alike share one instance of each part (10,000 models, one copy), and
sharing never changes what a policy means."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import parse_policy_text

PARTS = ("slo", "replica", "lead_times", "prices", "bounds", "behavior", "forecast")
BEDROCK = {"backend": "bedrock", "model_id": "meta.llama3-1-8b-instruct-v1:0", "tokens_per_minute": 300_000}
TOKEN_PRICES = {"serverless_per_million_input_tokens": 0.22, "serverless_per_million_output_tokens": 0.22}


def test_models_with_default_policies_share_every_part() -> None:
    a, b = ModelPolicy(name="a"), ModelPolicy(name="b")
    for part in PARTS:
        assert getattr(a, part) is getattr(b, part), part
    assert (a.name, b.name) == ("a", "b")


def test_models_of_one_policy_file_share_alike_parts_and_keep_their_differences() -> None:
    text = """
models:
  - name: chat
    slo: {ttft_seconds: 2.0}
    bounds: {max_replicas: 8}
  - name: code
    slo: {ttft_seconds: 2.0}
    bounds: {max_replicas: 4}
"""
    chat, code = parse_policy_text(text, source="p.yaml").models
    assert chat.slo is code.slo
    assert chat.replica is code.replica
    assert chat.bounds is not code.bounds
    assert (chat.bounds.max_replicas, code.bounds.max_replicas) == (8, 4)


def test_a_field_set_to_its_default_is_not_taken_for_one_left_out() -> None:
    left_out = ModelPolicy.model_validate({"name": "a", "prices": TOKEN_PRICES})
    set_explicitly = ModelPolicy.model_validate(
        {
            "name": "b",
            "prices": {
                **TOKEN_PRICES,
                "serverless_per_gpu_second": left_out.prices.serverless_per_gpu_second,
            },
        }
    )
    assert set_explicitly.prices == left_out.prices  # equal values ...
    assert set_explicitly.prices is not left_out.prices  # ... but not the same part: what was set differs
    ModelPolicy.model_validate({"name": "c", "prices": TOKEN_PRICES, "targets": {"serverless": BEDROCK}})
    with pytest.raises(ValidationError, match="bills per token"):  # a per-token backend still sees the field
        ModelPolicy.model_validate(
            {
                "name": "d",
                "prices": {**TOKEN_PRICES, "serverless_per_gpu_second": 0.0021},
                "targets": {"serverless": BEDROCK},
            }
        )
