"""How a serverless backend behaves, as data: how it starts, stays warm, is limited and is billed.

Each backend module in :mod:`scaler.backends` declares its :class:`BackendProfile` beside its target
schema; :data:`GENERIC` is the profile of a policy that names no serverless target. The planner
(:mod:`scaler.core.plan`) and the simulator's cluster model (:mod:`scaler.sim.cluster`) read the same
profile, so what the planner assumes is what the simulator plays. A policy's
``lead_times.serverless_cold_start_seconds``, when set, overrides the profile's cold start (see
:meth:`scaler.core.policy.ModelPolicy.serverless_profile`); the learned lead times take the
profile's cold start as their prior.

``generic`` is a serverless GPU platform with instances: the 15 s cold start and 60 s keep-warm of
the policy defaults, which describe container-snapshot GPU platforms, not an AWS offering.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BackendProfile:
    """How one serverless backend behaves: what the planner plans with and the simulator plays."""

    name: str
    cold_start_seconds: float  # from nothing warm to serving the first request
    keep_warm_seconds: float  # an idle on-demand instance stays warm this long (inf: nothing to keep)
    provisionable: bool  # capacity can be pre-warmed (provisioned) ahead of traffic
    per_token: bool  # billed per token and limited by tokens per minute: no instances at all
    quota_unit: str  # what the backend's quota counts
    price_unit: str  # what the backend bills
    adapter_calls: str  # what the actuator's adapter calls (README table)


GENERIC: Final = BackendProfile(
    name="generic",
    cold_start_seconds=15.0,
    keep_warm_seconds=60.0,
    provisionable=True,
    per_token=False,
    quota_unit="instances (bounds.serverless_quota)",
    price_unit="busy GPU-second (+ per token); provisioned instance-hour",
    adapter_calls="none: no serverless target, decisions only published",
)


def requests_per_second_within(*, tokens_per_minute: float, tokens_per_request: float) -> float:
    """Return the request rate a tokens-per-minute quota admits at ``tokens_per_request`` (0 tokens: inf)."""
    if tokens_per_request <= 0.0:
        return math.inf
    return max(tokens_per_minute, 0.0) / 60.0 / tokens_per_request
