"""The serverless registry: every backend the policy schema accepts has an adapter, and calls reach it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scaler.adapters import aws
from scaler.adapters.serverless import REGISTRY, Connection, ServerlessBackends, bedrock, lambda_, sagemaker
from scaler.core.policy import SERVERLESS_TARGET, policy_json_schema
from scaler.ports import PermanentError, ServerlessPort, ServerlessState, TrafficWeightsPort

TARGETS: dict[str, dict[str, Any]] = {
    "lambda": {"backend": "lambda", "function_name": "f", "alias": "live"},
    "sagemaker": {"backend": "sagemaker", "endpoint_name": "e", "variant_name": "burst"},
    "bedrock": {
        "backend": "bedrock",
        "model_id": "meta.llama3-1-8b-instruct-v1:0",
        "tokens_per_minute": 1000,
    },
}


def _schema_backends() -> set[str]:
    serverless = policy_json_schema()["$defs"]["Targets"]["properties"]["serverless"]["anyOf"][0]
    return set(serverless["discriminator"]["mapping"])


def test_the_registry_covers_every_backend_the_policy_schema_accepts() -> None:
    assert set(REGISTRY) == _schema_backends()
    assert set(TARGETS) == _schema_backends()  # this test names a target of each


@pytest.mark.parametrize("backend", sorted(REGISTRY))
def test_each_target_reaches_the_adapter_of_its_backend(backend: str) -> None:
    backends = ServerlessBackends(region="us-east-1")
    adapter = backends.adapter(SERVERLESS_TARGET.validate_python(TARGETS[backend]))
    assert type(adapter) is REGISTRY[backend]
    assert backends.adapter(SERVERLESS_TARGET.validate_python(TARGETS[backend])) is adapter  # made once


def test_only_sagemaker_sets_traffic_weights() -> None:
    made = {name: factory(Connection()) for name, factory in REGISTRY.items()}
    assert {name for name, a in made.items() if isinstance(a, TrafficWeightsPort)} == {"sagemaker"}


def test_an_adapter_refuses_a_target_of_another_backend() -> None:
    lam = SERVERLESS_TARGET.validate_python(TARGETS["lambda"])
    with pytest.raises(PermanentError, match="not a bedrock target"):
        asyncio.run(bedrock.BedrockServerless(Connection()).read(lam, max_concurrency=8))


def test_a_backend_without_an_adapter_is_a_permanent_error_not_a_crash() -> None:
    backends = ServerlessBackends(registry={"lambda": lambda_.LambdaServerless})
    target = SERVERLESS_TARGET.validate_python(TARGETS["bedrock"])
    with pytest.raises(PermanentError, match="no adapter for backend 'bedrock'"):
        asyncio.run(backends.read(target, max_concurrency=8))
    with pytest.raises(PermanentError, match="sets no traffic weights"):
        asyncio.run(ServerlessBackends().read_weights(SERVERLESS_TARGET.validate_python(TARGETS["lambda"])))


def test_a_new_backend_is_one_registry_line_away() -> None:
    """A registry with one more entry dispatches to it: no branch elsewhere names the backends."""

    class Recording:
        def __init__(self, connection: Connection) -> None:
            self.calls: list[int] = []

        async def read(self, target: Any, *, max_concurrency: int) -> ServerlessState:
            return ServerlessState(provisioned=7, ready=5)

        async def set_provisioned(
            self, target: Any, *, instances: int, quota: int, max_concurrency: int
        ) -> None:
            self.calls.append(instances)

    port: type[ServerlessPort] = Recording
    backends = ServerlessBackends(registry={**REGISTRY, "bedrock": port})
    target = SERVERLESS_TARGET.validate_python(TARGETS["bedrock"])
    assert asyncio.run(backends.read(target, max_concurrency=1)) == ServerlessState(provisioned=7, ready=5)


def test_the_iam_actions_are_those_of_every_backend() -> None:
    assert aws.IAM_ACTIONS == lambda_.IAM_ACTIONS + sagemaker.IAM_ACTIONS + bedrock.IAM_ACTIONS
    assert bedrock.IAM_ACTIONS == ()  # the gateway invokes Bedrock; Spillway calls nothing there
