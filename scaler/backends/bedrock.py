"""Bedrock backend: on-demand, per-token inference of a hosted model. Nothing to provision.

This adapter is a no-op port that records what it was asked: it calls no AWS API. Bedrock's
on-demand inference has no capacity to read or set; the model's share of traffic reaches it through
the decision's routing weights (``spill_fraction`` on the decisions topic, which the gateway
applies), and the planner keeps that share within the policy's ``tokens_per_minute``. Checking that
``model_id`` exists (``bedrock:GetFoundationModel``) was considered and left out: the moto server
this project tests against (5.2.5) does not implement it, and an untested call should not run
against a real account.

``read`` reports 0 provisioned instances, so the actuators never see a difference to change;
``set_provisioned`` (the planner never asks for more than 0 on this backend) records the request and
the tokens-per-minute quota in :attr:`BedrockServerless.requested` and changes nothing.

The profile: nothing to provision, no cold start, nothing kept warm. Each account has, per model
and Region, an on-demand quota of tokens per minute (input and output counted together) and of
requests per minute; beyond it calls are throttled. Price: per million input tokens and per million
output tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final, Literal

from pydantic import Field, PositiveInt

from scaler.backends.base import Api, Backend, ServerlessBase, ServerlessState, narrow
from scaler.core.profile import BackendProfile

IAM_ACTIONS: Final[tuple[str, ...]] = ()  # the gateway invokes the model; Spillway calls nothing
MODEL_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$"


class BedrockTarget(ServerlessBase):
    """On-demand (per-token) inference of a model Amazon Bedrock hosts: nothing is provisioned.

    The spill share reaches it through the decision's routing weights (``spill_fraction`` on the
    decisions topic, applied by the gateway); the planner spills only within ``tokens_per_minute``.
    """

    PROFILE = BackendProfile(
        name="bedrock",
        cold_start_seconds=0.0,
        keep_warm_seconds=math.inf,
        provisionable=False,
        per_token=True,
        quota_unit="tokens per minute, input + output (targets.serverless.tokens_per_minute)",
        price_unit="per million input tokens and per million output tokens",
        adapter_calls="none: nothing to provision; spill share via the decisions topic's routing weights",
    )

    backend: Literal["bedrock"] = Field(description="Amazon Bedrock on-demand inference.")
    model_id: str = Field(
        pattern=MODEL_ID_RE, description="Bedrock model id or inference profile the gateway calls."
    )
    tokens_per_minute: PositiveInt = Field(
        le=10**10,
        description="Tokens per minute (input + output) this model may use: the account's on-demand "
        "quota for the model in the region (Service Quotas), or the share of it left to spill-over.",
    )

    @property
    def key(self) -> str:
        """Return ``bedrock/model_id``."""
        return f"bedrock/{self.model_id}"

    @property
    def tokens_per_minute_quota(self) -> int | None:
        """Return ``tokens_per_minute``: the quota the planner spills within."""
        return self.tokens_per_minute


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Requested:
    """What the actuators last asked of one Bedrock target: instances (always 0 in effect) and quota."""

    instances: int
    tokens_per_minute: int


class BedrockServerless:
    """The Bedrock port: nothing provisioned, requests recorded per target key."""

    def __init__(self, api: Api) -> None:
        """Create the adapter; ``api`` is unused (no API is called)."""
        self.api = api
        self.requested: dict[str, Requested] = {}

    async def read(self, target: ServerlessBase, *, max_concurrency: int) -> ServerlessState:
        """Return none provisioned: on-demand Bedrock provisions nothing. PermanentError: another backend."""
        narrow(target, BedrockTarget)
        return ServerlessState(provisioned=0, ready=0)

    async def set_provisioned(
        self, target: ServerlessBase, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Record the request and the target's quota; change nothing. PermanentError: another backend."""
        own = narrow(target, BedrockTarget)
        self.requested[own.key] = Requested(instances=instances, tokens_per_minute=own.tokens_per_minute)



BACKEND: Final = Backend(target=BedrockTarget, adapter=BedrockServerless, iam_actions=IAM_ACTIONS)
