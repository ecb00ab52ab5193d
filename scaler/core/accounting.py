"""How the cluster model counts: slot hold time, the bill by kind, and one request's SLO verdict.

One place for the rules both sides use, so they cannot drift apart: the simulator's cluster models
(:mod:`scaler.sim.cluster`, :mod:`scaler.sim.fluid`, the "as run" row of :mod:`scaler.sim.as_run`)
and the daemon's shadow ledger (:mod:`scaler.control.ledger`). Pure.

* **Hold time.** An instance (replica or serverless) has ``C = max_concurrency`` slots; a request of
  ``P`` prompt and ``O`` output tokens holds one for ``S = C * (P/Tp + O/Td)`` seconds and sees its
  first token ``P/Tp`` after its slot starts, so ``TTFT = wait + P/Tp``.
* **Bill.** Replicas per second at ``replica_per_hour`` and standby at ``standby_per_hour`` (from
  the moment they are requested); serverless per busy instance-second (``S/C`` per request served there) at
  ``serverless_per_gpu_second``, plus the per-million prices on its prompt and output tokens;
  provisioned serverless per instance-second at ``serverless_provisioned_per_hour`` (a per-token
  backend such as Bedrock bills tokens only).
* **Verdict.** A request meets the SLO when its TTFT is within ``ttft_seconds`` and its queue wait
  within ``queue_wait_seconds`` (a target the policy leaves unset never binds).
"""

from __future__ import annotations

import dataclasses
import math
from typing import overload

import numpy as np

from scaler.core import queueing
from scaler.core.policy import ModelPolicy
from scaler.core.types import FloatArray


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CostBreakdown:
    """Money spent, by kind (same currency as the policy's prices)."""

    replicas: float  # serving replicas, billed per second from the moment they were requested
    standby: float  # warm standby replicas, billed the same way
    serverless_busy: float  # on-demand + provisioned serverless, per busy instance-second
    serverless_provisioned: float  # pre-warmed serverless instances, per hour whether used or not
    serverless_tokens: float  # per-token serverless charges

    @property
    def total(self) -> float:
        """Return the total cost."""
        serverless = self.serverless_busy + self.serverless_provisioned + self.serverless_tokens
        return self.replicas + self.standby + serverless

    def plus(self, other: CostBreakdown) -> CostBreakdown:
        """Return the kind-by-kind sum of this bill and ``other``."""
        return CostBreakdown(
            replicas=self.replicas + other.replicas,
            standby=self.standby + other.standby,
            serverless_busy=self.serverless_busy + other.serverless_busy,
            serverless_provisioned=self.serverless_provisioned + other.serverless_provisioned,
            serverless_tokens=self.serverless_tokens + other.serverless_tokens,
        )

    def minus(self, other: CostBreakdown) -> CostBreakdown:
        """Return the kind-by-kind difference of this bill and ``other`` (what accrued since ``other``)."""
        return CostBreakdown(
            replicas=self.replicas - other.replicas,
            standby=self.standby - other.standby,
            serverless_busy=self.serverless_busy - other.serverless_busy,
            serverless_provisioned=self.serverless_provisioned - other.serverless_provisioned,
            serverless_tokens=self.serverless_tokens - other.serverless_tokens,
        )

    def as_dict(self) -> dict[str, float]:
        """Return the bill as ``{kind: amount}`` (the kinds are the field names)."""
        return dataclasses.asdict(self)


NO_COST = CostBreakdown(
    replicas=0.0, standby=0.0, serverless_busy=0.0, serverless_provisioned=0.0, serverless_tokens=0.0
)
COST_KINDS = tuple(f.name for f in dataclasses.fields(CostBreakdown))


@overload
def hold_seconds(policy: ModelPolicy, prompt: FloatArray, output: FloatArray) -> FloatArray: ...
@overload
def hold_seconds(policy: ModelPolicy, prompt: float, output: float) -> float: ...
def hold_seconds(
    policy: ModelPolicy, prompt: FloatArray | float, output: FloatArray | float
) -> FloatArray | float:
    """Return how long each request holds one slot: ``C * (P/Tp + O/Td)`` seconds (arrays or one).

    The work ``P/Tp + O/Td`` is :func:`scaler.core.queueing.request_work`, the planner's too.
    """
    slots = policy.replica.max_concurrency
    if isinstance(prompt, np.ndarray) or isinstance(output, np.ndarray):
        prompts, outputs = np.asarray(prompt, dtype=np.float64), np.asarray(output, dtype=np.float64)
        return np.asarray(slots * queueing.request_work(policy, prompts, outputs), dtype=np.float64)
    return slots * queueing.request_work(policy, float(prompt), float(output))


def bill(
    policy: ModelPolicy,
    *,
    replica_seconds: float = 0.0,
    standby_seconds: float = 0.0,
    serverless_busy_seconds: float = 0.0,
    provisioned_seconds: float = 0.0,
    prompt_tokens: float = 0.0,
    output_tokens: float = 0.0,
) -> CostBreakdown:
    """Return what these quantities cost at ``policy``'s prices and serverless backend.

    Replica and standby seconds are replica-seconds billed; ``serverless_busy_seconds`` is busy
    instance-seconds (``S/C`` summed over the requests serverless served; free on a per-token
    backend); ``provisioned_seconds`` is provisioned instance-seconds (free where nothing can be
    provisioned); ``prompt_tokens`` and ``output_tokens`` were served on serverless.
    """
    prices = policy.prices
    per_input, per_output = policy.serverless_token_prices
    return CostBreakdown(
        replicas=replica_seconds * prices.replica_per_hour / 3600.0,
        standby=standby_seconds * prices.standby / 3600.0,
        serverless_busy=serverless_busy_seconds * policy.serverless_gpu_second_price,
        serverless_provisioned=provisioned_seconds * policy.serverless_provisioned_price / 3600.0,
        serverless_tokens=(prompt_tokens * per_input + output_tokens * per_output) / 1e6,
    )



def wait_limit(policy: ModelPolicy) -> tuple[float, float]:
    """Return (TTFT target, queue-wait target) in seconds, ``inf`` where the SLO sets none."""
    slo = policy.slo
    ttft = slo.ttft_seconds if slo.ttft_seconds is not None else math.inf
    queue = slo.queue_wait_seconds if slo.queue_wait_seconds is not None else math.inf
    return ttft, queue
