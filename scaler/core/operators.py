"""Operators stay in charge: paused targets, out-of-band replica changes, and which pods go first. Pure.

* A target annotated ``spillway.io/paused: "true"`` is never written; the planner treats its kind as
  unavailable (serverless covers what it cannot).
* An out-of-band change (a replica count on the target that Spillway did not write) is an
  :class:`ExternalChange`. With ``behavior.external_changes: respect-for-scale-down-delay`` (the
  default) the operator's count is a floor until ``scale_down_delay_seconds`` have passed since the
  change was seen (:func:`external_floor`); with ``correct`` it is overwritten at once.
* Drain-aware scale-in: :func:`pods_to_remove` picks the pods the ReplicaSet should remove first
  (marked with a low ``controller.kubernetes.io/pod-deletion-cost``): idle pods before busy ones,
  fewest requests in flight first; a pod without fresh metrics counts as busy. Only the ReplicaSet
  controller of Kubernetes 1.22+ (1.21 with its feature gate) honours that annotation
  (:func:`deletion_cost_honoured`).

Time is an argument (``now=``); nothing here reads a clock or performs I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final, Literal

from scaler.core.types import Decision

ExternalChanges = Literal["respect-for-scale-down-delay", "correct"]
PAUSED_ANNOTATION: Final = "spillway.io/paused"
DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"
DRAIN_COST: Final = -1000
"""The pod-deletion-cost given to the pods picked for removal (unmarked pods cost 0: removed later)."""
DELETION_COST_SINCE: Final = (1, 22)
"""The first Kubernetes minor whose ReplicaSet controller honours pod-deletion-cost by default (beta)."""


def deletion_cost_honoured(major: str, minor: str) -> bool | None:
    """Return whether an API server of version ``major``.``minor`` honours pod-deletion-cost.

    True from 1.22 (beta, on by default); None for 1.21 (alpha: only with the ``PodDeletionCost``
    feature gate) and for a version that cannot be read (vendors write e.g. ``"27+"``: the digits
    count); False before 1.21, whose ReplicaSets remove pods by their own ranking.
    """
    numbers = []
    for part in (major, minor):
        digits = ""
        for char in part.strip():
            if not char.isdigit():
                break
            digits += char
        if not digits:
            return None
        numbers.append(int(digits))
    version = (numbers[0], numbers[1])
    if version >= DELETION_COST_SINCE:
        return True
    if version == (1, 21):
        return None
    return False


def is_paused(annotations: Mapping[str, str] | None) -> bool:
    """Return True when ``annotations`` hold ``spillway.io/paused: "true"`` (case-insensitive value)."""
    if not annotations:
        return False
    return str(annotations.get(PAUSED_ANNOTATION, "")).strip().lower() == "true"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExternalChange:
    """A replica count that someone other than Spillway set on a target, seen at ``at``.

    ``previous`` is what Spillway had written (or first read) before; ``generation`` the workload's
    metadata.generation when the change was seen (None: unknown).
    """

    at: float
    replicas: int
    previous: int
    generation: int | None = None


def detect_change(
    *, expected: int | None, read: int, at: float, generation: int | None
) -> ExternalChange | None:
    """Return the external change that ``read`` shows against the count Spillway ``expected``, or None.

    None when nothing was expected yet (the first read is the baseline) or the counts agree.
    """
    if expected is None or read == expected:
        return None
    return ExternalChange(at=at, replicas=read, previous=expected, generation=generation)


def external_floor(
    change: ExternalChange | None, *, mode: ExternalChanges, delay_seconds: float, now: float
) -> int | None:
    """Return the replica count to keep at least at ``now`` because of ``change``, or None.

    ``correct`` never keeps a floor; ``respect-for-scale-down-delay`` keeps the operator's count
    from the change until ``delay_seconds`` after it (a change seen in the future counts from now).
    """
    if change is None or mode == "correct":
        return None
    if now - change.at >= delay_seconds:
        return None
    return change.replicas


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OperatorState:
    """What operators did to one model's targets, as last read back (by kind: replicas, standby)."""

    paused: frozenset[str] = frozenset()
    external: Mapping[str, ExternalChange] = dataclasses.field(default_factory=dict)


def respect_operators(
    decision: Decision,
    *,
    state: OperatorState,
    mode: ExternalChanges,
    delay_seconds: float,
    now: float,
) -> tuple[Decision, dict[str, int]]:
    """Return ``decision`` raised to the floors of external changes in force, and those floors by kind.

    The bounds still apply after this (the caller clamps): an operator's count above max_replicas
    is kept only up to it. Paused kinds are left as decided (their targets are not written).
    """
    floors: dict[str, int] = {}
    for kind, change in state.external.items():
        floor = external_floor(change, mode=mode, delay_seconds=delay_seconds, now=now)
        if floor is not None and kind not in state.paused:
            floors[kind] = floor
    replicas = max(decision.replicas, floors.get("replicas", decision.replicas))
    standby = max(decision.standby, floors.get("standby", decision.standby))
    if (replicas, standby) == (decision.replicas, decision.standby):
        return decision, floors
    notes = ", ".join(f"{kind} >= {value}" for kind, value in sorted(floors.items()))
    reason = f"{decision.reason} [external change kept until the scale-down delay passes: {notes}]"
    raised = dataclasses.replace(
        decision, replicas=replicas, standby=standby, reason=reason, bound_by="external_change"
    )
    return raised, floors


def pods_to_remove(*, pods: Sequence[str], inflight: Mapping[str, int], count: int) -> list[str]:
    """Return at most ``count`` of ``pods`` for the ReplicaSet to remove first, fewest in flight first.

    Ties go by name. A pod absent from ``inflight`` (no fresh metrics) counts as busy and is never
    picked: among such pods the ReplicaSet's own ranking decides, after every picked pod. So no pod
    with requests in flight is picked while an idle one is left. Raises ValueError on a negative count.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    known = [pod for pod in dict.fromkeys(pods) if pod in inflight]
    return sorted(known, key=lambda pod: (inflight[pod], pod))[:count]
