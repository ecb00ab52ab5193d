"""Value types shared by the pure core: what the forecaster hands the planner, and what the planner returns.

All times are unix seconds (float) passed in by the caller; nothing here reads a clock.
Capacity is counted in *instances*: one Kubernetes replica or one serverless instance, each with the
capacity of :class:`scaler.core.policy.Replica`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Final, Literal, NewType

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

Reason = Literal[
    "fractile",  # the cost-optimal fractile of the forecast sized the replicas
    "break_even",  # a trickle: one replica would idle below break-even, serverless serves it
    "quota",  # the serverless quota forced more replicas than the fractile
    "slo",  # no serverless spill-over (quota 0): replicas alone meet the SLO
    "serverless-unavailable",  # as slo, because the serverless backend is failing
    "kubernetes-unavailable",  # Kubernetes is failing: the replicas are held
    "cold_start",  # serving replicas instead of standby cover the cold start
    "stabilization",  # a higher target within the stabilisation window held the replicas up
    "scale_down_delay",  # a higher target within the scale-down delay held the replicas up
    "step_up",  # limited by behavior.max_step_up
    "step_down",  # limited by behavior.max_step_down
    "min_replicas",  # raised to the policy's bounds
    "max_replicas",  # lowered to the policy's bounds
    "no-data",  # no usable forecast: the previous decision (or the observed state) held
    "override-freeze",  # an Alertmanager freeze kept the previous replicas
    "override-boost",  # an Alertmanager boost raised the replicas
    "external_change",  # an out-of-band change of the workload was kept
    "none",  # nothing is named (planners other than scaler.core.plan, and reasons this version lacks)
]
REASONS: Final[frozenset[str]] = frozenset(typing.get_args(Reason))
SCHEDULE_PREFIX: Final = "schedule:"
# ``schedule:<name>``: the bounds of the active schedule ``name`` clamped the replicas; made by by_schedule
ScheduleBound = NewType("ScheduleBound", str)
BoundBy = Reason | ScheduleBound


def by_schedule(name: str) -> ScheduleBound:
    """Return the ``bound_by`` of replicas clamped by the bounds of schedule ``name``."""
    return ScheduleBound(SCHEDULE_PREFIX + name)


def schedule_name(bound_by: BoundBy) -> str | None:
    """Return the schedule named by a ``schedule:<name>`` bound, None for a fixed reason."""
    return bound_by.removeprefix(SCHEDULE_PREFIX) if bound_by.startswith(SCHEDULE_PREFIX) else None


def parse_bound_by(text: str) -> BoundBy:
    """Return ``text`` as a BoundBy; raise ValueError when it is no reason and no ``schedule:<name>``."""
    if text in REASONS:
        return typing.cast("Reason", text)
    if text.startswith(SCHEDULE_PREFIX) and len(text) > len(SCHEDULE_PREFIX):
        return ScheduleBound(text)
    raise ValueError(f"bound_by {text[:80]!r} is not a reason the planner gives")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemandForecast:
    """Forecast request demand for one model, bucket by bucket, as a distribution.

    ``rate_quantiles[k, h]`` is the ``levels[k]`` quantile of the request rate (requests/second) in
    bucket ``h``, which covers ``[start + h*bucket_seconds, start + (h+1)*bucket_seconds)``. Levels are
    strictly increasing in (0, 1); each column is non-decreasing in k and non-negative.
    ``mean_prompt_tokens`` and ``mean_output_tokens`` are the expected tokens per request over the
    horizon. ``valid`` is False when there is no usable data: the planner then holds its last decision.
    """

    start: float
    bucket_seconds: float
    levels: FloatArray
    rate_mean: FloatArray
    rate_quantiles: FloatArray
    mean_prompt_tokens: float
    mean_output_tokens: float
    valid: bool = True
    note: str = ""

    @property
    def horizon_seconds(self) -> float:
        """Return the time the forecast covers, in seconds."""
        return float(self.rate_mean.shape[0]) * self.bucket_seconds

    @classmethod
    def unusable(cls, *, start: float, note: str) -> DemandForecast:
        """Return a forecast that carries no data (the planner holds its last decision on it)."""
        empty = np.zeros(0, dtype=np.float64)
        return cls(
            start=start,
            bucket_seconds=1.0,
            levels=np.array([0.5]),
            rate_mean=empty,
            rate_quantiles=np.zeros((1, 0)),
            mean_prompt_tokens=0.0,
            mean_output_tokens=0.0,
            valid=False,
            note=note,
        )


class Unavailable(enum.Flag):
    """Kinds of capacity that currently cannot be changed (API failing, or switched off by an override)."""

    NONE = 0
    KUBERNETES = enum.auto()
    SERVERLESS = enum.auto()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What is true now for one model, as measured (not as decided)."""

    replicas_ready: int
    replicas_starting: int
    standby_ready: int
    standby_starting: int
    serverless_provisioned: int
    request_rate: float | None = None  # requests/s over the last bucket; None when unknown
    unavailable: Unavailable = Unavailable.NONE
    burst_factor: float = 1.0  # how bursty arrivals are inside a bucket (scaler.core.burstiness), >= 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Desired state for one model, and why.

    ``replicas`` and ``standby`` are Kubernetes replica counts (serving, and warm standby out of the
    Service); ``serverless_provisioned`` is the number of pre-warmed serverless instances;
    ``spill_fraction`` is the share of new requests the gateway should route to serverless now.
    ``recent_targets`` is the planner's own memory (time, unclamped replica target) over the
    scale-down and stabilisation windows; pass the previous decision back in and it carries over.
    """

    at: float
    replicas: int
    standby: int
    serverless_provisioned: int
    spill_fraction: float
    reason: str
    bound_by: BoundBy
    quantile: float
    cost_per_hour: dict[str, float]
    held: bool = False
    recent_targets: tuple[tuple[float, int], ...] = ()
    last_scale_down_at: float | None = None
