"""Schedule windows: which bounds are in force at a given unix time.

A schedule is active on its listed weekdays from ``start`` (inclusive) to ``end`` (exclusive), in
local wall-clock time of its time zone (so DST moves it with the clock). A window whose end is
before its start crosses midnight and belongs to the day it STARTS on: ``fri 22:00-06:00`` is
active from Friday 22:00 to Saturday 06:00. Where several schedules are active, they apply in list
order, so later ones win field by field.

If an override makes a minimum exceed its maximum (or the reverse), the override's value wins and
the other side moves to match: ``min_replicas: 10`` under ``max_replicas: 8`` raises the maximum to
10; ``max_replicas: 2`` over ``min_replicas: 4`` lowers the minimum to 2. When one schedule sets both
sides inconsistently, its maximum is applied last and wins.
"""

from __future__ import annotations

import datetime as dt

from scaler.core.policy import WEEKDAYS, Bounds, ModelPolicy, Schedule

_PAIRS = (("min_replicas", "max_replicas"), ("min_standby", "max_standby"))
_ORDER = ("serverless_quota", "min_replicas", "min_standby", "max_replicas", "max_standby")


def is_active(schedule: Schedule, *, now: float) -> bool:
    """Return whether ``schedule`` is active at unix time ``now``."""
    local = dt.datetime.fromtimestamp(now, tz=schedule.tz())
    minute = local.hour * 60 + local.minute + local.second / 60.0
    start, end = schedule.minutes()
    today = WEEKDAYS[local.weekday()]
    if start < end:
        return today in schedule.days and start <= minute < end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (today in schedule.days and minute >= start) or (yesterday in schedule.days and minute < end)


def effective_bounds(model: ModelPolicy, *, now: float) -> tuple[Bounds, str | None]:
    """Return the bounds in force at unix time ``now`` and the name of the active schedule (None if none).

    With several schedules active the name is the last one's (it wins where they overlap). The
    returned bounds may have ``max_replicas == serverless_quota == 0`` if a schedule switches the
    model off; they are otherwise ordered (min <= max).
    """
    if not model.schedules:
        return model.bounds, None
    values = model.bounds.model_dump()
    active: str | None = None
    for schedule in model.schedules:
        if not is_active(schedule, now=now):
            continue
        active = schedule.name
        for field in _ORDER:
            value = getattr(schedule, field)
            if value is None:
                continue
            values[field] = value
            for low, high in _PAIRS:
                if field == low and values[high] < value:
                    values[high] = value
                elif field == high and values[low] > value:
                    values[low] = value
    if active is None:
        return model.bounds, None
    return Bounds.model_construct(**values), active
