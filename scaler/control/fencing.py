"""Fencing, pure: when a process may still act for a partition's models, given what it knows and ``now``.

Two facts gate every published decision and every actuation (:mod:`scaler.adapters.fence` reads
them): the consumer group's view (the partition is assigned in the current generation and the
group session cannot have expired) and, with Kubernetes, a ``coordination.k8s.io`` Lease per
partition held *with margin*. All times here are one process's monotonic seconds: a process never
compares its clock with another's (Knative's buckets and client-go's leader election do the same).

* A holder counts its Lease from the moment it *sent* the acquire or renew that succeeded: the
  apiserver stored it later, so every other process sees it no earlier.
* Another process counts the Lease from the moment it first *observed* its current record
  (holder and resourceVersion) and may take it ``duration`` seconds after that, unless the record
  changed meanwhile. So the holder stops ``margin`` seconds before anyone else may start.
* The group session: the broker keeps a member for ``session_timeout`` after the last heartbeat it
  received, and a heartbeat is received after it was sent; a member whose last successful heartbeat
  was *sent* more than ``session_timeout - margin`` ago may have been replaced already.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

FenceReason = Literal["not_assigned", "generation_changed", "session_expired", "lease_not_held"]


def held_with_margin(*, renewed_at: float | None, duration: float, margin: float, now: float) -> bool:
    """Return True while a Lease renewed (sent) at ``renewed_at`` is still ours with ``margin`` to spare.

    ``renewed_at`` None means never acquired. A clock that went backwards (``now < renewed_at``)
    is not trusted either: False.
    """
    if renewed_at is None or now < renewed_at:
        return False
    return now - renewed_at < duration - margin


def may_take(
    *,
    holder: str | None,
    me: str,
    observed_at: float,
    duration: float,
    now: float,
) -> bool:
    """Return True if ``me`` may write itself as holder of a Lease whose record holds ``holder``.

    Free (no holder), already ours, or unchanged for ``duration`` seconds since ``observed_at``
    (when this process first saw that record) by this process's clock.
    """
    if not holder or holder == me:
        return True
    return now - observed_at >= duration


def renew_due(*, renewed_at: float | None, every: float, now: float) -> bool:
    """Return True when a Lease renewed at ``renewed_at`` should be renewed again (every ``every`` s)."""
    return renewed_at is None or now - renewed_at >= every


def session_alive(*, heartbeat_at: float | None, session_timeout: float, margin: float, now: float) -> bool:
    """Return True while the broker cannot yet have expired a member whose last good heartbeat was sent at
    ``heartbeat_at`` (None: no heartbeat or join known, so not alive)."""
    if heartbeat_at is None or now < heartbeat_at:
        return False
    return now - heartbeat_at < session_timeout - margin


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupView:
    """What a consumer knows of one partition: assigned now, in which generation, heartbeat age."""

    assigned: bool
    assigned_generation: int | None  # generation the partition was assigned in
    current_generation: int | None  # the consumer's generation now (None: unknown, e.g. reset)
    heartbeat_at: float | None  # when the last successful heartbeat (or join) was sent


def fence_reason(
    view: GroupView,
    *,
    session_timeout: float,
    margin: float,
    lease_renewed_at: float | None,
    lease_duration: float | None,
    lease_margin: float,
    now: float,
) -> FenceReason | None:
    """Return why a decision for a model of this partition must not leave the process now, or None.

    ``lease_duration`` None means leases are off (only the group checks apply).
    """
    if not view.assigned:
        return "not_assigned"
    if view.current_generation is None or view.current_generation != view.assigned_generation:
        return "generation_changed"
    if not session_alive(
        heartbeat_at=view.heartbeat_at, session_timeout=session_timeout, margin=margin, now=now
    ):
        return "session_expired"
    if lease_duration is not None and not held_with_margin(
        renewed_at=lease_renewed_at, duration=lease_duration, margin=lease_margin, now=now
    ):
        return "lease_not_held"
    return None
