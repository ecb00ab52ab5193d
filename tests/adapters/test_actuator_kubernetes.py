"""The Kubernetes actuator against a real kube-apiserver (+ controller-manager): see tests/kube_cluster.py.

The actuator acts as user ``scaler``, bound in each test's namespace to a Role of exactly
:data:`RBAC_RULES`; what it did is read from the apiserver's audit log. Faults (throttling, 5xx,
slowness) come from the TLS proxy in front of the apiserver (tests/adapters/faulty_proxy.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.kubernetes import RBAC_RULES, KubernetesActuator, describe_rules, load_api_client
from scaler.core.types import Unavailable
from scaler.executor import readback_from
from tests.adapters.actuator_fixtures import Process, decision, http_json, policy, start_kube_proxy
from tests.conftest import free_port
from tests.kube_cluster import KubeCluster, bind_role, create_deployment, ready_replicas, until

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=1.0)


@pytest.fixture
def cluster(kube: KubeCluster, kube_namespace: str) -> Iterator[tuple[KubeCluster, str, client.AppsV1Api]]:
    """The test's namespace with Deployments chat (2 replicas), chat-standby (1) and other (4)."""
    for name, replicas in (("chat", 2), ("chat-standby", 1), ("other", 4)):
        create_deployment(kube, namespace=kube_namespace, name=name, replicas=replicas)
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
    with kube.api_client() as api:
        yield kube, kube_namespace, client.AppsV1Api(api)


@dataclasses.dataclass
class Proxy:
    """The fault-injecting TLS proxy in front of the apiserver, and the CA that verifies it."""

    process: Process
    ca_file: Path

    @property
    def url(self) -> str:
        """Return its HTTPS URL."""
        return self.process.url

    def control(self, method: str, path: str, body: object | None = None) -> Any:
        """Return the answer of one of its control endpoints (``/_faults``, ``/_requests``)."""
        return http_json(method, f"{self.url}{path}", body, ca_file=self.ca_file)


@pytest.fixture
def proxy(kube: KubeCluster) -> Iterator[Proxy]:
    """The fault-injecting TLS proxy in front of the apiserver."""
    server = start_kube_proxy(free_port(), kube)
    try:
        yield Proxy(process=server, ca_file=kube.ca_file)
    finally:
        server.stop()


def _actuators(
    kube: KubeCluster,
    *,
    url: str | None = None,
    dry_run: bool = False,
    retry: RetryPolicy = FAST,
    request_timeout: float = 0.5,
) -> tuple[Actuators, CollectorRegistry]:
    registry = CollectorRegistry()
    api = load_api_client(
        host=url or kube.url,
        token_file=str(kube.token_file("scaler")),
        ca_file=str(kube.ca_file),
        kubeconfig=None,
        in_cluster=False,
    )
    acts = Actuators(
        kubernetes=KubernetesActuator(api, request_timeout=request_timeout),
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


def _workload(ref: dict[str, str]) -> str:
    """Return the object's name; for an Event (``<workload>.<suffix>``) the workload it is about."""
    name = ref.get("name", "")
    return name.split(".", 1)[0] if ref["resource"] == "events" else name


def _writes(kube: KubeCluster, namespace: str) -> list[tuple[str, str, str]]:
    """Return (verb, resource[/subresource], name) of every write the actuator made in ``namespace``.

    Counts the writes that took effect. A write refused with 409 is left out: the controller-manager
    may update a Deployment it has just created between our read and our write, and the actuator then
    re-reads and writes again (the conflict test below covers that path). Any other refusal fails.
    """
    found = []
    for event in kube.audit(namespace=namespace, user="scaler"):
        ref = event["objectRef"]
        code = (event.get("responseStatus") or {}).get("code", 0)
        if code == 409:
            continue
        assert 200 <= code < 300, f"the apiserver refused a write with {code}: {ref}"
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.append((event["verb"], resource, _workload(ref)))
    return found


def _puts(proxy: Proxy, namespace: str, name: str = "chat") -> int:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
    return sum(1 for method, p in proxy.control("GET", "/_requests") if (method, p) == ("PUT", path))


def _fault(proxy: Proxy, **fault: Any) -> None:
    if "status" in fault:
        fault["body"] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault["status"]}
    proxy.control("POST", "/_faults", fault)


def _apply(acts: Actuators, pol: Any, dec: Any) -> list[Any]:
    async def run() -> list[Any]:
        current = await acts.read(pol)
        return await acts.apply(policy=pol, decision=dec, current=current, now=dec.at)

    return asyncio.run(run())


