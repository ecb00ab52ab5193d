"""The backend registry: every backend the policy schema accepts is one module with a target, a profile
and an adapter, and the actuators' calls reach that adapter."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from typing import Any

import pytest

import scaler.backends
from scaler.adapters import aws
from scaler.adapters.serverless import IAM_ACTIONS, REGISTRY, AwsApi, Connection, ServerlessBackends
from scaler.backends import BACKENDS, bedrock, ecs, lambda_, sagemaker
from scaler.backends.base import Backend, instances_from_units, units_from_instances
from scaler.core.policy import SERVERLESS_TARGET, ModelPolicy, policy_json_schema
from scaler.ports import PermanentError, ServerlessPort, ServerlessState, TrafficWeightsPort

TARGETS: dict[str, dict[str, Any]] = {
    "lambda": {"backend": "lambda", "function_name": "f", "alias": "live"},
    "sagemaker": {"backend": "sagemaker", "endpoint_name": "e", "variant_name": "burst"},
    "bedrock": {
        "backend": "bedrock",
        "model_id": "meta.llama3-1-8b-instruct-v1:0",
        "tokens_per_minute": 1000,
    },
    "ecs": {"backend": "ecs", "cluster": "gpu-burst", "service": "llama-8b-burst"},
}


def _schema_backends() -> set[str]:
    serverless = policy_json_schema()["$defs"]["Targets"]["properties"]["serverless"]["anyOf"][0]
    return set(serverless["discriminator"]["mapping"])


def test_the_registry_covers_every_backend_the_policy_schema_accepts() -> None:
    assert set(REGISTRY) == set(BACKENDS) == _schema_backends()
    assert set(TARGETS) == _schema_backends()  # this test names a target of each


def test_every_backend_module_is_listed_once() -> None:
    """A module in scaler/backends that defines BACKEND but is not in BACKENDS would be dead code."""
    modules = [
        importlib.import_module(f"scaler.backends.{info.name}")
        for info in pkgutil.iter_modules(scaler.backends.__path__)
    ]
    declared = [m.BACKEND for m in modules if isinstance(getattr(m, "BACKEND", None), Backend)]
    assert sorted(b.name for b in declared) == sorted(BACKENDS)
    assert all(BACKENDS[b.name] is b for b in declared)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_names_itself_once_in_its_target_profile_and_key(name: str) -> None:
    backend = BACKENDS[name]
    target = SERVERLESS_TARGET.validate_python(TARGETS[name])
    assert type(target) is backend.target
    assert target.backend == backend.profile.name == name
    assert target.key.startswith(f"{name}/")
    policy = ModelPolicy.model_validate(
        {
            "name": "m",
            "targets": {"serverless": TARGETS[name]},
            "prices": {"serverless_per_million_tokens": 0.5} if backend.profile.per_token else {},
        }
    )
    assert policy.serverless_profile == backend.profile
    assert (policy.serverless_tokens_per_minute is not None) == backend.profile.per_token


@pytest.mark.parametrize("backend", sorted(REGISTRY))
def test_each_target_reaches_the_adapter_of_its_backend(backend: str) -> None:
    backends = ServerlessBackends(region="us-east-1")
    adapter = backends.adapter(SERVERLESS_TARGET.validate_python(TARGETS[backend]))
    assert type(adapter) is REGISTRY[backend]
    assert backends.adapter(SERVERLESS_TARGET.validate_python(TARGETS[backend])) is adapter  # made once


def test_only_sagemaker_sets_traffic_weights() -> None:
    made = {name: factory(AwsApi(Connection())) for name, factory in REGISTRY.items()}
    assert {name for name, a in made.items() if isinstance(a, TrafficWeightsPort)} == {"sagemaker"}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_an_adapter_refuses_a_target_of_another_backend(name: str) -> None:
    other = next(n for n in sorted(TARGETS) if n != name)
    target = SERVERLESS_TARGET.validate_python(TARGETS[other])
    adapter = BACKENDS[name].adapter(AwsApi(Connection()))
    with pytest.raises(PermanentError, match=f"not a {name} target"):
        asyncio.run(adapter.read(target, max_concurrency=8))


def test_a_backend_without_an_adapter_is_a_permanent_error_not_a_crash() -> None:
    backends = ServerlessBackends(registry={"lambda": lambda_.LambdaServerless})
    target = SERVERLESS_TARGET.validate_python(TARGETS["bedrock"])
    with pytest.raises(PermanentError, match="no adapter for backend 'bedrock'"):
        asyncio.run(backends.read(target, max_concurrency=8))
    with pytest.raises(PermanentError, match="sets no traffic weights"):
        asyncio.run(ServerlessBackends().read_weights(SERVERLESS_TARGET.validate_python(TARGETS["lambda"])))


def test_a_registry_entry_is_all_the_dispatcher_needs() -> None:
    """A registry with one entry swapped dispatches to it: no branch elsewhere names the backends."""

    class Recording:
        def __init__(self, api: Any) -> None:
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
    assert IAM_ACTIONS == aws.IAM_ACTIONS
    assert IAM_ACTIONS == (
        lambda_.IAM_ACTIONS + sagemaker.IAM_ACTIONS + bedrock.IAM_ACTIONS + ecs.IAM_ACTIONS
    )
    assert bedrock.IAM_ACTIONS == ()  # the gateway invokes Bedrock; Spillway calls nothing there
    assert len(set(IAM_ACTIONS)) == len(IAM_ACTIONS)


def test_units_from_instances_are_instances_times_max_concurrency() -> None:
    assert units_from_instances(instances=3, max_concurrency=32) == 96
    assert units_from_instances(instances=-1, max_concurrency=32) == 0
    assert instances_from_units(units=95, max_concurrency=32) == 2
