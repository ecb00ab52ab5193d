"""A Kubernetes API that accepts connections and never answers delays only its own model.

`scaler run --actuate` with the real broker and a real kube-apiserver behind a TCP proxy that we
stall (TLS passes through): connections are accepted and bytes sit in the proxy, unanswered, for
as long as the stall lasts. Two models: ``slow`` (a Deployment behind the stalled API) and ``free``
(no target). While the API hangs, events are consumed as fast as they are produced, both models
are decided and published every interval, the daemon logs the failure naming the Deployment and
the timeout, no decision leaves the policy's bounds, and once the API answers again the newest
decision reaches the Deployment: nothing is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from scaler.adapters.kubernetes import describe_rules
from tests.conftest import Broker, free_port, wait_for_tcp
from tests.integration_fixtures import kafka_settings, produce, read_topic, request_event, settings_env
from tests.kube_cluster import KubeCluster, bind_role, create_deployment
from tests.stall_proxy import StallProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

MODEL_SPEC = """
    slo: {{ttft_seconds: 1.0, attainment: 0.95}}
    replica: {{prefill_tokens_per_second: 1000, decode_tokens_per_second: 1000, max_concurrency: 4}}
    lead_times: {{cold_start_seconds: 2, standby_promotion_seconds: 1, serverless_cold_start_seconds: 5}}
    bounds: {{min_replicas: 1, max_replicas: 6, min_standby: 0, max_standby: 0, serverless_quota: 4}}
    behavior: {{interval_seconds: 1, max_step_up: 6, max_step_down: 6, scale_down_delay_seconds: 3,
               stabilization_seconds: 1}}
    forecast: {{bucket_seconds: 1, horizon_seconds: 20, seasonalities_seconds: [60]}}{targets}
"""
TARGETS = "\n    targets:\n      kubernetes: {namespace: NAMESPACE, kind: Deployment, name: slow}"
STALL_SECONDS = 15.0
BOUNDS = (1, 6)  # min_replicas, max_replicas of both models (MODEL_SPEC)


def _consumed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("scaler_events_consumed_total{")
    )


async def _load(bootstrap: str, topic: str, *, seconds: float, rate: float, offset: int) -> int:
    """Produce ``rate`` arrivals/s for each model for ``seconds``; return how many were produced."""
    n = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) + 1 - n
        if due > 0:
            now = time.time()
            batch = [
                (model, request_event(model, now, offset + 2 * (n + k) + i))
                for k in range(due)
                for i, model in enumerate(("slow", "free"))
            ]
            await produce(bootstrap, topic, batch)
            n += due
        await asyncio.sleep(0.1)
    return 2 * n


def _until(condition: Callable[[], bool], *, seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_hung_kubernetes_api_delays_only_its_own_models_actions(
    broker: Broker, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    proxy = StallProxy(int(kube.url.rsplit(":", 1)[1])).start()
    process: subprocess.Popen[bytes] | None = None
    try:
        create_deployment(kube, namespace=kube_namespace, name="slow", replicas=1)
        bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
        apps = client.AppsV1Api(kube.api_client())
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "models:\n"
            + "  - name: slow"
            + MODEL_SPEC.format(targets=TARGETS.replace("NAMESPACE", kube_namespace))
            + "  - name: free"
            + MODEL_SPEC.format(targets="")
        )
        kubeconfig = kube.kubeconfig(
            "scaler", path=tmp_path / "kubeconfig", server=f"https://127.0.0.1:{proxy.port}"
        )
        port = free_port()
        settings = kafka_settings(broker.bootstrap, policy_files=(policy,), http_listen=f"127.0.0.1:{port}")
        env = {
            **os.environ,
            **settings_env(settings),
            "SCALER_ACTUATE": "true",
            "SCALER_KUBERNETES_KUBECONFIG": str(kubeconfig),
            "SCALER_ACTUATOR_TIMEOUT_SECONDS": "3",
            # fencing Leases go through the same stalled API: with them on, every decision of the
            # partition would stop after the Lease margin (fail-safe; see the README's Fencing)
            "SCALER_FENCING_LEASES": "off",
        }
        with (tmp_path / "daemon.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_tcp(port, timeout=30)
        topic = settings.kafka_requests_topic
        produced = asyncio.run(_load(broker.bootstrap, topic, seconds=4, rate=10, offset=0))
        _until(lambda: _consumed(port) >= produced, seconds=20, what="events consumed before the stall")

        proxy.stall()
        stall_start = time.time()
        produced += asyncio.run(_load(broker.bootstrap, topic, seconds=STALL_SECONDS, rate=40, offset=10**6))
        stall_end = time.time()
        # ingest kept up with the producer while the API hung
        lag_seconds = _until(lambda: _consumed(port) >= produced, seconds=5, what="events in the stall")
        decisions_topic = settings.kafka_decisions_topic
        records = asyncio.run(read_topic(broker.bootstrap, decisions_topic, at_least=10**9, seconds=4))
        decisions = [json.loads(r.value) for r in records]
        during = {
            model: [d for d in decisions if d["model"] == model and stall_start + 1 <= d["at"] <= stall_end]
            for model in ("slow", "free")
        }
        window = stall_end - stall_start - 1
        for model, made in during.items():
            # decided and published every 1 s interval (ticks, plus burst re-plans), the hung API or not
            assert len(made) >= 0.8 * window, f"{model}: {len(made)} decisions in {window:.0f} s"
            gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(made)]
            assert max(gaps) < 2.5, f"{model}: a gap of {max(gaps):.1f} s between decisions"
        wanted_during = during["slow"][-1]["desired"]["replicas"]

        proxy.resume()
        # the API answers again: the newest decision reaches the Deployment
        def applied() -> bool:
            latest = asyncio.run(
                read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=10**9, seconds=1)
            )
            slow = [json.loads(r.value) for r in latest if json.loads(r.value)["model"] == "slow"]
            spec = apps.read_namespaced_deployment("slow", kube_namespace).spec.replicas
            return bool(slow) and spec == slow[-1]["desired"]["replicas"]

        recovered = _until(applied, seconds=30, what="the newest decision applied after the stall")
        every = [
            json.loads(r.value)
            for r in asyncio.run(read_topic(broker.bootstrap, decisions_topic, at_least=10**9, seconds=2))
        ]
        outside = [
            d
            for d in every
            if not BOUNDS[0] <= d["desired"]["replicas"] <= BOUNDS[1]
            or d["desired"]["standby"] != 0
            or not 0 <= d["desired"]["serverless_provisioned"] <= 4
        ]
        assert every
        assert outside == [], outside[:3]  # the bounds hold, the API hanging or not
        raw_lines = (tmp_path / "daemon.log").read_bytes().splitlines()
        lines = [json.loads(raw) for raw in raw_lines if raw.startswith(b"{")]
        named = [
            line
            for line in lines
            if line.get("model") == "slow"
            and line.get("event") in ("actuation_failed", "capacity_unavailable")
            and "slow" in line.get("error", "")
            and "timed out" in line.get("error", "")
        ]
        assert named, "no log line names the Deployment and the timeout"
        print(
            f"stall {window + 1:.0f} s: decisions slow={len(during['slow'])} free={len(during['free'])}, "
            f"events caught up {lag_seconds:.1f} s after the last one, newest decision "
            f"(replicas {wanted_during} at the end of the stall) applied {recovered:.1f} s after it; "
            f"{len(every)} decisions within bounds; {len(named)} failures named, e.g. {named[0]['error']!r}"
        )
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        proxy.stop()