def test_a_decision_sets_serving_and_standby_replicas_and_records_events(cluster: Any) -> None:
    kube, namespace, apps = cluster
    acts, _ = _actuators(kube)
    pol = _policy(namespace)
    made = _apply(acts, pol, decision(replicas=4, standby=2))
    assert [(c.kind, c.current, c.desired) for c in made] == [("replicas", 2, 4), ("standby", 1, 2)]
    assert _replicas(apps, namespace, "chat") == 4
    assert _replicas(apps, namespace, "chat-standby") == 2
    events = client.CoreV1Api(apps.api_client).list_namespaced_event(namespace).items
    ours = sorted((e.involved_object.name, e.message) for e in events if e.reason == "SpillwayScaled")
    assert [n for n, _ in ours] == ["chat", "chat-standby"]
    assert "2 -> 4 replicas" in ours[0][1]
    assert "test decision" in ours[0][1]
    assert sorted(_writes(kube, namespace)) == [
        ("create", "events", "chat"),
        ("create", "events", "chat-standby"),
        ("update", "deployments/scale", "chat"),
        ("update", "deployments/scale", "chat-standby"),
    ]
    # read-back: the controller-manager makes 4 pods; once they are Ready the workload's status says so
    kube.make_ready(namespace=namespace, selector="app=chat", count=4)
    until(lambda: ready_replicas(kube, namespace=namespace, name="chat") == 4, seconds=20, what="4 ready")
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert (capacity.replicas.desired, capacity.replicas.ready, capacity.replicas.starting) == (4, 4, 0)


def test_the_same_decision_twice_changes_nothing(cluster: Any) -> None:
    kube, namespace, _apps = cluster
    acts, _ = _actuators(kube)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=3, standby=0))
    writes = len(_writes(kube, namespace))
    assert writes == 4  # two scale updates, two events
    assert _apply(acts, pol, decision(replicas=3, standby=0, at=1_700_000_100.0)) == []
    assert len(_writes(kube, namespace)) == writes


def test_bounds_hold_when_the_planner_asks_for_too_much_or_too_little(cluster: Any) -> None:
    kube, namespace, apps = cluster
    acts, registry = _actuators(kube)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=500, standby=-3))
    assert _replicas(apps, namespace, "chat") == 5  # max_replicas
    assert _replicas(apps, namespace, "chat-standby") == 0  # min_standby
    _apply(acts, pol, decision(replicas=0, standby=9, at=1_700_000_100.0))
    assert _replicas(apps, namespace, "chat") == 1  # min_replicas: never to zero below the floor
    assert _replicas(apps, namespace, "chat-standby") == 2
    assert registry.get_sample_value("scaler_actuator_clamped_total", {"model": "chat"}) == 2


def test_a_real_conflict_is_re_read_and_never_forced_over_the_operator(cluster: Any, proxy: Proxy) -> None:
    """Someone scales chat while our update is in flight: the apiserver answers 409; we re-read, see
    the operator's count, and leave it (the next read-back reports it as an external change)."""
    kube, namespace, apps = cluster
    _fault(proxy, method="PUT", path=f"/namespaces/{namespace}/deployments/chat/scale", delay=1.0, count=1)
    slow = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=5.0)
    acts, registry = _actuators(kube, url=proxy.url, retry=slow, request_timeout=4.0)

    def operator() -> None:  # an out-of-band change while our PUT is held by the proxy
        until(lambda: _puts(proxy, namespace) == 1, seconds=10, what="our first PUT")
        apps.patch_namespaced_deployment_scale("chat", namespace, {"spec": {"replicas": 5}})

    other = threading.Thread(target=operator)
    other.start()
    pol = policy(kubernetes={"namespace": namespace, "name": "chat"})
    assert _apply(acts, pol, decision(replicas=3)) == []
    other.join()
    assert _replicas(apps, namespace, "chat") == 5  # the operator's, not overwritten
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_retries_total", {"kind": "replicas", "target": target})
        == 1
    )
    assert _puts(proxy, namespace) == 1  # the stale one (409 from the apiserver); the re-read saw 5
    codes = [
        e["responseStatus"]["code"]
        for e in kube.audit(namespace=namespace, user="scaler")
        if e["objectRef"].get("subresource") == "scale" and e["verb"] == "update"
    ]
    assert codes == [409]
    _apply(acts, pol, decision(replicas=3))  # the next interval: an external change, kept as a floor
    assert (
        registry.get_sample_value("scaler_external_changes_total", {"model": "chat", "kind": "replicas"}) == 1
    )
    assert _replicas(apps, namespace, "chat") == 5


@pytest.mark.parametrize("status", [429, 500])
def test_throttling_and_server_errors_are_retried_and_counted(
    cluster: Any, proxy: Proxy, status: int
) -> None:
    kube, namespace, apps = cluster
    scale = f"/namespaces/{namespace}/deployments/chat/scale"
    _fault(proxy, method="PUT", path=scale, status=status, count=1)
    acts, registry = _actuators(kube, url=proxy.url)
    _apply(acts, _policy(namespace), decision(replicas=3, standby=1))
    assert _replicas(apps, namespace, "chat") == 3
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_retries_total", {"kind": "replicas", "target": target})
        == 1
    )
    assert _puts(proxy, namespace) == 2  # re-read and re-applied once


