"""End to end: `scaler run --actuate` scales in 3 -> 1 and marks the idle pods first, from metric events.

A tansu broker carries a trickle of requests and replica metric events naming each pod (one pod has
requests in flight); the daemon reaches a real kube-apiserver (+ controller-manager) through a
kubeconfig bound only to the actuator's RBAC rules. What the daemon wrote is read from the audit log:
the idle pods get the low pod-deletion-cost before the scale write, the busy pod never does, and the
pod the ReplicaSet keeps is the busy one (the controller-manager carries our backport of the 1.21
pod-deletion-cost ordering, .ci/kube-patches/pod-deletion-cost.patch).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from scaler.adapters import lease
from scaler.adapters.kubernetes import describe_rules
from scaler.core.operators import DELETION_COST_ANNOTATION
from tests.conftest import Broker, free_port, wait_for_tcp
from tests.integration_fixtures import kafka_settings, produce, request_event, settings_env
from tests.kube_cluster import KubeCluster, bind_role, create_deployment, until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = """
models:
  - name: chat
    bounds: {min_replicas: 1, max_replicas: 6, min_standby: 0, max_standby: 0, serverless_quota: 4}
    lead_times: {cold_start_seconds: 2, standby_promotion_seconds: 1, serverless_cold_start_seconds: 5}
    behavior: {interval_seconds: 1, max_step_up: 6, max_step_down: 6, scale_down_delay_seconds: 3,
               stabilization_seconds: 1}
    forecast: {bucket_seconds: 1, horizon_seconds: 20, seasonalities_seconds: [60]}
    targets:
      kubernetes: {namespace: NAMESPACE, kind: Deployment, name: chat}
"""


def _metric(pod: str, *, running: int) -> bytes:
    return json.dumps(
        {
            "model": "chat",
            "ts": time.time(),
            "replica": f"{pod}:8000",
            "pod": pod,
            "waiting": 0,
            "running": running,
            "kv_cache_usage": 0.1,
            "ready": True,
        }
    ).encode()


def _feed(
    bootstrap: str, requests: str, metrics: str, *, inflight: dict[str, int], stop: threading.Event
) -> None:
    """Until ``stop``: one request a second and each pod's metrics every half second."""

    async def run() -> None:
        n = 0
        while not stop.is_set():
            await produce(bootstrap, requests, [("chat", request_event("chat", time.time(), n))])
            n += 1
            for _ in range(2):
                await produce(
                    bootstrap, metrics, [("chat", _metric(p, running=r)) for p, r in inflight.items()]
                )
                await asyncio.sleep(0.5)

    asyncio.run(run())


def test_the_daemon_marks_the_idle_pods_before_it_scales_in(
    broker: Broker, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    create_deployment(kube, namespace=kube_namespace, name="chat", replicas=3)
    rules = describe_rules() + lease.describe_rules()  # the actuators' and the fencing Leases'
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=rules)
    kube.make_ready(namespace=kube_namespace, selector="app=chat", count=3)
    with kube.api_client() as admin:
        core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
        pods = sorted(p.metadata.name for p in core.list_namespaced_pod(kube_namespace).items)
        busy = pods[1]
        inflight = {pod: (5 if pod == busy else 0) for pod in pods}
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.replace("NAMESPACE", kube_namespace))
        port = free_port()
        settings = kafka_settings(broker.bootstrap, policy_files=(policy,), http_listen=f"127.0.0.1:{port}")
        env = {
            **os.environ,
            **settings_env(settings),
            "SCALER_ACTUATE": "true",
            "SCALER_KUBERNETES_KUBECONFIG": str(kube.kubeconfig("scaler", path=tmp_path / "kubeconfig")),
            "SCALER_KUBERNETES_CONTEXT": "test",
            "SCALER_ACTUATOR_TIMEOUT_SECONDS": "3",
        }
        stop = threading.Event()
        feeder = threading.Thread(
            target=_feed,
            args=(broker.bootstrap, settings.kafka_requests_topic, settings.kafka_metrics_topic),
            kwargs={"inflight": inflight, "stop": stop},
        )
        with (tmp_path / "daemon.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            wait_for_tcp(port, timeout=30)
            feeder.start()
            took = until(
                lambda: apps.read_namespaced_deployment("chat", kube_namespace).spec.replicas == 1,
                seconds=60,
                what="the daemon to scale chat in to 1",
            )
        finally:
            stop.set()
            if feeder.is_alive():
                feeder.join()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        writes = [
            (e["objectRef"]["resource"], e["objectRef"].get("subresource"), e["objectRef"].get("name"))
            for e in kube.audit(namespace=kube_namespace, user="scaler")
            if e["objectRef"]["resource"] in ("pods", "deployments")
        ]
        marked = {name for resource, _sub, name in writes if resource == "pods"}
        assert busy not in marked, writes
        assert marked == set(pods) - {busy}, (writes, (tmp_path / "daemon.log").read_text()[-3000:])
        last_mark = max(i for i, (resource, _s, _n) in enumerate(writes) if resource == "pods")
        assert writes[last_mark + 1 :], "a scale write follows the marks"
        assert all(w == ("deployments", "scale", "chat") for w in writes[last_mark + 1 :])
        for name in set(pods) - {busy}:
            try:
                annotations = core.read_namespaced_pod(name, kube_namespace).metadata.annotations or {}
            except client.ApiException:
                continue  # already removed by the ReplicaSet
            assert annotations.get(DELETION_COST_ANNOTATION) == "-1000"

        def live() -> list[str]:
            items = core.list_namespaced_pod(kube_namespace, label_selector="app=chat").items
            return [p.metadata.name for p in items if p.metadata.deletion_timestamp is None]

        until(lambda: len(live()) == 1, seconds=30, what="the ReplicaSet to remove 2 pods")
        assert live() == [busy], "the ReplicaSet removed the idle pods and kept the busy one"
    print(f"daemon scale-in 3 -> 1 in {took:.1f} s; marked {sorted(marked)}, busy {busy} unmarked and kept")
