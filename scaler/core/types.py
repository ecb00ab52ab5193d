"""Value types shared by the pure core: what the forecaster hands the planner, and what the planner returns.

All times are unix seconds (float) passed in by the caller; nothing here reads a clock.
Capacity is counted in *instances*: one Kubernetes replica or one serverless instance, each with the
capacity of :class:`scaler.core.policy.Replica`.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


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
    bound_by: str
    quantile: float
    cost_per_hour: dict[str, float]
    held: bool = False
    recent_targets: tuple[tuple[float, int], ...] = ()
    last_scale_down_at: float | None = None
