"""Learned cold starts against the real kube-apiserver and controller-manager.

The test acts as scheduler and kubelet: it creates a Node, binds each pod the Deployment controller
creates to it, and marks the pod Ready a chosen delay after its creation. The daemon's own pieces
read it back (:class:`KubernetesActuator` with the chart's RBAC rules, :func:`readback_from`) and
decide (:class:`ModelController`): the learned cold start converges to the delay and the decisions'
replica lifetime starts that far ahead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from scaler.adapters.kubernetes import KubernetesActuator, describe_rules, load_api_client
from scaler.control.controller import ModelController
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Unavailable
from scaler.executor import readback_from
from scaler.forecast.models import DemandForecaster
from scaler.ports import Capacity
from tests.kube_cluster import KubeCluster, bind_role, create_deployment, until

DELAY = 6.0  # seconds from a pod's creation to its Ready condition
PODS = 4


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def kubelet(kube: KubeCluster, kube_namespace: str) -> Iterator[dict[str, float]]:
    """Bind every pod of app=chat to a Node of this test and make it Ready DELAY s after its creation.

    Yields pod name -> when it was made Ready (unix time).
    """
    node = f"{kube_namespace}-gpu"
    made: dict[str, float] = {}
    stop = threading.Event()
    with kube.api_client() as api:
        client.CoreV1Api(api).create_node({"metadata": {"name": node}})

    def run() -> None:
        with kube.api_client() as api:
            core = client.CoreV1Api(api)
            while not stop.wait(0.2):
                for pod in core.list_namespaced_pod(kube_namespace, label_selector="app=chat").items:
                    name = pod.metadata.name
                    if name in made or pod.metadata.deletion_timestamp is not None:
                        continue
                    if not pod.spec.node_name:
                        binding = {"target": {"kind": "Node", "name": node}, "metadata": {"name": name}}
                        core.create_namespaced_pod_binding(
                            name, kube_namespace, binding, _preload_content=False
                        )
                    age = time.time() - pod.metadata.creation_timestamp.timestamp()
                    if age < DELAY:
                        continue
                    at = _now_rfc3339()
                    conditions = [
                        {"type": "Ready", "status": "True", "lastTransitionTime": at},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": at},
                    ]
                    core.patch_namespaced_pod_status(
                        name, kube_namespace, {"status": {"phase": "Running", "conditions": conditions}}
                    )
                    made[name] = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        stop.set()
        thread.join()
        with kube.api_client() as api:
            client.CoreV1Api(api).delete_node(node)


def _policy(namespace: str) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "name": "chat",
            "lead_times": {"cold_start_seconds": 120, "cold_start_floor_seconds": 1},
            "behavior": {"interval_seconds": 10, "scale_down_delay_seconds": 60},
            "forecast": {"bucket_seconds": 10, "horizon_seconds": 600},
            "targets": {"kubernetes": {"namespace": namespace, "name": "chat"}},
        }
    )


def _lifetime_start(reason: str) -> float:
    """Return the ``t+N s`` a decision's replica lifetime starts at (its lead)."""
    found = re.search(r"\[t\+(\d+)s, t\+\d+s\]", reason)
    assert found is not None, reason
    return float(found.group(1))


@pytest.mark.integration
def test_the_learned_cold_start_converges_to_the_pods_delay_and_decisions_lead_by_it(
    kube: KubeCluster, kube_namespace: str, kubelet: dict[str, float]
) -> None:
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
    api = load_api_client(
        host=kube.url, token_file=str(kube.token_file("scaler")), ca_file=str(kube.ca_file),
        kubeconfig=None, in_cluster=False,
    )  # fmt: skip
    actuator = KubernetesActuator(api, request_timeout=5.0)
    policy = _policy(kube_namespace)
    target = policy.targets.kubernetes  # type: ignore[union-attr]
    assert target is not None
    now = time.time()
    forecaster = DemandForecaster.from_policy(policy)
    ctl = ModelController(policy=policy, forecaster=forecaster, planner=plan, now=now)
    history = np.full(120, 300.0)  # 30 req/s for 20 minutes before now
    ctl.seed(start=now - 1200.0, requests=history, prompt_tokens=history * 1000, output_tokens=history * 200)

    first = ctl.decide(now=now)
    assert first.lead_times[0].source == "configured"
    assert _lifetime_start(first.decision.reason) == 120.0  # the prior

    create_deployment(kube, namespace=kube_namespace, name="chat", replicas=PODS)
    seen: list[Any] = []

    def learned() -> bool:
        state = asyncio.run(actuator.read(target, name="chat"))
        readback = readback_from(Capacity(replicas=state), unavailable=Unavailable.NONE)
        step = ctl.decide(now=time.time(), readback=readback)
        seen.append(step)
        return step.lead_times[0].observations >= PODS

    until(learned, seconds=90, what=f"{PODS} cold starts observed", every=0.5)
    step = seen[-1]
    estimate = step.lead_times[0]
    assert estimate.source == "learned"
    # creationTimestamp and lastTransitionTime have whole seconds; the kubelet here polls every 0.2 s
    assert DELAY - 1.0 <= estimate.seconds <= DELAY + 3.0, estimate
    assert estimate.refused == 0
    assert DELAY - 1.0 <= estimate.typical <= estimate.seconds
    assert _lifetime_start(step.decision.reason) == round(estimate.typical)  # the fastest start seen
    assert len(kubelet) >= PODS
    # read again and again: every pod was counted once
    for _ in range(3):
        state = asyncio.run(actuator.read(target, name="chat"))
        readback = readback_from(Capacity(replicas=state), unavailable=Unavailable.NONE)
        again = ctl.decide(now=time.time(), readback=readback)
        assert again.lead_times[0].observations == PODS
        assert math.isclose(again.lead_times[0].seconds, estimate.seconds)
