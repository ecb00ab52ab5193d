"""Serverless backend profiles and the discriminated union of serverless targets in the policy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scaler.backends.bedrock import BedrockTarget
from scaler.backends.lambda_ import LambdaTarget
from scaler.backends.sagemaker import SageMakerTarget
from scaler.core.policy import SERVERLESS_TARGET, SERVERLESS_TARGETS, ModelPolicy, policy_json_schema
from scaler.core.policy_file import PolicyError, parse_policy_text
from scaler.core.profile import requests_per_second_within

LAMBDA = {"backend": "lambda", "function_name": "chat-burst", "alias": "live"}
SAGEMAKER = {"backend": "sagemaker", "endpoint_name": "chat", "variant_name": "burst"}
BEDROCK = {"backend": "bedrock", "model_id": "meta.llama3-1-8b-instruct-v1:0", "tokens_per_minute": 300_000}
TOKEN_PRICES = {"serverless_per_million_input_tokens": 0.22, "serverless_per_million_output_tokens": 0.22}


def policy(serverless: dict[str, Any] | None, **sections: Any) -> ModelPolicy:
    targets = {"targets": {"serverless": serverless}} if serverless is not None else {}
    return ModelPolicy.model_validate({"name": "m", **targets, **sections})


@pytest.mark.parametrize(
    ("serverless", "sections", "expected"),
    [
        (None, {}, ("generic", 15.0, True, False)),
        (LAMBDA, {}, ("lambda", 120.0, True, False)),
        (SAGEMAKER, {}, ("sagemaker", 360.0, True, False)),
        (BEDROCK, {"prices": TOKEN_PRICES}, ("bedrock", 0.0, False, True)),
    ],
)
def test_each_backend_plans_with_its_own_profile(
    serverless: dict[str, Any] | None, sections: dict[str, Any], expected: tuple[str, float, bool, bool]
) -> None:
    profile = policy(serverless, **sections).serverless_profile
    assert (profile.name, profile.cold_start_seconds, profile.provisionable, profile.per_token) == expected


def test_gpu_capacity_from_zero_on_aws_takes_minutes_and_only_bedrock_is_instant() -> None:
    assert LambdaTarget.PROFILE.cold_start_seconds >= 60
    assert SageMakerTarget.PROFILE.cold_start_seconds >= 180  # "several minutes" (scale from zero)
    assert BedrockTarget.PROFILE.cold_start_seconds == 0.0
    assert math.isinf(BedrockTarget.PROFILE.keep_warm_seconds)
    assert "tokens per minute" in BedrockTarget.PROFILE.quota_unit


def test_a_configured_cold_start_overrides_the_profile() -> None:
    pol = policy(LAMBDA, lead_times={"serverless_cold_start_seconds": 5})
    assert pol.serverless_profile.cold_start_seconds == 5.0
    assert pol.serverless_profile.keep_warm_seconds == LambdaTarget.PROFILE.keep_warm_seconds


def test_every_backend_the_schema_accepts_has_a_target_model_and_a_profile() -> None:
    schema = policy_json_schema()
    targets = schema["$defs"]["Targets"]["properties"]["serverless"]["anyOf"][0]
    assert set(targets["discriminator"]["mapping"]) == set(SERVERLESS_TARGETS)
    assert all(model.PROFILE.name == name for name, model in SERVERLESS_TARGETS.items())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({**LAMBDA, "endpoint_name": "chat"}, "field endpoint_name is for backend sagemaker, not lambda"),
        ({**LAMBDA, "primary_variant": "main"}, "field primary_variant is for backend sagemaker"),
        ({**SAGEMAKER, "alias": "live"}, "field alias is for backend lambda, not sagemaker"),
        ({**SAGEMAKER, "tokens_per_minute": 5}, "field tokens_per_minute is for backend bedrock"),
        ({**BEDROCK, "function_name": "f"}, "field function_name is for backend lambda, not bedrock"),
        ({**SAGEMAKER, "primary_variant": "burst"}, "primary_variant must differ from variant_name"),
    ],
)
def test_a_field_of_another_backend_is_named_with_its_backend(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SERVERLESS_TARGET.validate_python(given)


def test_each_backend_parses_into_its_own_model_with_only_its_fields() -> None:
    assert isinstance(SERVERLESS_TARGET.validate_python(LAMBDA), LambdaTarget)
    assert isinstance(SERVERLESS_TARGET.validate_python(SAGEMAKER), SageMakerTarget)
    bedrock = SERVERLESS_TARGET.validate_python(BEDROCK)
    assert isinstance(bedrock, BedrockTarget)
    assert bedrock.key == "bedrock/meta.llama3-1-8b-instruct-v1:0"
    assert bedrock.weighted is None
    assert "function_name" not in BedrockTarget.model_fields


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, source="p.yaml")
    return [str(p) for p in caught.value.problems]


def test_policy_files_name_a_wrong_or_missing_backend_and_its_line() -> None:
    head = "models:\n  - name: m\n    targets:\n      serverless:\n"
    known = ", ".join(map(repr, SERVERLESS_TARGETS))  # 'lambda', 'sagemaker', ... in registry order
    assert known.startswith("'lambda', 'sagemaker', 'bedrock'")
    assert _problems(head + "        backend: modal\n") == [
        f"p.yaml:5: models[0].targets.serverless.backend: must be one of {known}, got 'modal'"
    ]
    assert _problems(head + "        function_name: f\n") == [
        f"p.yaml:4: models[0].targets.serverless: required, but missing: backend, one of {known}"
    ]
    typo = head + "        backend: sagemaker\n        endpoint_nam: e\n        variant_name: v\n"
    assert (
        "p.yaml:6: models[0].targets.serverless.endpoint_nam: unknown key 'endpoint_nam'; did you mean "
        "'endpoint_name'?" in _problems(typo)
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"prices": TOKEN_PRICES, "lead_times": {"serverless_cold_start_seconds": 10}}, "has no cold start"),
        ({"prices": {**TOKEN_PRICES, "serverless_per_gpu_second": 0.002}}, "bills per token"),
        (
            {"prices": {**TOKEN_PRICES, "serverless_provisioned_per_hour": 1.0}},
            "serverless_provisioned_per_hour",
        ),
        ({}, "set prices.serverless_per_million_input_tokens"),
    ],
)
def test_bedrock_refuses_what_only_instance_backends_have(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(BEDROCK, **sections)


def test_bedrock_prices_requests_per_token_and_bills_no_gpu_time() -> None:
    pol = policy(BEDROCK, prices=TOKEN_PRICES)
    assert pol.serverless_tokens_per_minute == 300_000
    assert pol.serverless_gpu_second_price == 0.0
    assert pol.serverless_provisioned_price == 0.0
    one = pol.serverless_request_price(prompt_tokens=1000, output_tokens=200, work_seconds=0.16)
    assert one == pytest.approx(1200 * 0.22 / 1e6)
    # a replica at $4/h against $0.22/M tokens of 1,200-token requests taking 0.163 instance-s each
    work = 1000 / 12_000 + 200 / 2_500
    ratio = pol.break_even_for(prompt_tokens=1000, output_tokens=200, work_seconds=work)
    assert ratio == pytest.approx(4.0 / (1200 * 0.22 / 1e6 / work * 3600))


def test_instance_backends_keep_the_break_even_of_their_gpu_second_price() -> None:
    pol = policy(LAMBDA)
    assert pol.break_even_for(prompt_tokens=1000, output_tokens=200, work_seconds=0.16) == pytest.approx(
        pol.break_even_utilisation
    )


def test_requests_within_a_token_quota() -> None:
    assert requests_per_second_within(tokens_per_minute=72_000, tokens_per_request=1_200) == 1.0
    assert math.isinf(requests_per_second_within(tokens_per_minute=1, tokens_per_request=0))


def test_every_example_policy_still_validates() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    for path in sorted(root.glob("*.yaml")):
        parse_policy_text(path.read_text(encoding="utf-8"), source=str(path))
