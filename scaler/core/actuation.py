"""What the actuators should change, decided purely: clamp, compare with the cluster, pace, back off.

Nothing here performs I/O or reads a clock; :mod:`scaler.adapters.actuator` does, and asks this
module every question that has a right answer:

* :func:`clamp` bounds a decision by the policy's bounds in force at ``now`` (schedules included),
  whatever the planner said: the last line of defence before an API call.
* :func:`changes` compares the clamped desire with the state read back from the cluster and lists
  only what differs (the same decision twice changes nothing).
* :class:`Pacer` rate-limits changes per target (a minimum interval between two changes).
* :func:`traffic_weights` splits a SageMaker endpoint's traffic between the primary and burst
  variants from the decision's ``spill_fraction``; :func:`weights_differ` skips equal weights.
* :func:`backoff_delay` is the jittered exponential backoff between retries.
* :class:`FailureTracker` turns consecutive failures of one kind of capacity into an
  :class:`~scaler.core.types.Unavailable` flag for the next observation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from scaler.core import schedule
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Unavailable

Kind = Literal["replicas", "standby", "serverless"]
KINDS: tuple[Kind, ...] = ("replicas", "standby", "serverless")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """Capacity to set, in instances (replicas, warm standby replicas, pre-warmed serverless instances)."""

    replicas: int
    standby: int
    serverless: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One setting to change on one target: ``current`` (None: unknown) becomes ``desired``."""

    kind: Kind
    target: str
    current: int | None
    desired: int


def clamp(*, policy: ModelPolicy, decision: Decision, now: float) -> tuple[Desired, list[str]]:
    """Return the decision bounded by the policy's bounds in force at ``now``, and a note per clamp.

    Negative numbers become the lower bound; nothing exceeds max_replicas, max_standby or
    serverless_quota. Never raises on a valid policy.
    """
    bounds, _active = schedule.effective_bounds(policy, now=now)
    notes: list[str] = []

    def bound(name: str, value: int, low: int, high: int) -> int:
        result = min(max(value, low), high)
        if result != value:
            notes.append(f"{name} {value} clamped to {result} (bounds {low}..{high})")
        return result

    desired = Desired(
        replicas=bound("replicas", decision.replicas, bounds.min_replicas, bounds.max_replicas),
        standby=bound("standby", decision.standby, bounds.min_standby, bounds.max_standby),
        serverless=bound("serverless", decision.serverless_provisioned, 0, bounds.serverless_quota),
    )
    return desired, notes


def changes(*, desired: Desired, current: dict[Kind, int | None], targets: dict[Kind, str]) -> list[Change]:
    """Return the changes that bring ``current`` to ``desired`` for the kinds that have a target.

    A kind without a target is never changed; a kind whose current value equals the desired one is
    skipped (idempotence). An unknown current value (None) is a change.
    """
    wanted: dict[Kind, int] = {
        "replicas": desired.replicas,
        "standby": desired.standby,
        "serverless": desired.serverless,
    }
    result: list[Change] = []
    for kind in KINDS:
        target = targets.get(kind)
        if target is None:
            continue
        now_value = current.get(kind)
        if now_value != wanted[kind]:
            result.append(Change(kind=kind, target=target, current=now_value, desired=wanted[kind]))
    return order_for_promotion(result)


def order_for_promotion(items: list[Change]) -> list[Change]:
    """Return ``items`` ordered so serving capacity rises before standby shrinks, and falls after it grows.

    Promotion of a warm standby: serving replicas go up first (their pods land on the nodes the
    standby pool kept warm), the standby pool shrinks after. On the way down, standby is refilled
    before serving replicas go.
    """
    rank = {"replicas": 0, "standby": 1, "serverless": 2}
    ordered = sorted(items, key=lambda c: rank[c.kind])
    replicas_down = any(
        c.kind == "replicas" and c.current is not None and c.desired < c.current for c in items
    )
    if replicas_down:
        ordered.sort(key=lambda c: {"standby": 0, "replicas": 1, "serverless": 2}[c.kind])
    return ordered


WEIGHT_TOLERANCE = 0.01


def traffic_weights(*, spill_fraction: float, primary: str, burst: str) -> dict[str, float]:
    """Return the SageMaker DesiredWeight of ``primary`` (1 - spill) and ``burst`` (spill).

    ``spill_fraction`` is clamped to [0, 1] (NaN and infinities count as 0); weights are rounded to 4 places.
    """
    spill = spill_fraction if math.isfinite(spill_fraction) else 0.0
    spill = min(max(spill, 0.0), 1.0)
    return {primary: round(1.0 - spill, 4), burst: round(spill, 4)}


def weights_differ(
    *, current: dict[str, float] | None, desired: dict[str, float], tolerance: float = WEIGHT_TOLERANCE
) -> bool:
    """Return True if any desired weight is unknown in ``current`` or differs by more than ``tolerance``."""
    if current is None:
        return True
    return any(name not in current or abs(current[name] - w) > tolerance for name, w in desired.items())


def backoff_delay(*, attempt: int, base: float, cap: float, jitter: float) -> float:
    """Return the delay before retry ``attempt`` (1-based): equal jitter, uniform in [c/2, c) of
    ``c = min(cap, base * 2**(a-1))`` (never a near-zero retry storm, still spread out).

    ``jitter`` is a uniform draw in [0, 1) supplied by the caller. Raises ValueError on attempt < 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


class Pacer:
    """At most one change per target every ``min_interval`` seconds."""

    def __init__(self, *, min_interval: float) -> None:
        """Create a pacer; raise ValueError on a negative interval."""
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self.min_interval = min_interval
        self._last: dict[str, float] = {}

    def allowed(self, target: str, *, now: float) -> bool:
        """Return True if ``target`` may change at ``now``."""
        last = self._last.get(target)
        return last is None or now - last >= self.min_interval

    def record(self, target: str, *, now: float) -> None:
        """Note that ``target`` changed at ``now``."""
        self._last[target] = now


class FailureTracker:
    """Consecutive failures per (model, kind of capacity, operation); ``threshold`` in a row make the
    kind unavailable. Reads and changes count apart: a working read does not make changes work."""

    def __init__(self, *, threshold: int) -> None:
        """Create a tracker; raise ValueError unless ``threshold`` >= 1."""
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = threshold
        self._failures: dict[tuple[str, Unavailable, str], int] = {}

    def failed(self, model: str, kind: Unavailable, *, op: str) -> bool:
        """Count a failure of ``op``; return True if the kind just became unavailable."""
        before = self.unavailable(model)
        key = (model, kind, op)
        self._failures[key] = self._failures.get(key, 0) + 1
        return bool(kind & self.unavailable(model)) and not kind & before

    def succeeded(self, model: str, kind: Unavailable, *, op: str) -> bool:
        """Reset the count of ``op``; return True if the kind just became available again."""
        before = self.unavailable(model)
        self._failures.pop((model, kind, op), None)
        return bool(kind & before) and not kind & self.unavailable(model)

    def unavailable(self, model: str) -> Unavailable:
        """Return the kinds of capacity of ``model`` that are unavailable now."""
        flags = Unavailable.NONE
        for (name, kind, _op), count in self._failures.items():
            if name == model and count >= self.threshold:
                flags |= kind
        return flags
