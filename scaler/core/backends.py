"""Serverless backends as data: how each one starts, stays warm, is limited and is billed.

One :class:`BackendProfile` per value of a policy's ``targets.serverless.backend``, plus
``generic`` for a policy that names no serverless target. The planner (:mod:`scaler.core.plan`) and
the simulator's cluster model (:mod:`scaler.sim.cluster`) read the same profile, so what the planner
assumes is what the simulator plays. A policy's ``lead_times.serverless_cold_start_seconds``, when
set, overrides the profile's cold start (see :meth:`scaler.core.policy.ModelPolicy.serverless_profile`);
the learned lead times take the profile's cold start as their prior.

The figures, and the AWS documentation they rest on (paraphrased, not quoted):

* ``lambda``: AWS Lambda has no GPUs; a function runs on at most 10,240 MB of memory and 6 vCPUs.
  A new execution environment downloads the code (a container image of up to 10 GB), starts the
  runtime and runs the initialisation code before the first request; for an LLM that is loading
  gigabytes of weights, tens of seconds to minutes. Provisioned concurrency is initialised ahead of
  traffic and answers without that start (AWS designs it for double-digit millisecond latency): it is
  what makes Lambda fast, and it is billed per hour whether used or not. AWS keeps an idle
  environment for a period it calls non-deterministic; 60 s is assumed. Quota: reserved concurrency
  (concurrent executions); price: per GB-second of duration plus provisioned concurrency.
* ``sagemaker``: an endpoint that scaled its GPU instances to zero (only possible with inference
  components) cannot answer until it has provisioned an instance again, which AWS says takes several
  minutes, with invocations failing meanwhile. Instances kept in service (``DesiredInstanceCount``)
  or provisioned concurrency of a serverless variant (CPU only, no GPUs) are what make it fast.
  Scale-in after a burst is assumed 300 s later (a typical scale-in cooldown). Quota: instances of
  the variant; price: per instance-hour.
* ``bedrock``: on-demand inference of a model Amazon hosts: nothing to provision, no cold start,
  nothing kept warm. Each account has, per model and Region, an on-demand quota of tokens per minute
  (input and output counted together) and of requests per minute; beyond it calls are throttled.
  Price: per million input tokens and per million output tokens. Spill-over reaches it through the
  decision's routing weights (``spill_fraction`` on the decisions topic), which the gateway applies.
* ``generic``: a serverless GPU platform with instances (the policy names no AWS target): the
  15 s cold start and 60 s keep-warm of the policy defaults, which describe container-snapshot GPU
  platforms, not an AWS offering.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final, Literal

BackendName = Literal["generic", "lambda", "sagemaker", "bedrock"]


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
LAMBDA: Final = BackendProfile(
    name="lambda",
    cold_start_seconds=120.0,
    keep_warm_seconds=60.0,
    provisionable=True,
    per_token=False,
    quota_unit="reserved concurrency = serverless_quota x max_concurrency executions",
    price_unit="GB-second of duration; provisioned concurrency per hour",
    adapter_calls="Get/Put/DeleteProvisionedConcurrencyConfig, Get/PutFunctionConcurrency",
)
SAGEMAKER: Final = BackendProfile(
    name="sagemaker",
    cold_start_seconds=360.0,
    keep_warm_seconds=300.0,
    provisionable=True,
    per_token=False,
    quota_unit="instances of the variant (serverless variant: concurrency)",
    price_unit="instance-hour (serverless variant: per second of compute)",
    adapter_calls="DescribeEndpoint(Config), UpdateEndpointWeightsAndCapacities, CreateEndpointConfig, "
    "UpdateEndpoint",
)
BEDROCK: Final = BackendProfile(
    name="bedrock",
    cold_start_seconds=0.0,
    keep_warm_seconds=math.inf,
    provisionable=False,
    per_token=True,
    quota_unit="tokens per minute, input + output (targets.serverless.tokens_per_minute)",
    price_unit="per million input tokens and per million output tokens",
    adapter_calls="none: nothing to provision; spill share via the decisions topic's routing weights",
)
PROFILES: Final[dict[str, BackendProfile]] = {p.name: p for p in (GENERIC, LAMBDA, SAGEMAKER, BEDROCK)}


def requests_per_second_within(*, tokens_per_minute: float, tokens_per_request: float) -> float:
    """Return the request rate a tokens-per-minute quota admits at ``tokens_per_request`` (0 tokens: inf)."""
    if tokens_per_request <= 0.0:
        return math.inf
    return max(tokens_per_minute, 0.0) / 60.0 / tokens_per_request
