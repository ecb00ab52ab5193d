"""The ECS backend against a real moto server: a policy naming an ECS service gets its desired tasks
set by the actuators, within the quota, and a missing service is named."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.serverless import AwsApi, Connection, ServerlessBackends
from scaler.backends.ecs import EcsServerless, EcsTarget
from scaler.core.policy_file import PolicyError, parse_policy_text
from scaler.ports import PermanentError, ServerlessState
from tests.adapters.actuator_fixtures import Process, decision, http_json, policy, start_moto
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ECS = {"backend": "ecs", "cluster": "gpu-burst", "service": "llama-8b-burst"}


@pytest.fixture(scope="module")
def moto() -> Iterator[Process]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", REGION),
        ):
            env.setenv(name, value)
        server = start_moto(free_port())
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def ecs(moto: Process) -> Any:
    """Return an ECS client of a fresh moto with service llama-8b-burst (1 task) on cluster gpu-burst."""
    http_json("POST", f"{moto.url}/moto-api/reset", {})
    client = boto3.client("ecs", region_name=REGION, endpoint_url=moto.url)
    client.create_cluster(clusterName="gpu-burst")
    client.register_task_definition(
        family="vllm",
        containerDefinitions=[{"name": "vllm", "image": "vllm/vllm-openai:v0.6", "memory": 16384}],
    )
    client.create_service(
        cluster="gpu-burst", serviceName="llama-8b-burst", taskDefinition="vllm", desiredCount=1
    )
    client.url = moto.url
    return client


def _desired(client: Any) -> int:
    service = client.describe_services(cluster="gpu-burst", services=["llama-8b-burst"])["services"][0]
    return int(service["desiredCount"])


def test_the_actuators_set_the_services_tasks_within_the_quota(ecs: Any) -> None:
    acts = Actuators(
        kubernetes=None,
        serverless=ServerlessBackends(endpoint_url=ecs.url, region=REGION, timeout_seconds=2.0),
        metrics=ActuatorMetrics(CollectorRegistry()),
        dry_run=False,
        retry=RetryPolicy(attempts=2, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=3.0),
        seed=1,
    )
    pol = policy(serverless=ECS)  # serverless_quota 3

    async def apply(serverless: int) -> list[tuple[str, int | None, int]]:
        current = await acts.read(pol)
        dec = decision(replicas=1, serverless=serverless)
        made = await acts.apply(policy=pol, decision=dec, current=current, now=dec.at)
        return [(c.kind, c.current, c.desired) for c in made]

    assert asyncio.run(apply(2)) == [("serverless", 1, 2)]
    assert _desired(ecs) == 2
    assert asyncio.run(apply(9)) == [("serverless", 2, 3)]  # the policy's quota, not the decision
    assert _desired(ecs) == 3
    assert asyncio.run(apply(3)) == []  # as it is: nothing written


def test_read_gives_desired_and_running_tasks(ecs: Any) -> None:
    adapter = EcsServerless(AwsApi(Connection(endpoint_url=ecs.url, region=REGION)))
    target = EcsTarget.model_validate(ECS)
    asyncio.run(adapter.set_provisioned(target, instances=2, quota=3, max_concurrency=64))
    assert asyncio.run(adapter.read(target, max_concurrency=64)) == ServerlessState(provisioned=2, ready=2)
    asyncio.run(adapter.set_provisioned(target, instances=-4, quota=3, max_concurrency=64))
    assert _desired(ecs) == 0  # never below zero


def test_a_missing_or_deleted_service_is_a_permanent_error_naming_it(ecs: Any) -> None:
    adapter = EcsServerless(AwsApi(Connection(endpoint_url=ecs.url, region=REGION)))
    gone = EcsTarget.model_validate({**ECS, "service": "no-such"})
    with pytest.raises(PermanentError, match=r"ecs/gpu-burst/no-such: no such service \(MISSING\)"):
        asyncio.run(adapter.read(gone, max_concurrency=64))
    with pytest.raises(PermanentError, match="no such service"):
        asyncio.run(adapter.set_provisioned(gone, instances=1, quota=3, max_concurrency=64))
    ecs.delete_service(cluster="gpu-burst", service="llama-8b-burst", force=True)
    target = EcsTarget.model_validate(ECS)
    with pytest.raises(PermanentError, match="ecs/gpu-burst/llama-8b-burst: "):
        asyncio.run(adapter.set_provisioned(target, instances=1, quota=3, max_concurrency=64))


def test_a_policy_file_names_an_ecs_service_and_plans_with_its_profile() -> None:
    text = (
        "version: 1\nmodels:\n  - name: llama-8b\n    targets:\n      serverless:\n"
        "        backend: ecs\n        cluster: gpu-burst\n        service: llama-8b-burst\n"
    )
    (model,) = parse_policy_text(text, source="p.yaml").models
    assert model.serverless_backend == "ecs"
    assert model.lead_times_in_force.serverless_cold_start_seconds == EcsTarget.PROFILE.cold_start_seconds
    with pytest.raises(PolicyError, match="field alias is for backend lambda, not ecs"):
        parse_policy_text(text + "        alias: live\n", source="p.yaml")
