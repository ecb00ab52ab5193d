"""Schedule windows: weekdays, time zones, midnight-crossing windows, DST days, override conflicts."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.policy import WEEKDAYS, ModelPolicy
from scaler.core.schedule import effective_bounds


def policy(*schedules: dict[str, Any], **bounds: int) -> ModelPolicy:
    return ModelPolicy.model_validate({"name": "m", "bounds": bounds, "schedules": list(schedules)})


def at(text: str, tz: str = "UTC") -> float:
    """Return the unix time of local wall-clock ``text`` (YYYY-MM-DD HH:MM) in ``tz``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()


BUSINESS = {"name": "business", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
            "end": "17:00", "min_replicas": 4}
NEW_YORK = {**BUSINESS, "name": "ny", "timezone": "America/New_York"}
OVERNIGHT = {"name": "night", "days": ["fri"], "start": "22:00", "end": "06:00", "max_replicas": 2}
BERLIN_EARLY = {"name": "early", "days": ["sun"], "start": "01:00", "end": "04:00",
                "timezone": "Europe/Berlin", "min_standby": 1}


@pytest.mark.parametrize(
    ("schedule", "when", "active"),
    [
        # 2026-11-23 is a Monday.
        (BUSINESS, at("2026-11-23 09:00"), True),  # start is inclusive
        (BUSINESS, at("2026-11-23 16:59"), True),
        (BUSINESS, at("2026-11-23 17:00"), False),  # end is exclusive
        (BUSINESS, at("2026-11-23 08:59"), False),
        (BUSINESS, at("2026-11-28 10:00"), False),  # Saturday
        # New York: EST (UTC-5) in January, EDT (UTC-4) in July.
        (NEW_YORK, at("2026-01-12 13:30"), False),  # 08:30 EST
        (NEW_YORK, at("2026-01-12 14:30"), True),  # 09:30 EST
        (NEW_YORK, at("2026-07-13 13:30"), True),  # 09:30 EDT
        (NEW_YORK, at("2026-07-13 21:30"), False),  # 17:30 EDT
        (NEW_YORK, at("2026-01-12 09:30", "America/New_York"), True),
        # Friday 22:00 - Saturday 06:00 belongs to Friday.
        (OVERNIGHT, at("2026-11-27 23:00"), True),  # Friday night
        (OVERNIGHT, at("2026-11-28 03:00"), True),  # Saturday early: Friday's window
        (OVERNIGHT, at("2026-11-28 06:00"), False),
        (OVERNIGHT, at("2026-11-27 03:00"), False),  # Friday early: Thursday's window, not listed
        (OVERNIGHT, at("2026-11-28 23:00"), False),  # Saturday night
        # Berlin, spring forward 2026-03-29 02:00 CET -> 03:00 CEST: the 01:00-04:00 window is 2 h long.
        (BERLIN_EARLY, at("2026-03-29 00:30"), True),  # 01:30 CET
        (BERLIN_EARLY, at("2026-03-29 01:30"), True),  # 03:30 CEST
        (BERLIN_EARLY, at("2026-03-29 02:00"), False),  # 04:00 CEST
        # Fall back 2026-10-25 03:00 CEST -> 02:00 CET: the window is 4 h long.
        (BERLIN_EARLY, at("2026-10-24 23:30"), True),  # 01:30 CEST
        (BERLIN_EARLY, at("2026-10-25 02:30"), True),  # 03:30 CET
        (BERLIN_EARLY, at("2026-10-25 03:00"), False),  # 04:00 CET
    ],
)
def test_window_activity(schedule: dict[str, Any], when: float, active: bool) -> None:
    p = policy(schedule)
    bounds, name = effective_bounds(p, now=when)
    assert (name == schedule["name"]) is active
    assert (bounds != p.bounds) is active


def test_no_schedule_means_the_policy_bounds() -> None:
    p = policy(min_replicas=1)
    assert effective_bounds(p, now=at("2026-11-23 10:00")) == (p.bounds, None)


def test_overrides_replace_only_the_fields_they_set() -> None:
    p = policy(BUSINESS, min_replicas=1, max_replicas=10, serverless_quota=3)
    bounds, _ = effective_bounds(p, now=at("2026-11-23 10:00"))
    assert (bounds.min_replicas, bounds.max_replicas, bounds.serverless_quota) == (4, 10, 3)


def test_later_schedule_wins_where_both_are_active() -> None:
    peak = {"name": "peak", "start": "12:00", "end": "13:00", "min_replicas": 8, "serverless_quota": 1}
    p = policy(BUSINESS, peak)
    bounds, name = effective_bounds(p, now=at("2026-11-23 12:30"))
    assert (name, bounds.min_replicas, bounds.serverless_quota) == ("peak", 8, 1)
    bounds, name = effective_bounds(p, now=at("2026-11-23 13:30"))
    assert (name, bounds.min_replicas) == ("business", 4)


@pytest.mark.parametrize(
    ("override", "base", "expected"),
    [
        ({"min_replicas": 20}, {"max_replicas": 16}, {"min_replicas": 20, "max_replicas": 20}),
        ({"max_replicas": 2}, {"min_replicas": 4}, {"min_replicas": 2, "max_replicas": 2}),
        ({"min_standby": 5}, {"max_standby": 2}, {"min_standby": 5, "max_standby": 5}),
        ({"max_standby": 0}, {"min_standby": 1}, {"min_standby": 0, "max_standby": 0}),
        # One schedule setting both sides inconsistently: its maximum wins.
        ({"min_replicas": 9, "max_replicas": 3}, {}, {"min_replicas": 3, "max_replicas": 3}),
    ],
)
def test_override_value_wins_and_the_other_side_follows(
    override: dict[str, int], base: dict[str, int], expected: dict[str, int]
) -> None:
    p = policy({"name": "s", "start": "00:00", "end": "24:00", **override}, **base)
    bounds, _ = effective_bounds(p, now=at("2026-11-23 10:00"))
    assert {k: getattr(bounds, k) for k in expected} == expected


schedule_strategy = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c"]),
        "days": st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
        "start": st.sampled_from(["00:00", "06:30", "09:00", "22:00"]),
        "end": st.sampled_from(["05:00", "17:00", "23:59", "24:00"]),
        "timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    },
    optional={
        k: st.integers(0, 30) for k in ("min_replicas", "max_replicas", "min_standby", "max_standby")
    },
).filter(lambda s: s["start"] != s["end"] and any(k.startswith(("min", "max")) for k in s))


@settings(max_examples=100, deadline=None)
@given(
    schedules=st.lists(schedule_strategy, max_size=3, unique_by=lambda s: s["name"]),
    when=st.floats(1.7e9, 1.9e9),
)
def test_effective_bounds_are_always_ordered(schedules: list[dict[str, Any]], when: float) -> None:
    p = policy(*schedules)
    bounds, name = effective_bounds(p, now=when)
    assert bounds.min_replicas <= bounds.max_replicas
    assert bounds.min_standby <= bounds.max_standby
    assert name is None or name in {s["name"] for s in schedules}
