"""The pure actuation rules: clamp to bounds, compare with the cluster, pace, back off, track failures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scaler.core import actuation
from scaler.core.actuation import Desired
from scaler.core.policy import SERVERLESS_TARGET, ModelPolicy
from scaler.core.types import Decision, Unavailable

POLICY = ModelPolicy.model_validate(
    {
        "name": "m",
        "bounds": {
            "min_replicas": 1,
            "max_replicas": 5,
            "min_standby": 0,
            "max_standby": 2,
            "serverless_quota": 3,
        },
    },
    strict=False,
)
NIGHT = ModelPolicy.model_validate(
    {
        "name": "m",
        "bounds": {"max_replicas": 8},
        "schedules": [{"name": "night", "start": "00:00", "end": "06:00", "max_replicas": 2}],
    },
    strict=False,
)


def _decision(replicas: int, standby: int = 0, serverless: int = 0) -> Decision:
    return Decision(
        at=0.0,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=serverless,
        spill_fraction=0.0,
        reason="r",
        bound_by="fractile",
        quantile=0.5,
        cost_per_hour={},
    )


@given(st.integers(-50, 500), st.integers(-50, 500), st.integers(-50, 500))
def test_clamp_never_leaves_the_bounds(replicas: int, standby: int, serverless: int) -> None:
    desired, _ = actuation.clamp(policy=POLICY, decision=_decision(replicas, standby, serverless), now=0.0)
    assert 1 <= desired.replicas <= 5
    assert 0 <= desired.standby <= 2
    assert 0 <= desired.serverless <= 3


def test_clamp_notes_each_value_it_changed_and_follows_schedules() -> None:
    desired, notes = actuation.clamp(policy=POLICY, decision=_decision(9, 1, 7), now=0.0)
    assert desired == Desired(replicas=5, standby=1, serverless=3)
    assert notes == ["replicas 9 clamped to 5 (bounds 1..5)", "serverless 7 clamped to 3 (bounds 0..3)"]
    at_3am_utc = 1_700_000_000 - 1_700_000_000 % 86_400 + 3 * 3600
    night, _ = actuation.clamp(policy=NIGHT, decision=_decision(8), now=float(at_3am_utc))
    assert night.replicas == 2


@pytest.mark.parametrize(
    ("current", "targets", "expected"),
    [
        (
            {"replicas": 3, "standby": 1, "serverless": 2},
            {"replicas": "d", "standby": "s", "serverless": "l"},
            [],
        ),
        (
            {"replicas": 2, "standby": 1, "serverless": 2},
            {"replicas": "d", "standby": "s", "serverless": "l"},
            [("replicas", 2, 3)],
        ),
        (
            {"replicas": 2, "standby": 2, "serverless": None},
            {"replicas": "d", "serverless": "l"},
            [("replicas", 2, 3), ("serverless", None, 2)],
        ),
        (
            {"replicas": 5, "standby": 0, "serverless": 2},
            {"replicas": "d", "standby": "s"},
            [("standby", 0, 1), ("replicas", 5, 3)],
        ),
        (
            {"replicas": 1, "standby": 2, "serverless": 2},
            {"replicas": "d", "standby": "s"},
            [("replicas", 1, 3), ("standby", 2, 1)],
        ),
    ],
    ids=[
        "same-state-no-change",
        "one-differs",
        "no-target-no-change",
        "down-refills-standby-first",
        "up-promotes-before-standby-shrinks",
    ],
)
def test_changes_lists_only_differences_on_named_targets_in_promotion_order(
    current: dict[actuation.Kind, int | None],
    targets: dict[actuation.Kind, str],
    expected: list[tuple[str, object, int]],
) -> None:
    result = actuation.changes(
        desired=Desired(replicas=3, standby=1, serverless=2), current=current, targets=targets
    )
    assert [(c.kind, c.current, c.desired) for c in result] == expected


@given(st.integers(1, 30), st.floats(0, 1, exclude_max=True))
def test_backoff_grows_to_its_cap_with_jitter(attempt: int, jitter: float) -> None:
    delay = actuation.backoff_delay(attempt=attempt, base=0.1, cap=5.0, jitter=jitter)
    ceiling = min(5.0, 0.1 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        actuation.backoff_delay(attempt=0, base=0.1, cap=1.0, jitter=0.5)


def test_pacer_allows_one_change_per_target_per_interval() -> None:
    pacer = actuation.Pacer(min_interval=30.0)
    assert pacer.allowed("a", now=0.0)
    pacer.record("a", now=0.0)
    assert not pacer.allowed("a", now=29.0)
    assert pacer.allowed("b", now=29.0)
    assert pacer.allowed("a", now=30.0)


def test_failure_tracker_flags_a_kind_after_threshold_failures_in_a_row() -> None:
    tracker = actuation.FailureTracker(threshold=2)
    assert not tracker.failed("m", Unavailable.SERVERLESS, op="write")
    assert tracker.succeeded("m", Unavailable.SERVERLESS, op="read") is False  # reads do not reset writes
    assert tracker.failed("m", Unavailable.SERVERLESS, op="write")
    assert tracker.unavailable("m") == Unavailable.SERVERLESS
    assert tracker.unavailable("other") == Unavailable.NONE
    assert tracker.succeeded("m", Unavailable.SERVERLESS, op="write")
    assert tracker.unavailable("m") == Unavailable.NONE


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_traffic_weights_are_in_unit_range_and_sum_to_one(spill: float) -> None:
    weights = actuation.traffic_weights(spill_fraction=spill, primary="main", burst="burst")
    assert set(weights) == {"main", "burst"}
    assert all(0.0 <= w <= 1.0 for w in weights.values())
    assert abs(sum(weights.values()) - 1.0) < 1e-9


def test_traffic_weights_follow_the_spill_fraction() -> None:
    assert actuation.traffic_weights(spill_fraction=0.3, primary="a", burst="b") == {"a": 0.7, "b": 0.3}
    assert actuation.traffic_weights(spill_fraction=float("nan"), primary="a", burst="b") == {
        "a": 1.0,
        "b": 0.0,
    }
    assert actuation.traffic_weights(spill_fraction=-2.0, primary="a", burst="b") == {"a": 1.0, "b": 0.0}


def test_weights_differ_only_beyond_the_tolerance_or_when_unknown() -> None:
    wanted = {"a": 0.7, "b": 0.3}
    assert not actuation.weights_differ(current={"a": 0.705, "b": 0.295}, desired=wanted)
    assert actuation.weights_differ(current={"a": 0.72, "b": 0.28}, desired=wanted)
    assert actuation.weights_differ(current={"a": 0.7}, desired=wanted)
    assert actuation.weights_differ(current=None, desired=wanted)


def test_primary_variant_is_for_sagemaker_and_differs_from_the_burst_variant() -> None:
    base = {"backend": "sagemaker", "endpoint_name": "e", "variant_name": "burst"}
    assert SERVERLESS_TARGET.validate_python({**base}).primary_variant is None  # optional: old policies hold
    assert SERVERLESS_TARGET.validate_python({**base, "primary_variant": "main"}).primary_variant == "main"
    with pytest.raises(ValidationError, match="must differ"):
        SERVERLESS_TARGET.validate_python({**base, "primary_variant": "burst"})
    with pytest.raises(ValidationError, match="field primary_variant is for backend sagemaker"):
        SERVERLESS_TARGET.validate_python(
            {"backend": "lambda", "function_name": "f", "alias": "live", "primary_variant": "main"}
        )
