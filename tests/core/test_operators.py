"""Operators stay in charge (scaler.core.operators): paused, external changes as floors, pods to remove."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.core import operators
from scaler.core.operators import ExternalChange, OperatorState
from scaler.core.policy import Behavior
from scaler.core.types import Decision


def _decision(replicas: int, standby: int = 0) -> Decision:
    return Decision(
        at=0.0,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason="plan",
        bound_by="slo",
        quantile=0.9,
        cost_per_hour={},
    )


@pytest.mark.parametrize(
    ("annotations", "paused"),
    [
        (None, False),
        ({}, False),
        ({"spillway.io/paused": "true"}, True),
        ({"spillway.io/paused": "True "}, True),
        ({"spillway.io/paused": "false"}, False),
        ({"spillway.io/paused": "yes"}, False),
        ({"autoscaling.keda.sh/paused": "true"}, False),
    ],
)
def test_only_a_true_paused_annotation_pauses(annotations: dict[str, str] | None, paused: bool) -> None:
    assert operators.is_paused(annotations) is paused


@pytest.mark.parametrize(
    ("expected", "read", "change"),
    [
        (None, 7, None),  # first read: the baseline
        (3, 3, None),
        (3, 7, ExternalChange(at=50.0, replicas=7, previous=3, generation=4)),
        (3, 0, ExternalChange(at=50.0, replicas=0, previous=3, generation=4)),
    ],
)
def test_a_count_spillway_did_not_write_is_an_external_change(
    expected: int | None, read: int, change: ExternalChange | None
) -> None:
    assert operators.detect_change(expected=expected, read=read, at=50.0, generation=4) == change


def test_respect_keeps_the_operators_count_as_a_floor_until_the_scale_down_delay_passes() -> None:
    change = ExternalChange(at=100.0, replicas=7, previous=2)
    state = OperatorState(external={"replicas": change})
    timeline = {}
    for now in (100.0, 150.0, 399.0, 400.0, 500.0):
        decision, floors = operators.respect_operators(
            _decision(2), state=state, mode="respect-for-scale-down-delay", delay_seconds=300.0, now=now
        )
        timeline[now] = (decision.replicas, floors, decision.bound_by)
    assert timeline == {
        100.0: (7, {"replicas": 7}, "external_change"),
        150.0: (7, {"replicas": 7}, "external_change"),
        399.0: (7, {"replicas": 7}, "external_change"),
        400.0: (2, {}, "slo"),  # the delay has passed: the planner's count again
        500.0: (2, {}, "slo"),
    }


def test_correct_overwrites_at_once_and_a_higher_plan_is_never_lowered() -> None:
    state = OperatorState(external={"replicas": ExternalChange(at=0.0, replicas=5, previous=2)})
    corrected, floors = operators.respect_operators(
        _decision(2), state=state, mode="correct", delay_seconds=600.0, now=1.0
    )
    assert (corrected.replicas, floors) == (2, {})
    higher, _ = operators.respect_operators(
        _decision(9), state=state, mode="respect-for-scale-down-delay", delay_seconds=600.0, now=1.0
    )
    assert higher.replicas == 9
    assert higher.reason == "plan"


def test_standby_has_its_own_floor_and_a_paused_kind_none() -> None:
    state = OperatorState(
        paused=frozenset({"replicas"}),
        external={
            "replicas": ExternalChange(at=0.0, replicas=8, previous=2),
            "standby": ExternalChange(at=0.0, replicas=3, previous=1),
        },
    )
    decision, floors = operators.respect_operators(
        _decision(2, standby=1), state=state, mode="respect-for-scale-down-delay", delay_seconds=60, now=10
    )
    assert (decision.replicas, decision.standby, floors) == (2, 3, {"standby": 3})
    assert "standby >= 3" in decision.reason


def test_the_default_policy_respects_external_changes() -> None:
    assert Behavior().external_changes == "respect-for-scale-down-delay"


@pytest.mark.parametrize(
    ("pods", "inflight", "count", "picked"),
    [
        (["a", "b", "c"], {"a": 0, "b": 4, "c": 0}, 2, ["a", "c"]),
        (["a", "b", "c"], {"a": 3, "b": 1, "c": 2}, 1, ["b"]),
        (["a", "b", "c"], {"a": 0}, 2, ["a"]),  # b and c have no fresh metrics: busy, never picked
        (["a", "b"], {}, 1, []),
        (["a", "b"], {"a": 0, "b": 0}, 5, ["a", "b"]),
        (["a", "b"], {"a": 0, "b": 0, "gone": 0}, 2, ["a", "b"]),  # metrics of a deleted pod
        (["a", "b"], {"a": 0}, 0, []),
    ],
)
def test_pods_to_remove_table(
    pods: list[str], inflight: dict[str, int], count: int, picked: list[str]
) -> None:
    assert operators.pods_to_remove(pods=pods, inflight=inflight, count=count) == picked


def test_pods_to_remove_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count"):
        operators.pods_to_remove(pods=["a"], inflight={}, count=-1)


_PODS = st.lists(st.from_regex(r"[a-z]{1,3}", fullmatch=True), min_size=0, max_size=12, unique=True)


@given(
    pods=_PODS,
    loads=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=12, max_size=12),
    count=st.integers(0, 14),
)
def test_no_busy_pod_is_picked_while_an_idle_one_is_left(
    pods: list[str], loads: list[int | None], count: int
) -> None:
    inflight = {pod: load for pod, load in zip(pods, loads, strict=False) if load is not None}
    picked = operators.pods_to_remove(pods=pods, inflight=inflight, count=count)
    assert len(picked) == min(count, len(inflight))
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(inflight)  # a pod without fresh metrics is never picked
    left = [pod for pod in inflight if pod not in picked]
    if picked and left:
        assert max(inflight[p] for p in picked) <= min(inflight[p] for p in left)
    idle_left = [pod for pod in left if inflight[pod] == 0]
    assert not (idle_left and any(inflight[p] > 0 for p in picked))


@given(
    change_at=st.floats(0, 1e6, allow_nan=False),
    delay=st.floats(0, 86_400, allow_nan=False),
    later=st.floats(0, 2e5, allow_nan=False),
    planned=st.integers(0, 50),
    operator=st.integers(0, 50),
)
def test_a_floor_never_lowers_a_decision_and_ends_with_the_delay(
    change_at: float, delay: float, later: float, planned: int, operator: int
) -> None:
    state = OperatorState(external={"replicas": ExternalChange(at=change_at, replicas=operator, previous=0)})
    now = change_at + later
    decision, floors = operators.respect_operators(
        _decision(planned), state=state, mode="respect-for-scale-down-delay", delay_seconds=delay, now=now
    )
    assert decision.replicas >= planned
    if now - change_at >= delay:
        assert decision == _decision(planned)
        assert floors == {}
    else:
        assert decision.replicas == max(planned, operator)
    assert dataclasses.replace(decision, replicas=planned, reason="plan", bound_by="slo") == _decision(
        planned
    )


@pytest.mark.parametrize(
    ("major", "minor", "honoured"),
    [
        ("1", "20", False),  # this repository's test cluster: the ReplicaSet predates the annotation
        ("1", "19", False),
        ("1", "21", None),  # alpha: only with the PodDeletionCost feature gate
        ("1", "22", True),
        ("1", "31", True),
        ("1", "27+", True),  # EKS/GKE write the minor with a suffix
        ("2", "0", True),
        ("", "", None),  # a server that does not say
        ("1", "x", None),
    ],
)
def test_which_api_servers_honour_the_drain_marks(major: str, minor: str, honoured: bool | None) -> None:
    assert operators.deletion_cost_honoured(major, minor) is honoured
