"""End to end: `scaler run --actuate` with a tansu broker, a real kube-apiserver and a moto server.

A burst of request events raises serverless capacity (a SageMaker variant's instance count) within
seconds and the Deployment's replicas as the forecast demands; both come back down after the burst
and the scale-down delay. All are real processes on loopback; the daemon reaches the apiserver
through a kubeconfig (context ``test``) whose token is bound only to the actuator's RBAC rules.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from kubernetes import client

from scaler.adapters.kubernetes import describe_rules
from tests.adapters.actuator_fixtures import start_moto
from tests.conftest import Broker, free_port, wait_for_tcp
from tests.integration_fixtures import kafka_settings, produce, request_event, settings_env
from tests.kube_cluster import KubeCluster, bind_role, create_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RISE_WITHIN_SECONDS = 20  # the burst lasts 8 s; capacity rising later than this is a broken run

POLICY = """
models:
  - name: chat
    slo: {ttft_seconds: 1.0, attainment: 0.95}
    replica: {prefill_tokens_per_second: 1000, decode_tokens_per_second: 1000, max_concurrency: 4}
    lead_times: {cold_start_seconds: 2, standby_promotion_seconds: 1, serverless_cold_start_seconds: 5}
    prices: {replica_per_hour: 4.0, serverless_per_gpu_second: 0.0021, serverless_provisioned_per_hour: 0.5}
    bounds: {min_replicas: 1, max_replicas: 6, min_standby: 0, max_standby: 0, serverless_quota: 4}
    behavior: {interval_seconds: 1, max_step_up: 6, max_step_down: 6, scale_down_delay_seconds: 3,
               stabilization_seconds: 1}
    forecast: {bucket_seconds: 1, horizon_seconds: 20, seasonalities_seconds: [60]}
    targets:
      kubernetes: {namespace: NAMESPACE, kind: Deployment, name: chat}
      serverless: {backend: sagemaker, endpoint_name: chat, variant_name: burst}
"""


def _until(condition: Callable[[], bool], *, seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.2)
    return time.monotonic() - started


async def _burst(bootstrap: str, topic: str, *, seconds: float, rate: float) -> None:
    """Produce request events for ``chat`` at ``rate`` per second for ``seconds``."""
    n = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        now = time.time()
        due = int(rate * elapsed) + 1 - n
        if due > 0:
            await produce(bootstrap, topic, [("chat", request_event("chat", now, n + k)) for k in range(due)])
            n += due
        await asyncio.sleep(0.2)


@pytest.fixture
def kubelet(kube: KubeCluster, kube_namespace: str) -> Iterator[None]:
    """Pods of chat become Ready within half a second of being created (no real kubelet here)."""
    with kube.kubelet(namespace=kube_namespace, selector="app=chat"):
        yield


@pytest.mark.usefixtures("kubelet")
def test_a_burst_raises_serverless_and_replicas_and_both_come_back_down(
    broker: Broker, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    moto = start_moto(free_port())
    process: subprocess.Popen[bytes] | None = None
    try:
        create_deployment(kube, namespace=kube_namespace, name="chat", replicas=1)
        bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
        apps = client.AppsV1Api(kube.api_client())
        aws_env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        sm = boto3.client(
            "sagemaker",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": 1}),
        )
        sm.create_model(
            ModelName="m",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
            PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:1"},
        )
        sm.create_endpoint_config(
            EndpointConfigName="c",
            ProductionVariants=[
                {
                    "VariantName": "burst",
                    "ModelName": "m",
                    "InstanceType": "ml.g4dn.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.create_endpoint(EndpointName="chat", EndpointConfigName="c")

        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.replace("NAMESPACE", kube_namespace))
        port = free_port()
        settings = kafka_settings(broker.bootstrap, policy_files=(policy,), http_listen=f"127.0.0.1:{port}")
        env = {
            **os.environ,
            **settings_env(settings),
            **aws_env,
            "SCALER_ACTUATE": "true",
            "SCALER_KUBERNETES_KUBECONFIG": str(kube.kubeconfig("scaler", path=tmp_path / "kubeconfig")),
            "SCALER_KUBERNETES_CONTEXT": "test",
            "SCALER_AWS_ENDPOINT_URL": moto.url,
            "SCALER_AWS_REGION": "us-east-1",
            "SCALER_ACTUATOR_TIMEOUT_SECONDS": "3",
        }
        with (tmp_path / "daemon.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_tcp(port, timeout=30)

        def replicas() -> int:
            return int(apps.read_namespaced_deployment("chat", kube_namespace).spec.replicas)

        def serverless() -> int:
            variant = sm.describe_endpoint(EndpointName="chat")["ProductionVariants"][0]
            return int(variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount", 0)))

        # a quiet start: a trickle, the daemon settles at its floors
        asyncio.run(_burst(broker.bootstrap, settings.kafka_requests_topic, seconds=4, rate=1))
        _until(lambda: (serverless(), replicas()) == (0, 1), seconds=20, what="floors before the burst")
        # the burst: 60 req/s of 200-token prompts is ~12 replicas' worth at 1000 tokens/s
        producer = threading.Thread(
            target=asyncio.run,
            args=(_burst(broker.bootstrap, settings.kafka_requests_topic, seconds=8, rate=60),),
        )
        producer.start()
        seen: dict[str, float] = {}
        burst_start = time.monotonic()
        try:
            # the figures are printed; the window only bounds a broken run on a loaded machine
            while len(seen) < 2 and time.monotonic() - burst_start < RISE_WITHIN_SECONDS:
                if "serverless" not in seen and serverless() >= 1:
                    seen["serverless"] = time.monotonic() - burst_start
                if "replicas" not in seen and replicas() > 1:
                    seen["replicas"] = time.monotonic() - burst_start
                time.sleep(0.1)
        finally:
            producer.join()
        assert set(seen) == {"serverless", "replicas"}, f"rose within {RISE_WITHIN_SECONDS} s: {seen}"
        to_serverless, to_replicas = seen["serverless"], seen["replicas"]
        peak_serverless, peak_replicas = serverless(), replicas()
        assert peak_replicas <= 6  # max_replicas
        assert peak_serverless <= 4  # quota
        # after the burst and the scale-down delay both come back down
        asyncio.run(_burst(broker.bootstrap, settings.kafka_requests_topic, seconds=1, rate=1))
        to_down = _until(
            lambda: replicas() < peak_replicas and serverless() < peak_serverless,
            seconds=40,
            what="capacity back down after the burst",
        )
        (tmp_path / "figures.txt").write_text(
            f"{to_serverless=:.1f} {to_replicas=:.1f} {to_down=:.1f} {peak_serverless=} {peak_replicas=}\n"
        )
        print(
            f"burst->serverless {to_serverless:.1f}s, ->replicas {to_replicas:.1f}s; "
            f"down after {to_down:.1f}s; "
            f"peaks {peak_serverless} serverless, {peak_replicas} replicas"
        )
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        moto.stop()