def test_a_timeout_is_retried(cluster: Any, proxy: Proxy) -> None:
    kube, namespace, apps = cluster
    _fault(proxy, method="GET", path=f"/namespaces/{namespace}/deployments/chat/scale", delay=1.5, count=1)
    acts, registry = _actuators(kube, url=proxy.url)
    _apply(acts, _policy(namespace), decision(replicas=4, standby=1))
    assert _replicas(apps, namespace, "chat") == 4
    target = f"Deployment/{namespace}/chat"
    assert (
        registry.get_sample_value("scaler_actuator_retries_total", {"kind": "replicas", "target": target})
        == 1
    )


def test_an_api_that_keeps_failing_is_reported_unavailable_then_recovers(cluster: Any, proxy: Proxy) -> None:
    kube, namespace, apps = cluster
    _fault(proxy, method="PUT", path=f"/namespaces/{namespace}/deployments/chat/scale", status=503, count=7)
    acts, registry = _actuators(kube, url=proxy.url)
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
    # read back from the cluster: no pod is Ready (no kubelet), all are starting
    assert (back.replicas_ready, back.replicas_starting) == (0, 2)
    puts = _puts(proxy, namespace)
    _apply(acts, pol, decision(replicas=4, standby=1, at=1_700_000_150.0))  # unavailable: one attempt only
    assert _puts(proxy, namespace) == puts + 1
    assert _replicas(apps, namespace, "chat") == 2
    _apply(acts, pol, decision(replicas=4, standby=1, at=1_700_000_200.0))  # faults used up: works again
    assert _replicas(apps, namespace, "chat") == 4
    assert acts.unavailable("chat") == Unavailable.NONE
    assert (
        registry.get_sample_value("scaler_capacity_unavailable", {"model": "chat", "kind": "kubernetes"}) == 0
    )


def test_dry_run_touches_nothing(cluster: Any) -> None:
    kube, namespace, apps = cluster
    acts, registry = _actuators(kube, dry_run=True)
    made = _apply(acts, _policy(namespace), decision(replicas=5, standby=2))
    assert [c.kind for c in made] == ["replicas", "standby"]
    assert kube.audit(namespace=namespace, user="scaler") == []  # not one write, refused or not
    assert _replicas(apps, namespace, "chat") == 2
    sample = registry.get_sample_value(
        "scaler_actuator_changes_total", {"model": "chat", "kind": "replicas", "dry_run": "true"}
    )
    assert sample == 1


def test_only_the_workloads_named_in_the_policy_are_touched(cluster: Any) -> None:
    kube, namespace, apps = cluster
    acts, _ = _actuators(kube)
    pol = policy(kubernetes={"namespace": namespace, "name": "chat"})  # no standby named
    _apply(acts, pol, decision(replicas=5, standby=2))
    audit = kube.audit(namespace=namespace, user="scaler", writes_only=False)
    touched = {(e["objectRef"]["resource"], _workload(e["objectRef"])) for e in audit}
    assert touched == {("deployments", "chat"), ("events", "chat"), ("pods", "")}
    pods = [e for e in audit if e["objectRef"]["resource"] == "pods"]  # listed for their cold starts
    assert {e["verb"] for e in pods} == {"list"}
    assert all("labelSelector=app%3Dchat" in e["requestURI"] for e in pods)
    assert (_replicas(apps, namespace, "other"), _replicas(apps, namespace, "chat-standby")) == (4, 1)
    assert _apply(acts, policy(), decision(replicas=5)) == []  # no targets: nothing at all


def test_starting_replicas_are_read_back_until_ready(cluster: Any) -> None:
    kube, namespace, _apps = cluster
    acts, _ = _actuators(kube)
    pol = _policy(namespace)
    _apply(acts, pol, decision(replicas=5, standby=1))
    kube.make_ready(namespace=namespace, selector="app=chat", count=2)
    until(lambda: ready_replicas(kube, namespace=namespace, name="chat") == 2, seconds=20, what="2 ready")
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert (capacity.replicas.desired, capacity.replicas.ready, capacity.replicas.starting) == (5, 2, 3)


def test_rbac_rules_cover_only_reads_scale_events_and_pod_labels() -> None:
    verbs = {(r, v) for rule in RBAC_RULES for r in rule["resources"] for v in rule["verbs"]}
    assert ("deployments/scale", "update") in verbs
    assert ("events", "create") in verbs
    assert {v for r, v in verbs if r == "pods"} == {"list", "patch"}  # cold starts; the standby label
    assert not any(v in ("delete", "create") and r != "events" for r, v in verbs)
