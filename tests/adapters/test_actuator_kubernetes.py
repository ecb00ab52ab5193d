"""The Kubernetes actuator against a real API server process (kmock, extended: see kube_apiserver.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.kubernetes import RBAC_RULES, KubernetesActuator, load_api_client
from scaler.core.types import Unavailable
from scaler.executor import readback_from
from tests.adapters.actuator_fixtures import Process, decision, http_json, policy, start_kube_apiserver
from tests.conftest import free_port

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=1.0)


@pytest.fixture(scope="module")
def apiserver() -> Iterator[Process]:
    server = start_kube_apiserver(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(apiserver: Process) -> Iterator[tuple[Process, str, client.AppsV1Api]]:
    """A fresh namespace with Deployments chat (2 replicas), chat-standby (1) and other (4)."""
    http_json("POST", f"{apiserver.url}/_control/reset", {})
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    api = load_api_client(host=apiserver.url, kubeconfig=None, in_cluster=False)
    apps = client.AppsV1Api(api)
    for name, replicas in (("chat", 2), ("chat-standby", 1), ("other", 4)):
        labels = {"app": name}
        apps.create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
                    },
                },
            },
        )
    http_json("POST", f"{apiserver.url}/_control/reset", {})  # forget the set-up requests
    yield apiserver, namespace, apps
    api.close()


def _actuators(
    url: str, *, dry_run: bool = False, retry: RetryPolicy = FAST
) -> tuple[Actuators, CollectorRegistry]:
    registry = CollectorRegistry()
    api = load_api_client(host=url, kubeconfig=None, in_cluster=False)
    acts = Actuators(
        kubernetes=KubernetesActuator(api, request_timeout=0.5),
        serverless=None,
        metrics=ActuatorMetrics(registry),
        dry_run=dry_run,
        retry=retry,
        failure_threshold=2,
        seed=1,
    )
    return acts, registry


def _policy(namespace: str, **extra: Any) -> Any:
    return policy(
        kubernetes={"namespace": namespace, "name": "chat", "standby_name": "chat-standby", **extra}
    )


def _replicas(apps: client.AppsV1Api, namespace: str, name: str) -> int:
    return int(apps.read_namespaced_deployment(name, namespace).spec.replicas)


def _writes(server: Process) -> list[dict[str, str]]:
    return [r for r in http_json("GET", f"{server.url}/_control/requests") if r["method"] != "GET"]


def _apply(acts: Actuators, pol: Any, dec: Any) -> list[Any]:
    async def run() -> list[Any]:
        current = await acts.read(pol)
        return await acts.apply(policy=pol, decision=dec, current=current, now=dec.at)

    return asyncio.run(run())


def test_a_decision_sets_serving_and_standby_replicas_and_records_events(cluster: Any) -> None:
    server, namespace, apps = cluster
    acts, _ = _actuators(server.url)
    pol = _policy(namespace)
    made = _apply(acts, pol, decision(replicas=4, standby=2))
    assert [(c.kind, c.current, c.desired) for c in made] == [("replicas", 2, 4), ("standby", 1, 2)]
    assert _replicas(apps, namespace, "chat") == 4
    assert _replicas(apps, namespace, "chat-standby") == 2
    events = client.CoreV1Api(apps.api_client).list_namespaced_event(namespace).items
    messages = sorted((e.involved_object.name, e.reason, e.message) for e in events)
    assert [(n, r) for n, r, _ in messages] == [
        ("chat", "SpillwayScaled"),
        ("chat-standby", "SpillwayScaled"),
    ]
    assert "2 -> 4 replicas" in messages[0][2]
    assert "test decision" in messages[0][2]
    # read-back: ready and starting come from the workload's status
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert (capacity.replicas.ready, capacity.replicas.starting) == (4, 0)


def test_the_same_decision_twice_changes_nothing(cluster: Any) -> None:
    server, namespace, _apps = cluster
    acts, _ = _actuators(server.url)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=3, standby=0))
    writes = len(_writes(server))
    assert _apply(acts, pol, decision(replicas=3, standby=0, at=1_700_000_100.0)) == []
    assert len(_writes(server)) == writes


def test_bounds_hold_when_the_planner_asks_for_too_much_or_too_little(cluster: Any) -> None:
    server, namespace, apps = cluster
    acts, registry = _actuators(server.url)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=500, standby=-3))
    assert _replicas(apps, namespace, "chat") == 5  # max_replicas
    assert _replicas(apps, namespace, "chat-standby") == 0  # min_standby
    _apply(acts, pol, decision(replicas=0, standby=9, at=1_700_000_100.0))
    assert _replicas(apps, namespace, "chat") == 1  # min_replicas: never to zero below the floor
    assert _replicas(apps, namespace, "chat-standby") == 2
    assert registry.get_sample_value("scaler_actuator_clamped_total", {"model": "chat"}) == 2


@pytest.mark.parametrize("status", [409, 429, 500])
def test_conflicts_throttling_and_server_errors_are_retried_and_counted(cluster: Any, status: int) -> None:
    server, namespace, apps = cluster
    http_json(
        "POST",
        f"{server.url}/_control/faults",
        {
            "method": "PUT",
            "path": f"/namespaces/{namespace}/deployments/chat/scale",
            "status": status,
            "count": 1,
        },
    )
    acts, registry = _actuators(server.url)
    _apply(acts, _policy(namespace), decision(replicas=3, standby=1))
    assert _replicas(apps, namespace, "chat") == 3
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_retries_total", {"kind": "replicas", "target": target})
        == 1
    )
    puts = [w for w in _writes(server) if w["method"] == "PUT"]
    assert len(puts) == 2  # re-read and re-applied once, never forced


def test_a_timeout_is_retried(cluster: Any) -> None:
    server, namespace, apps = cluster
    http_json(
        "POST",
        f"{server.url}/_control/faults",
        {
            "method": "GET",
            "path": f"/namespaces/{namespace}/deployments/chat/scale",
            "delay": 1.5,
            "count": 1,
        },
    )
    acts, registry = _actuators(server.url)
    _apply(acts, _policy(namespace), decision(replicas=4, standby=1))
    assert _replicas(apps, namespace, "chat") == 4
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_retries_total", {"kind": "replicas", "target": target})
        == 1
    )


def test_an_api_that_keeps_failing_is_reported_unavailable_then_recovers(cluster: Any) -> None:
    server, namespace, apps = cluster
    http_json(
        "POST",
        f"{server.url}/_control/faults",
        {
            "method": "PUT",
            "path": f"/namespaces/{namespace}/deployments/chat/scale",
            "status": 503,
            "count": 7,
        },
    )
    acts, registry = _actuators(server.url)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=4, standby=1))
    assert acts.unavailable("chat") == Unavailable.NONE  # one failed change: not yet
    _apply(acts, pol, decision(replicas=4, standby=1, at=1_700_000_100.0))
    assert acts.unavailable("chat") == Unavailable.KUBERNETES
    assert (
        registry.get_sample_value("scaler_capacity_unavailable", {"model": "chat", "kind": "kubernetes"}) == 1
    )
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_failures_total", {"kind": "replicas", "target": target})
        == 2
    )
    assert _replicas(apps, namespace, "chat") == 2
    # the planner hears of it: the next observation flags Kubernetes capacity as unavailable
    back = readback_from(asyncio.run(acts.read(pol)), unavailable=acts.unavailable("chat"))
    assert back.unavailable == Unavailable.KUBERNETES
    assert (back.replicas_ready, back.standby_ready) == (2, 1)  # read back from the cluster
    puts = len([w for w in _writes(server) if w["method"] == "PUT"])
    _apply(acts, pol, decision(replicas=4, standby=1, at=1_700_000_150.0))  # unavailable: one attempt only
    assert len([w for w in _writes(server) if w["method"] == "PUT"]) == puts + 1
    assert _replicas(apps, namespace, "chat") == 2
    _apply(acts, pol, decision(replicas=4, standby=1, at=1_700_000_200.0))  # faults used up: works again
    assert _replicas(apps, namespace, "chat") == 4
    assert acts.unavailable("chat") == Unavailable.NONE
    assert (
        registry.get_sample_value("scaler_capacity_unavailable", {"model": "chat", "kind": "kubernetes"}) == 0
    )


def test_dry_run_touches_nothing(cluster: Any) -> None:
    server, namespace, apps = cluster
    acts, registry = _actuators(server.url, dry_run=True)
    made = _apply(acts, _policy(namespace), decision(replicas=5, standby=2))
    assert [c.kind for c in made] == ["replicas", "standby"]
    assert _writes(server) == []
    assert _replicas(apps, namespace, "chat") == 2
    sample = registry.get_sample_value(
        "scaler_actuator_changes_total", {"model": "chat", "kind": "replicas", "dry_run": "true"}
    )
    assert sample == 1


def test_only_the_workloads_named_in_the_policy_are_touched(cluster: Any) -> None:
    server, namespace, apps = cluster
    acts, _ = _actuators(server.url)
    pol = policy(kubernetes={"namespace": namespace, "name": "chat"})  # no standby named
    _apply(acts, pol, decision(replicas=5, standby=2))
    paths = {r["path"] for r in http_json("GET", f"{server.url}/_control/requests")}
    assert not any("/other" in p or "chat-standby" in p for p in paths)
    assert (_replicas(apps, namespace, "other"), _replicas(apps, namespace, "chat-standby")) == (4, 1)
    assert _apply(acts, policy(), decision(replicas=5)) == []  # no targets: nothing at all


def test_starting_replicas_are_read_back_until_ready(cluster: Any) -> None:
    server, namespace, _apps = cluster
    http_json("POST", f"{server.url}/_control/hold-ready", {"hold": True})
    acts, _ = _actuators(server.url)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=5, standby=1))
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert (capacity.replicas.desired, capacity.replicas.ready, capacity.replicas.starting) == (5, 2, 3)


def test_rbac_rules_cover_only_reads_scale_and_events() -> None:
    verbs = {(r, v) for rule in RBAC_RULES for r in rule["resources"] for v in rule["verbs"]}
    assert ("deployments/scale", "update") in verbs
    assert ("events", "create") in verbs
    assert not any(v in ("delete", "create") and r != "events" for r, v in verbs)
