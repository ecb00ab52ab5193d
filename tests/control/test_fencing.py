"""Fencing rules as tables: when a Lease is still ours, when another may take it, when a session died."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.control.fencing import (
    GroupView,
    fence_reason,
    held_with_margin,
    may_take,
    renew_due,
    session_alive,
)


@pytest.mark.parametrize(
    ("renewed_at", "now", "held"),
    [
        (None, 100.0, False),  # never acquired
        (100.0, 100.0, True),  # just renewed
        (100.0, 109.9, True),  # duration 15 - margin 5 = 10 s of acting
        (100.0, 110.0, False),  # the margin starts: stop acting, though the Lease is not expired
        (100.0, 116.0, False),  # expired: others may take it
        (100.0, 99.0, False),  # a clock that went backwards is not trusted
    ],
)
def test_a_lease_is_held_with_margin_until_duration_minus_margin(
    renewed_at: float | None, now: float, held: bool
) -> None:
    assert held_with_margin(renewed_at=renewed_at, duration=15.0, margin=5.0, now=now) is held


@pytest.mark.parametrize(
    ("holder", "observed_at", "now", "takes"),
    [
        (None, 0.0, 0.0, True),  # free
        ("", 0.0, 0.0, True),  # released (holder cleared)
        ("me", 0.0, 0.0, True),  # already ours
        ("other", 100.0, 100.0, False),  # just seen held by another
        ("other", 100.0, 114.9, False),  # unchanged but not for a whole duration yet
        ("other", 100.0, 115.0, True),  # unchanged for the duration: the holder stopped renewing
    ],
)
def test_another_holders_lease_is_taken_only_after_a_whole_duration_unchanged(
    holder: str | None, observed_at: float, now: float, takes: bool
) -> None:
    assert may_take(holder=holder, me="me", observed_at=observed_at, duration=15.0, now=now) is takes


@given(
    renewed_at=st.floats(0, 1e6),
    delay=st.floats(0, 100),  # the other process first sees our record this long after we sent it
    duration=st.floats(1, 600),
    margin=st.floats(0, 300),
    now=st.floats(0, 2e6),
)
def test_the_holder_stops_before_anyone_else_may_start(
    renewed_at: float, delay: float, duration: float, margin: float, now: float
) -> None:
    observed_at = renewed_at + delay  # the record is stored after it was sent, so it is seen after
    holder_acts = held_with_margin(renewed_at=renewed_at, duration=duration, margin=margin, now=now)
    other_takes = may_take(holder="me", me="other", observed_at=observed_at, duration=duration, now=now)
    assert not (holder_acts and other_takes)


@pytest.mark.parametrize(
    ("renewed_at", "now", "due"),
    [(None, 0.0, True), (10.0, 14.9, False), (10.0, 15.0, True)],
)
def test_a_held_lease_is_renewed_every_interval(renewed_at: float | None, now: float, due: bool) -> None:
    assert renew_due(renewed_at=renewed_at, every=5.0, now=now) is due


@pytest.mark.parametrize(
    ("heartbeat_at", "now", "alive"),
    [
        (None, 0.0, False),
        (10.0, 10.4, True),  # a heartbeat every 0.5 s
        (10.0, 12.4, True),
        (10.0, 12.5, False),  # session 3 s - margin 0.5 s: the broker may expire it soon
        (10.0, 17.0, False),  # paused 7 s: replaced already
    ],
)
def test_a_member_without_a_heartbeat_for_the_session_timeout_is_not_alive(
    heartbeat_at: float | None, now: float, alive: bool
) -> None:
    assert session_alive(heartbeat_at=heartbeat_at, session_timeout=3.0, margin=0.5, now=now) is alive


OK = GroupView(assigned=True, assigned_generation=4, current_generation=4, heartbeat_at=100.0)


@pytest.mark.parametrize(
    ("view", "renewed_at", "lease_duration", "now", "reason"),
    [
        (OK, None, None, 100.5, None),  # broker-only: the group checks alone
        (OK, 99.0, 15.0, 100.5, None),  # and with a Lease held
        (GroupView(assigned=False, assigned_generation=4, current_generation=4, heartbeat_at=100.0),
         99.0, 15.0, 100.5, "not_assigned"),
        (GroupView(assigned=True, assigned_generation=4, current_generation=5, heartbeat_at=100.0),
         99.0, 15.0, 100.5, "generation_changed"),
        (GroupView(assigned=True, assigned_generation=4, current_generation=None, heartbeat_at=100.0),
         99.0, 15.0, 100.5, "generation_changed"),  # reset after the broker forgot the member
        (OK, 99.0, 15.0, 107.0, "session_expired"),  # woke from a 7 s pause: no heartbeat since
        (OK, None, 15.0, 100.5, "lease_not_held"),  # assigned, but the Lease is not ours (yet)
        (OK, 80.0, 15.0, 100.5, "lease_not_held"),  # not renewed for 20 s
    ],
)  # fmt: skip
def test_fence_reason_names_the_first_check_that_fails(
    view: GroupView, renewed_at: float | None, lease_duration: float | None, now: float, reason: str | None
) -> None:
    got = fence_reason(
        view,
        session_timeout=3.0,
        margin=0.5,
        lease_renewed_at=renewed_at,
        lease_duration=lease_duration,
        lease_margin=5.0,
        now=now,
    )
    assert got == reason
