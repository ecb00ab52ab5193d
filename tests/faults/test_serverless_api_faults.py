"""A hung, then failing, AWS API (the real moto server behind the stall proxy) under ``scaler run --actuate``.

Two models: ``burst`` (a SageMaker variant behind the proxy) and ``free`` (no target). While the API
hangs and then refuses every connection, events are consumed as they come, both models are decided
every interval, the daemon stays up and says what fails; once the API answers again, the variant
gets the newest decision's serverless capacity.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from conftest import Broker, free_port
from daemon_process import ScalerProcess, until
from fault_fixtures import Traffic, beyond_bounds, decisions
from integration_fixtures import kafka_settings

from tests.adapters.actuator_fixtures import Process, start_moto
from tests.stall_proxy import StallProxy

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

SPEC = """
    replica: {max_concurrency: 2}
    lead_times: {cold_start_seconds: 2, standby_promotion_seconds: 1, serverless_cold_start_seconds: 5}
    bounds: {min_replicas: 1, max_replicas: 4, max_standby: 0, serverless_quota: 3}
    behavior: {interval_seconds: 1}
    forecast: {bucket_seconds: 1, horizon_seconds: 20, seasonalities_seconds: [60]}
"""
TARGET = "    targets:\n      serverless: {backend: sagemaker, endpoint_name: burst, variant_name: v}\n"
KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # moto accepts any key
FAULT_SECONDS = 8.0


@pytest.fixture
def moto() -> Iterator[Process]:
    """A moto server with the SageMaker endpoint ``burst`` (variant ``v``, 1 instance)."""
    server = start_moto(free_port())
    try:
        sm = boto3.client("sagemaker", endpoint_url=server.url, region_name="us-east-1", **KEYS)
        sm.create_model(
            ModelName="m",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
            PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:1"},
        )
        sm.create_endpoint_config(
            EndpointConfigName="c",
            ProductionVariants=[
                {
                    "VariantName": "v",
                    "ModelName": "m",
                    "InstanceType": "ml.g4dn.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.create_endpoint(EndpointName="burst", EndpointConfigName="c")
        yield server
    finally:
        server.stop()


def test_a_hung_then_failing_aws_api_delays_only_its_own_model(
    broker: Broker, moto: Process, tmp_path: Path
) -> None:
    proxy = StallProxy(moto.port).start()
    policy = tmp_path / "policies.yaml"
    policy.write_text("models:\n  - name: burst" + SPEC + TARGET + "  - name: free" + SPEC)
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,))
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SCALER_DRY_RUN": "false",
        "SCALER_ACTUATE": "true",
        "SCALER_AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "SCALER_AWS_REGION": "us-east-1",
        "SCALER_ACTUATOR_TIMEOUT_SECONDS": "2",
    }
    daemon = ScalerProcess(settings, log_path=tmp_path / "daemon.log", env=env)
    sm = boto3.client(
        "sagemaker",
        endpoint_url=moto.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
        **KEYS,
    )
    topic = settings.kafka_requests_topic
    try:
        daemon.start()
        with Traffic(broker.bootstrap, topic, ["burst", "free"], rate=20) as traffic:
            time.sleep(3)
            proxy.stall()
            stalled_at = time.time()
            time.sleep(FAULT_SECONDS)
            proxy.refuse()
            proxy.resume()
            time.sleep(FAULT_SECONDS)
            fault_end = time.time()
            acked = traffic.acked
            health = daemon.status("/healthz")
            lag = until(
                lambda: daemon.metric("scaler_events_consumed_total") >= acked, seconds=10, what="caught up"
            )
            proxy.refuse(False)
            found = decisions(broker.bootstrap, settings.kafka_decisions_topic)

            def applied() -> bool:
                newest = [
                    d
                    for d in decisions(broker.bootstrap, settings.kafka_decisions_topic, seconds=1)
                    if d["model"] == "burst"
                ][-1]
                variant = sm.describe_endpoint(EndpointName="burst")["ProductionVariants"][0]
                count = variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))
                return bool(count == newest["desired"]["serverless_provisioned"])

            recovered = until(applied, seconds=30, what="the newest decision applied after the faults")
        assert daemon.alive()
        failures = [e for e in daemon.log_lines() if "error" in e and e.get("model") == "burst"]
    finally:
        daemon.stop()
        proxy.stop()
    window = fault_end - stalled_at - 1
    during = {
        model: [d for d in found if d["model"] == model and stalled_at + 1 <= d["at"] <= fault_end]
        for model in ("burst", "free")
    }
    print(
        f"AWS API hung {FAULT_SECONDS:.0f} s then refused {FAULT_SECONDS:.0f} s: decisions burst="
        f"{len(during['burst'])} free={len(during['free'])} in {window:.0f} s, events caught up {lag:.1f} s "
        f"after, newest decision applied {recovered:.1f} s after the API came back"
    )
    assert health == 200
    for model, made in during.items():  # a tick per 1 s interval; half of them under a load of 15+
        assert len(made) >= 0.5 * window, f"{model}: {len(made)} decisions in {window:.0f} s"
    assert any(e["event"] == "capacity_unavailable" and "sagemaker/burst/v" in e["error"] for e in failures)
    assert beyond_bounds(found, {"burst": (1, 4), "free": (1, 4)}) == []
    assert all(d["desired"]["serverless_provisioned"] <= 3 for d in found)  # the quota
