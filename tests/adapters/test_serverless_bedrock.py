"""The Bedrock backend behind the actuators: nothing provisioned, nothing called, nothing unavailable."""

from __future__ import annotations

import asyncio
import dataclasses

from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.serverless import AwsApi, Connection, ServerlessBackends
from scaler.backends.bedrock import BedrockServerless, BedrockTarget, Requested
from scaler.core.policy import ModelPolicy
from scaler.core.types import Unavailable
from scaler.ports import ServerlessState
from tests.adapters.actuator_fixtures import decision

BEDROCK = {"backend": "bedrock", "model_id": "meta.llama3-1-8b-instruct-v1:0", "tokens_per_minute": 300_000}
PRICES = {"serverless_per_million_input_tokens": 0.22, "serverless_per_million_output_tokens": 0.22}


def _policy() -> ModelPolicy:
    return ModelPolicy.model_validate(
        {"name": "chat", "prices": PRICES, "bounds": {"min_replicas": 1}, "targets": {"serverless": BEDROCK}}
    )


def _actuators(dry_run: bool = False) -> tuple[Actuators, ServerlessBackends, CollectorRegistry]:
    registry = CollectorRegistry()
    # no endpoint and no credentials: any AWS call would fail, so passing shows none is made
    backends = ServerlessBackends(endpoint_url="http://127.0.0.1:9", region="us-east-1", timeout_seconds=0.2)
    acts = Actuators(
        kubernetes=None,
        serverless=backends,
        metrics=ActuatorMetrics(registry),
        dry_run=dry_run,
        retry=RetryPolicy(attempts=1, base_seconds=0.0, cap_seconds=0.0, timeout_seconds=1.0),
        seed=1,
    )
    return acts, backends, registry


def test_a_bedrock_target_reads_nothing_provisioned_and_changes_nothing() -> None:
    acts, _, registry = _actuators()
    pol = _policy()
    current = asyncio.run(acts.read(pol))
    assert current.serverless == ServerlessState(provisioned=0, ready=0)
    assert current.weights is None  # the spill share goes by the decisions topic, not by an AWS weight
    spilling = dataclasses.replace(decision(replicas=1, serverless=0, at=1_700_000_000.0), spill_fraction=0.4)
    assert asyncio.run(acts.apply(policy=pol, decision=spilling, current=current, now=1_700_000_000.0)) == []
    assert acts.unavailable("chat") == Unavailable.NONE
    target = {"kind": "serverless", "target": "bedrock/meta.llama3-1-8b-instruct-v1:0"}
    assert registry.get_sample_value("scaler_actuator_failures_total", target) is None


def test_the_bedrock_port_records_what_it_was_asked() -> None:
    port = BedrockServerless(AwsApi(Connection()))
    target = BedrockTarget.model_validate(BEDROCK)
    asyncio.run(port.set_provisioned(target, instances=0, quota=16, max_concurrency=64))
    assert port.requested == {target.key: Requested(instances=0, tokens_per_minute=300_000)}
    assert asyncio.run(port.read(target, max_concurrency=64)) == ServerlessState(provisioned=0, ready=0)
