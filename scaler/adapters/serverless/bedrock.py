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
"""

from __future__ import annotations

import dataclasses
from typing import Final

from scaler.adapters.serverless._aws import Connection
from scaler.core.policy import BedrockTarget, ServerlessTarget
from scaler.ports import PermanentError, ServerlessState

IAM_ACTIONS: Final[tuple[str, ...]] = ()  # the gateway invokes the model; Spillway calls nothing


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Requested:
    """What the actuators last asked of one Bedrock target: instances (always 0 in effect) and quota."""

    instances: int
    tokens_per_minute: int


class BedrockServerless:
    """The Bedrock port: nothing provisioned, requests recorded per target key."""

    def __init__(self, connection: Connection) -> None:
        """Create the adapter; ``connection`` is unused (no API is called)."""
        self.connection = connection
        self.requested: dict[str, Requested] = {}

    async def read(self, target: ServerlessTarget, *, max_concurrency: int) -> ServerlessState:
        """Return none provisioned: on-demand Bedrock provisions nothing. PermanentError: another backend."""
        _own(target)
        return ServerlessState(provisioned=0, ready=0)

    async def set_provisioned(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Record the request and the target's quota; change nothing. PermanentError: another backend."""
        own = _own(target)
        self.requested[own.key] = Requested(instances=instances, tokens_per_minute=own.tokens_per_minute)


def _own(target: ServerlessTarget) -> BedrockTarget:
    if not isinstance(target, BedrockTarget):
        raise PermanentError(f"{target.key}: not a bedrock target")
    return target
