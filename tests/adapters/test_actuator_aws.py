"""The AWS serverless actuator against a real moto server (and Stubber for the calls moto lacks)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, PermanentError, RetryPolicy, TransientError
from scaler.adapters.aws import AwsServerless
from scaler.adapters.serverless import AwsApi, Connection
from scaler.backends.lambda_ import LambdaServerless
from scaler.backends.sagemaker import SageMakerServerless
from scaler.core.types import Unavailable
from scaler.ports import ServerlessState
from tests.adapters.actuator_fixtures import (
    Process,
    decision,
    http_json,
    policy,
    start_faulty_proxy,
    start_moto,
)
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REGION = "us-east-1"
FAST = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=1.5)
SAGEMAKER = {"backend": "sagemaker", "endpoint_name": "chat", "variant_name": "burst"}


@pytest.fixture(scope="module")
def moto(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Process]:
    server = start_moto(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", REGION),
        ):
            mp.setenv(name, value)
        yield mp


@pytest.fixture
def aws(moto: Process) -> Process:
    http_json("POST", f"{moto.url}/moto-api/reset", {})
    return moto


def _client(url: str, service: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=url, config=Config(retries={"max_attempts": 1})
    )


def _endpoint(url: str) -> None:
    """Create endpoint chat with an instance variant `burst` (1 instance) and `main` (2)."""
    sm = _client(url, "sagemaker")
    sm.create_model(
        ModelName="m",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:1"},
    )
    variants = [
        {
            "VariantName": name,
            "ModelName": "m",
            "InstanceType": "ml.g4dn.xlarge",
            "InitialInstanceCount": count,
            "InitialVariantWeight": 1.0,
        }
        for name, count in (("burst", 1), ("main", 2))
    ]
    sm.create_endpoint_config(EndpointConfigName="chat-config", ProductionVariants=variants)
    sm.create_endpoint(EndpointName="chat", EndpointConfigName="chat-config")


def _counts(url: str) -> dict[str, int]:
    variants = _client(url, "sagemaker").describe_endpoint(EndpointName="chat")["ProductionVariants"]
    return {v["VariantName"]: v.get("DesiredInstanceCount", v.get("CurrentInstanceCount")) for v in variants}


def _actuators(url: str, *, dry_run: bool = False) -> tuple[Actuators, CollectorRegistry]:
    registry = CollectorRegistry()
    acts = Actuators(
        kubernetes=None,
        serverless=AwsServerless(endpoint_url=url, region=REGION, timeout_seconds=1.0),
        metrics=ActuatorMetrics(registry),
        dry_run=dry_run,
        retry=FAST,
        failure_threshold=2,
        seed=3,
    )
    return acts, registry


def _apply(acts: Actuators, pol: Any, dec: Any) -> list[Any]:
    async def run() -> list[Any]:
        current = await acts.read(pol)
        return await acts.apply(policy=pol, decision=dec, current=current, now=dec.at)

    return asyncio.run(run())


def test_sagemaker_variant_capacity_follows_the_decision_within_the_quota(aws: Process) -> None:
    _endpoint(aws.url)
    acts, registry = _actuators(aws.url)
    pol = policy(serverless=SAGEMAKER)
    made = _apply(acts, pol, decision(replicas=1, serverless=2))
    assert [(c.kind, c.current, c.desired) for c in made] == [("serverless", 1, 2)]
    assert _counts(aws.url) == {"burst": 2, "main": 2}  # the variant not named is untouched
    _apply(acts, pol, decision(replicas=1, serverless=50, at=1_700_000_100.0))
    assert _counts(aws.url)["burst"] == 3  # serverless_quota
    assert registry.get_sample_value("scaler_actuator_clamped_total", {"model": "chat"}) == 1
    assert _apply(acts, pol, decision(replicas=1, serverless=3, at=1_700_000_200.0)) == []  # idempotent
    # ready: the instances in service as described (moto puts them in service at once)
    assert asyncio.run(acts.read(pol)).serverless == ServerlessState(provisioned=3, ready=3)


def test_sagemaker_dry_run_changes_nothing(aws: Process) -> None:
    _endpoint(aws.url)
    acts, _ = _actuators(aws.url, dry_run=True)
    made = _apply(acts, policy(serverless=SAGEMAKER), decision(replicas=1, serverless=3))
    assert [c.desired for c in made] == [3]
    assert _counts(aws.url) == {"burst": 1, "main": 2}


@pytest.mark.parametrize("status", [429, 500])
def test_throttling_and_server_errors_are_retried(aws: Process, status: int) -> None:
    _endpoint(aws.url)
    proxy = start_faulty_proxy(free_port(), aws.url)
    try:
        http_json("POST", f"{proxy.url}/_faults", {"status": status, "count": 2})
        acts, registry = _actuators(proxy.url)
        _apply(acts, policy(serverless=SAGEMAKER), decision(replicas=1, serverless=3))
        assert _counts(aws.url)["burst"] == 3
        target = "sagemaker/chat/burst"
        assert (
            registry.get_sample_value(
                "scaler_actuator_retries_total", {"kind": "serverless", "target": target}
            )
            == 2
        )
    finally:
        proxy.stop()


def test_timeouts_are_retried_and_a_failing_api_is_reported_unavailable(aws: Process) -> None:
    _endpoint(aws.url)
    proxy = start_faulty_proxy(free_port(), aws.url)
    try:
        http_json("POST", f"{proxy.url}/_faults", {"delay": 2.5, "count": 1})
        acts, registry = _actuators(proxy.url)
        pol = policy(serverless=SAGEMAKER)
        _apply(acts, pol, decision(replicas=1, serverless=2))
        assert _counts(aws.url)["burst"] == 2  # the timed-out read was retried
        http_json("POST", f"{proxy.url}/_faults", {"status": 503, "count": 100})
        for step in range(2):
            _apply(acts, pol, decision(replicas=1, serverless=3, at=1_700_000_100.0 + step))
        assert acts.unavailable("chat") == Unavailable.SERVERLESS
        sample = registry.get_sample_value(
            "scaler_capacity_unavailable", {"model": "chat", "kind": "serverless"}
        )
        assert sample == 1
    finally:
        proxy.stop()


def _lambda_function(url: str, name: str) -> None:
    iam = _client(url, "iam")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    lam = _client(url, "lambda")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": buffer.getvalue()},
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)


def test_lambda_reserved_concurrency_is_the_quota_and_other_functions_are_untouched(aws: Process) -> None:
    _lambda_function(aws.url, "chat-burst")
    _lambda_function(aws.url, "other")
    lam = _client(aws.url, "lambda")
    lam.put_function_concurrency(FunctionName="other", ReservedConcurrentExecutions=7)
    adapter = AwsServerless(endpoint_url=aws.url, region=REGION)
    stub_target = policy(serverless={"backend": "lambda", "function_name": "chat-burst", "alias": "live"})
    target = stub_target.targets.serverless
    # moto has no provisioned concurrency API: the quota half is checked against moto, the rest with Stubber
    asyncio.run(adapter.set_quota(target, quota=3, max_concurrency=8))
    assert lam.get_function_concurrency(FunctionName="chat-burst")["ReservedConcurrentExecutions"] == 24
    assert lam.get_function_concurrency(FunctionName="other")["ReservedConcurrentExecutions"] == 7


def test_lambda_provisioned_concurrency_calls_match_the_service_model() -> None:
    adapter = LambdaServerless(AwsApi(Connection(region=REGION)))
    lam = adapter.api.client("lambda", None)
    pol = policy(serverless={"backend": "lambda", "function_name": "chat-burst", "alias": "live"})
    target = pol.targets.serverless
    with Stubber(lam) as stub:
        stub.add_response(
            "get_function_concurrency", {"ReservedConcurrentExecutions": 24}, {"FunctionName": "chat-burst"}
        )
        stub.add_response(
            "put_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 16},
            {"FunctionName": "chat-burst", "Qualifier": "live", "ProvisionedConcurrentExecutions": 16},
        )
        stub.add_response(
            "get_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 16, "AvailableProvisionedConcurrentExecutions": 8},
            {"FunctionName": "chat-burst", "Qualifier": "live"},
        )
        stub.add_client_error(
            "get_provisioned_concurrency_config",
            "ProvisionedConcurrencyConfigNotFoundException",
            http_status_code=404,
        )
        stub.add_client_error(
            "get_provisioned_concurrency_config", "TooManyRequestsException", http_status_code=429
        )
        asyncio.run(adapter.set_provisioned(target, instances=2, quota=3, max_concurrency=8))
        # two instances asked for, one of them warm (8 of 16 executions available)
        assert asyncio.run(adapter.read(target, max_concurrency=8)) == ServerlessState(provisioned=2, ready=1)
        nothing = ServerlessState(provisioned=0, ready=0)
        assert asyncio.run(adapter.read(target, max_concurrency=8)) == nothing  # no config yet
        with pytest.raises(TransientError, match="TooManyRequestsException"):
            asyncio.run(adapter.read(target, max_concurrency=8))
        stub.assert_no_pending_responses()


def test_sagemaker_serverless_provisioned_concurrency_goes_through_a_new_endpoint_config() -> None:
    adapter = SageMakerServerless(AwsApi(Connection(region=REGION)))
    sm = adapter.api.client("sagemaker", None)
    target = policy(serverless=SAGEMAKER).targets.serverless
    serverless_variant = {
        "VariantName": "burst",
        "ModelName": "m",
        "ServerlessConfig": {"MemorySizeInMB": 6144, "MaxConcurrency": 20},
    }
    described = {
        "EndpointName": "chat",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/chat",
        "EndpointConfigName": "chat-config",
        "EndpointStatus": "InService",
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:00:00Z",
        "ProductionVariants": [
            {
                "VariantName": "burst",
                "CurrentServerlessConfig": {"MemorySizeInMB": 6144, "MaxConcurrency": 20},
            }
        ],
    }
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", described, {"EndpointName": "chat"})
        stub.add_response(
            "describe_endpoint_config",
            {
                "EndpointConfigName": "chat-config",
                "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/chat-config",
                "ProductionVariants": [serverless_variant],
                "CreationTime": "2026-01-01T00:00:00Z",
            },
            {"EndpointConfigName": "chat-config"},
        )
        expected_variant = {
            **serverless_variant,
            "ServerlessConfig": {"MemorySizeInMB": 6144, "MaxConcurrency": 20, "ProvisionedConcurrency": 16},
        }
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/new"},
            {
                "EndpointConfigName": ANY,
                "ProductionVariants": [expected_variant],
            },
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": described["EndpointArn"]},
            {"EndpointName": "chat", "EndpointConfigName": ANY},
        )
        asyncio.run(adapter.set_provisioned(target, instances=2, quota=3, max_concurrency=8))
        stub.assert_no_pending_responses()


WEIGHTED = {**SAGEMAKER, "primary_variant": "main"}


def _weights(url: str) -> dict[str, float]:
    variants = _client(url, "sagemaker").describe_endpoint(EndpointName="chat")["ProductionVariants"]
    return {v["VariantName"]: v.get("DesiredWeight", v.get("CurrentWeight")) for v in variants}


def _spilling(spill: float, *, serverless: int, at: float) -> Any:
    return dataclasses.replace(decision(replicas=1, serverless=serverless, at=at), spill_fraction=spill)


def test_sagemaker_weights_follow_the_spill_fraction_in_the_capacity_call(aws: Process) -> None:
    _endpoint(aws.url)
    acts, registry = _actuators(aws.url)
    pol = policy(serverless=WEIGHTED)
    made = _apply(acts, pol, _spilling(0.25, serverless=2, at=1_700_000_000.0))
    assert [(c.kind, c.current, c.desired) for c in made] == [("serverless", 1, 2)]
    assert _weights(aws.url) == {"burst": 0.25, "main": 0.75}
    assert _counts(aws.url) == {"burst": 2, "main": 2}  # the primary variant's capacity is untouched
    # the capacity is right, the split is not: weights alone, one call
    assert _apply(acts, pol, _spilling(1.7, serverless=2, at=1_700_000_100.0)) == []
    assert _weights(aws.url) == {"burst": 1.0, "main": 0.0}  # clamped to [0, 1]
    changes = {"model": "chat", "kind": "weights", "dry_run": "false"}
    assert registry.get_sample_value("scaler_actuator_changes_total", changes) == 1


def test_sagemaker_weights_within_tolerance_are_left_alone(aws: Process) -> None:
    _endpoint(aws.url)
    acts, registry = _actuators(aws.url)
    pol = policy(serverless=WEIGHTED)
    _apply(acts, pol, _spilling(0.4, serverless=1, at=1_700_000_000.0))
    assert _weights(aws.url) == {"burst": 0.4, "main": 0.6}
    changes = {"model": "chat", "kind": "weights", "dry_run": "false"}
    assert registry.get_sample_value("scaler_actuator_changes_total", changes) == 1
    _apply(acts, pol, _spilling(0.405, serverless=1, at=1_700_000_100.0))
    _apply(acts, pol, _spilling(0.4, serverless=1, at=1_700_000_200.0))
    assert registry.get_sample_value("scaler_actuator_changes_total", changes) == 1  # idempotent
    assert _weights(aws.url) == {"burst": 0.4, "main": 0.6}


def test_sagemaker_weights_dry_run_changes_nothing(aws: Process) -> None:
    _endpoint(aws.url)
    acts, registry = _actuators(aws.url, dry_run=True)
    pol = policy(serverless=WEIGHTED)
    _apply(acts, pol, _spilling(0.5, serverless=1, at=1_700_000_000.0))
    _apply(acts, pol, _spilling(0.5, serverless=3, at=1_700_000_100.0))
    assert _weights(aws.url) == {"burst": 1.0, "main": 1.0}
    assert _counts(aws.url) == {"burst": 1, "main": 2}
    changes = {"model": "chat", "kind": "weights", "dry_run": "true"}
    assert registry.get_sample_value("scaler_actuator_changes_total", changes) == 1


def test_sagemaker_weights_never_touch_a_variant_the_policy_does_not_name(aws: Process) -> None:
    _endpoint(aws.url)
    sm = _client(aws.url, "sagemaker")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="chat", DesiredWeightsAndCapacities=[{"VariantName": "main", "DesiredWeight": 0.5}]
    )
    adapter = AwsServerless(endpoint_url=aws.url, region=REGION)
    target = policy(serverless=WEIGHTED).targets.serverless  # type: ignore[union-attr]
    assert target is not None
    with pytest.raises(PermanentError, match="does not name"):
        asyncio.run(adapter.set_weights(target, weights={"other": 1.0}, instances=None, max_concurrency=8))
    no_weights = policy(serverless=SAGEMAKER)  # without primary_variant: no weights at all
    acts, _ = _actuators(aws.url)
    _apply(acts, no_weights, _spilling(0.9, serverless=2, at=1_700_000_000.0))
    assert _weights(aws.url) == {"burst": 1.0, "main": 0.5}  # as created, as set by hand
    assert _counts(aws.url)["burst"] == 2
