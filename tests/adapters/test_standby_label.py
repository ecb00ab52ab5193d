"""Warm standby by label: the choice of standby pods (pure), and promotion as one label patch against the
real kube-apiserver and controller-manager (the Service's endpoints follow; the test acts as kubelet)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.kubernetes import (
    ROLE_LABEL,
    KubernetesActuator,
    describe_rules,
    load_api_client,
    standby_choice,
)
from scaler.core.policy import KubernetesTarget
from tests.adapters.actuator_fixtures import decision, policy
from tests.kube_cluster import KubeCluster, bind_role, until


@pytest.mark.parametrize(
    ("pods", "standby", "flips"),
    [
        # (name, ready, role, created)
        ([("a", True, "serving", 1.0), ("b", True, "serving", 2.0)], 1, {"b": "standby"}),  # newest demoted
        ([("a", True, "serving", 1.0), ("b", True, "standby", 2.0)], 0, {"b": "serving"}),  # promotion
        # a scale-up: the new pod is still starting, so it becomes the standby and the warm one serves
        ([("a", True, "serving", 1.0), ("b", True, "standby", 2.0), ("c", False, "serving", 3.0)], 1,
         {"b": "serving", "c": "standby"}),
        ([("a", True, "serving", 1.0), ("b", True, "standby", 2.0)], 1, {}),  # nothing to do
        ([("a", True, None, 1.0)], 0, {"a": "serving"}),  # an unlabelled pod is put behind the Service
        ([("a", True, "serving", 1.0)], 3, {"a": "standby"}),  # fewer pods than asked: all standby
    ],
)  # fmt: skip
def test_standby_is_taken_from_starting_pods_first_then_standby_then_the_newest_serving(
    pods: list[tuple[str, bool, str | None, float]], standby: int, flips: dict[str, str]
) -> None:
    assert standby_choice(pods, standby=standby) == flips


def _serving_workload(kube: KubeCluster, namespace: str, *, replicas: int) -> None:
    """Deployment chat (template role serving) and Service chat selecting role serving only."""
    with kube.api_client() as api:
        client.AppsV1Api(api).create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": "chat"},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "chat"}},
                    "template": {
                        "metadata": {"labels": {"app": "chat", ROLE_LABEL: "serving"}},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
                    },
                },
            },
        )
        client.CoreV1Api(api).create_namespaced_service(
            namespace,
            {
                "metadata": {"name": "chat"},
                "spec": {"selector": {"app": "chat", ROLE_LABEL: "serving"}, "ports": [{"port": 8000}]},
            },
        )


def _run_pods(kube: KubeCluster, namespace: str, *, count: int) -> None:
    """Act as scheduler and kubelet: bind ``count`` pods to a Node, give each an IP, make them Ready."""
    node = f"{namespace}-gpu"
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": node}})

        def pods() -> list[Any]:
            return core.list_namespaced_pod(namespace, label_selector="app=chat").items

        until(lambda: len(pods()) >= count, seconds=30, what=f"{count} pods")
        for i, pod in enumerate(sorted(pods(), key=lambda p: p.metadata.name)):
            name = pod.metadata.name
            binding = {"target": {"kind": "Node", "name": node}, "metadata": {"name": name}}
            core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)
            ip = f"10.1.0.{i + 10}"
            conditions = [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]
            status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": conditions}
            core.patch_namespaced_pod_status(name, namespace, {"status": status})


def _endpoints(kube: KubeCluster, namespace: str) -> set[str]:
    with kube.api_client() as api:
        try:
            found = client.CoreV1Api(api).read_namespaced_endpoints("chat", namespace)
        except client.ApiException:
            return set()
    return {a.ip for subset in found.subsets or [] for a in subset.addresses or []}


@pytest.mark.integration
def test_promotion_is_one_label_patch_and_the_service_follows(kube: KubeCluster, kube_namespace: str) -> None:
    _serving_workload(kube, kube_namespace, replicas=3)
    _run_pods(kube, kube_namespace, count=3)
    until(lambda: len(_endpoints(kube, kube_namespace)) == 3, seconds=30, what="3 endpoints")
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
    api = load_api_client(
        host=kube.url, token_file=str(kube.token_file("scaler")), ca_file=str(kube.ca_file),
        kubeconfig=None, in_cluster=False,
    )  # fmt: skip
    actuator = KubernetesActuator(api, request_timeout=5.0)
    target = KubernetesTarget(namespace=kube_namespace, name="chat")

    demoted = asyncio.run(actuator.set_standby_pods(target, name="chat", standby=1))
    assert list(demoted.values()) == ["standby"]
    until(lambda: len(_endpoints(kube, kube_namespace)) == 2, seconds=30, what="standby out of the Service")
    assert asyncio.run(actuator.set_standby_pods(target, name="chat", standby=1)) == {}  # idempotent

    started = time.monotonic()
    promoted = asyncio.run(actuator.set_standby_pods(target, name="chat", standby=0))
    assert promoted == {next(iter(demoted)): "serving"}  # one patch, the same (warm) pod
    until(lambda: len(_endpoints(kube, kube_namespace)) == 3, seconds=30, what="the promoted pod serving")
    promotion = time.monotonic() - started
    # the README's promotion figure; a new pod would take its cold start (the policy's 300 s by default)
    print(f"standby promotion, label patch to the Service's endpoints: {promotion:.2f} s")
    assert promotion < 30
    assert [e for e in kube.audit(namespace=kube_namespace, user="scaler") if e["verb"] == "delete"] == []


def _pods(kube: KubeCluster, namespace: str) -> dict[str, str | None]:
    with kube.api_client() as api:
        items = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=chat").items
    return {p.metadata.name: (p.metadata.labels or {}).get(ROLE_LABEL) for p in items}


@pytest.mark.integration
def test_the_actuator_promotes_a_labelled_standby_without_a_new_pod(
    kube: KubeCluster, kube_namespace: str
) -> None:
    _serving_workload(kube, kube_namespace, replicas=3)
    _run_pods(kube, kube_namespace, count=3)
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
    api = load_api_client(
        host=kube.url, token_file=str(kube.token_file("scaler")), ca_file=str(kube.ca_file),
        kubeconfig=None, in_cluster=False,
    )  # fmt: skip
    acts = Actuators(
        kubernetes=KubernetesActuator(api, request_timeout=5.0), serverless=None,
        metrics=ActuatorMetrics(CollectorRegistry()), dry_run=False,
        retry=RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=5.0),
        failure_threshold=2, seed=1,
    )  # fmt: skip
    pol = policy(kubernetes={"namespace": kube_namespace, "name": "chat", "standby_label": True})

    async def apply(replicas: int, standby: int) -> None:
        current = await acts.read(pol)
        dec = decision(replicas=replicas, standby=standby)
        await acts.apply(policy=pol, decision=dec, current=current, now=dec.at)

    asyncio.run(apply(2, 1))  # three pods: two serve, one warm standby out of the Service
    roles = _pods(kube, kube_namespace)
    assert sorted(roles.values()) == ["serving", "serving", "standby"]
    until(lambda: len(_endpoints(kube, kube_namespace)) == 2, seconds=30, what="2 endpoints")
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert capacity.standby is not None
    assert (capacity.replicas.desired, capacity.replicas.ready) == (2, 2)
    assert (capacity.standby.desired, capacity.standby.ready) == (1, 1)

    asyncio.run(apply(3, 0))  # promotion: the standby pod serves, no pod is created
    after = _pods(kube, kube_namespace)
    assert set(after) == set(roles)  # the same pods
    assert sorted(after.values()) == ["serving", "serving", "serving"]
    until(lambda: len(_endpoints(kube, kube_namespace)) == 3, seconds=30, what="3 endpoints")
    with kube.api_client() as admin:
        spec = client.AppsV1Api(admin).read_namespaced_deployment("chat", kube_namespace).spec
    assert spec.replicas == 3
