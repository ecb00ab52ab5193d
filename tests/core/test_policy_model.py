"""The typed policy model: defaults, bounds checks, schedules, break-even, and its JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scaler.core.policy import SCHEMA_URL, ModelPolicy, PolicyFile, Schedule, policy_json_schema
from scaler.core.policy_file import load_policy_file

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_a_name_is_all_a_model_needs() -> None:
    policy = ModelPolicy.model_validate({"name": "m"})
    assert policy.prices.replica_per_hour == 4.0
    assert policy.lead_times.cold_start_seconds == 300.0
    assert policy.forecast.horizon_seconds >= policy.lead_times.cold_start_seconds


@pytest.mark.parametrize(
    ("replica_per_hour", "per_gpu_second", "break_even"),
    [
        (4.00, 0.0021, 4.00 / 7.56),
        (2.50, 0.0021, 2.50 / 7.56),
        (7.56, 0.0021, 1.0),
        (10.0, 0.0021, 10.0 / 7.56),
        (0.0, 0.0021, 0.0),
        (4.00, 0.0, float("inf")),
    ],
)
def test_break_even_is_replica_price_over_busy_serverless_hour(
    replica_per_hour: float, per_gpu_second: float, break_even: float
) -> None:
    prices = {"replica_per_hour": replica_per_hour, "serverless_per_gpu_second": per_gpu_second}
    policy = ModelPolicy.model_validate({"name": "m", "prices": prices})
    assert policy.break_even_utilisation == pytest.approx(break_even)


@pytest.mark.parametrize(
    ("section", "values", "fragment"),
    [
        ("bounds", {"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) > max_replicas (2)"),
        ("bounds", {"min_standby": 3, "max_standby": 1}, "min_standby (3) > max_standby (1)"),
        ("bounds", {"max_replicas": 0, "serverless_quota": 0}, "could never be served"),
        ("slo", {"ttft_seconds": None, "queue_wait_seconds": None}, "set ttft_seconds or queue_wait_seconds"),
        ("forecast", {"seasonalities_seconds": [86400, 86400]}, "duplicate season lengths"),
    ],
)
def test_inconsistent_sections_are_rejected(section: str, values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ModelPolicy.model_validate({"name": "m", section: values})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replica_per_hour", "4"),
        ("replica_per_hour", True),
        ("replica_per_hour", -1.0),
        ("replica_per_hour", float("nan")),
        ("serverless_per_gpu_second", float("inf")),
    ],
)
def test_prices_are_strict_finite_non_negative_numbers(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        ModelPolicy.model_validate({"name": "m", "prices": {field: value}})


SCHEDULE = {"name": "day", "start": "08:00", "end": "18:00", "min_replicas": 2}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"start": "8:00"}, "'8:00' is not a time HH:MM"),
        ({"end": "24:01"}, "'24:01' is not a time HH:MM"),
        ({"end": "08:00"}, "the window is empty"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"min_replicas": None}, "must override at least one bound"),
    ],
)
def test_bad_schedules_are_rejected(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Schedule.model_validate({**SCHEDULE, **changes})


def test_schedule_across_midnight_keeps_end_before_start() -> None:
    night = Schedule.model_validate({**SCHEDULE, "start": "22:00", "end": "06:00", "timezone": "Asia/Tokyo"})
    assert night.minutes() == (22 * 60, 6 * 60)
    assert str(night.tz()) == "Asia/Tokyo"


def test_schedule_names_must_be_unique_within_a_model() -> None:
    with pytest.raises(ValidationError, match="schedule names must be unique"):
        ModelPolicy.model_validate({"name": "m", "schedules": [SCHEDULE, SCHEDULE]})


# --- JSON Schema -------------------------------------------------------------------------------------


def test_schema_declares_its_dialect_and_title() -> None:
    schema = json.loads(json.dumps(policy_json_schema()))
    assert schema["$schema"] == SCHEMA_URL
    assert schema["title"] == "Spillway policy file"
    assert schema["required"] == ["models"]


def test_schema_is_valid_draft_2020_12_and_accepts_every_example() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(POLICIES.glob("*.yaml")):
        document = load_policy_file(path).model_dump(mode="json")
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == [], path.name


def test_schema_rejects_what_the_loader_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    bad: list[dict[str, Any]] = [
        {"models": [{"name": "m", "prices": {"replica_per_hour": -1}}]},
        {"models": [{"name": "m", "pricez": {}}]},
        {"models": [{"name": "m", "schedules": [{**SCHEDULE, "start": "8:00"}]}]},
        {"models": []},
    ]
    for document in bad:
        assert not validator.is_valid(document), document
    assert validator.is_valid({"x-anchors": {"a": 1}, "models": [{"name": "m"}]})
    with pytest.raises(ValidationError):
        PolicyFile.model_validate({"models": [{"name": "m", "schedules": [{**SCHEDULE, "start": "8:00"}]}]})
