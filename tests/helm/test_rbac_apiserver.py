"""Least privilege through the real authorizer: the chart's rendered ServiceAccount, Role and RoleBinding
in a real kube-apiserver (RBAC on), with ``rbac.targets`` naming one Deployment.

Acting as that ServiceAccount (its token from the controller-manager's token controller), every call
the daemon makes on the named target is allowed, and every other verb, resource, name or namespace
is refused with 403.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chart_render import manifests
from kubernetes import client

from scaler.adapters.kubernetes import KubernetesActuator
from scaler.core.policy import KubernetesTarget
from tests.kube_cluster import KubeCluster, create_deployment, create_namespace, until

pytest.importorskip("helm_python")
pytestmark = pytest.mark.integration


@pytest.fixture
def chart_identity(kube: KubeCluster, kube_namespace: str) -> Iterator[tuple[client.ApiClient, str, str]]:
    """Yield (client as the chart's ServiceAccount, its namespace, another namespace).

    The release namespace holds Deployments chat (named in rbac.targets) and other, and a Secret; the
    other namespace holds a Deployment chat too.
    """
    namespace, elsewhere = kube_namespace, f"{kube_namespace}-b"
    create_namespace(kube, elsewhere)
    for where, name in ((namespace, "chat"), (namespace, "other"), (elsewhere, "chat")):
        create_deployment(kube, namespace=where, name=name, replicas=1)
    values = {
        "kafka": {"bootstrapServers": ["kafka:9092"]},
        "rbac": {"targets": {"deployments": ["chat"], "statefulsets": []}},
    }
    objects = [
        o
        for o in manifests(values, namespace=namespace)
        if o["kind"] in {"ServiceAccount", "Role", "RoleBinding"}
    ]
    assert sorted(o["kind"] for o in objects) == ["Role", "RoleBinding", "ServiceAccount"]
    with kube.api_client() as admin:
        core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
        core.create_namespaced_secret(namespace, {"metadata": {"name": "db"}, "stringData": {"p": "x"}})
        for obj in objects:
            where = obj["metadata"].get("namespace", namespace)
            {
                "ServiceAccount": core.create_namespaced_service_account,
                "Role": rbac.create_namespaced_role,
                "RoleBinding": rbac.create_namespaced_role_binding,
            }[obj["kind"]](where, obj)
        account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]

        def token_secret() -> str | None:
            secrets = core.read_namespaced_service_account(account, namespace).secrets or []
            return secrets[0].name if secrets else None

        until(lambda: token_secret() is not None, seconds=20, what="the ServiceAccount's token")
        secret = core.read_namespaced_secret(token_secret(), namespace)
        token = base64.b64decode(secret.data["token"]).decode()
    with client.ApiClient(kube.configuration(token=token)) as api:
        yield api, namespace, elsewhere


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except client.ApiException as exc:
        return int(exc.status)
    return 200


def test_every_call_the_daemon_makes_is_allowed(chart_identity: tuple[client.ApiClient, str, str]) -> None:
    api, namespace, _elsewhere = chart_identity
    actuator = KubernetesActuator(api)
    target = KubernetesTarget(namespace=namespace, kind="Deployment", name="chat")
    # get deployment, get + update its scale, create an Event, list pods and patch their deletion
    # cost: the daemon's whole repertoire
    assert asyncio.run(actuator.read(target, name="chat")).desired == 1
    asyncio.run(actuator.set_replicas(target, name="chat", replicas=3, reason="rbac test"))
    assert asyncio.run(actuator.read(target, name="chat")).desired == 3
    apps = client.AppsV1Api(api)
    assert apps.read_namespaced_deployment_scale("chat", namespace).spec.replicas == 3
    assert _status(lambda: _event(api, namespace)) == 200
    until(lambda: len(asyncio.run(actuator.list_pods(target, name="chat"))) == 3, seconds=30, what="3 pods")
    pod = asyncio.run(actuator.list_pods(target, name="chat"))[0].name
    asyncio.run(actuator.set_deletion_cost(target, pod=pod, cost=-1000))
    (marked,) = [p for p in asyncio.run(actuator.list_pods(target, name="chat")) if p.name == pod]
    assert marked.deletion_cost == "-1000"


def _event(api: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "rbac-"},
            "involvedObject": {"kind": "Deployment", "name": "chat", "namespace": namespace},
            "reason": "Test",
            "message": "rbac test",
        },
    )


def _a_pod(kube: KubeCluster, namespace: str) -> str:
    """Return the name of a pod of Deployment chat (as admin), once the controller-manager made one."""
    with kube.api_client() as admin:
        core = client.CoreV1Api(admin)
        until(
            lambda: bool(core.list_namespaced_pod(namespace, label_selector="app=chat").items),
            seconds=30,
            what="a pod of chat",
        )
        return str(core.list_namespaced_pod(namespace, label_selector="app=chat").items[0].metadata.name)


def test_everything_else_is_forbidden(
    chart_identity: tuple[client.ApiClient, str, str], kube: KubeCluster
) -> None:
    api, namespace, elsewhere = chart_identity
    pod = _a_pod(kube, namespace)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    scale = {"spec": {"replicas": 5}}
    labels = {"app": "x"}
    deployment = {
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            },
        },
    }
    calls: dict[str, Callable[[], Any]] = {
        "get secret": lambda: core.read_namespaced_secret("db", namespace),
        "list secrets": lambda: core.list_namespaced_secret(namespace),
        "get other deployment": lambda: apps.read_namespaced_deployment("other", namespace),
        "get other scale": lambda: apps.read_namespaced_deployment_scale("other", namespace),
        "update other scale": lambda: apps.replace_namespaced_deployment_scale(
            "other", namespace, {"metadata": {"name": "other"}, **scale}
        ),
        "list deployments": lambda: apps.list_namespaced_deployment(namespace),
        "patch the target": lambda: apps.patch_namespaced_deployment("chat", namespace, scale),
        "patch the target's scale": lambda: apps.patch_namespaced_deployment_scale("chat", namespace, scale),
        "delete the target": lambda: apps.delete_namespaced_deployment("chat", namespace),
        "create a deployment": lambda: apps.create_namespaced_deployment(namespace, deployment),
        "get a pod": lambda: core.read_namespaced_pod(pod, namespace),
        "delete a pod": lambda: core.delete_namespaced_pod(pod, namespace),
        "patch a pod's status": lambda: core.patch_namespaced_pod_status(
            pod, namespace, {"status": {"phase": "Failed"}}
        ),
        "evict a pod": lambda: core.create_namespaced_pod_eviction(
            pod,
            namespace,
            {"metadata": {"name": pod, "namespace": namespace}},
        ),
        "patch a pod in another namespace": lambda: core.patch_namespaced_pod(
            "x", elsewhere, {"metadata": {"labels": labels}}
        ),
        "delete pods": lambda: core.delete_collection_namespaced_pod(namespace),
        "list pods in another namespace": lambda: core.list_namespaced_pod(elsewhere),
        "get the target in another namespace": lambda: apps.read_namespaced_deployment("chat", elsewhere),
        "scale the target in another namespace": lambda: apps.replace_namespaced_deployment_scale(
            "chat", elsewhere, {"metadata": {"name": "chat"}, **scale}
        ),
        "create an event in another namespace": lambda: _event(api, elsewhere),
        "list events": lambda: core.list_namespaced_event(namespace),
        "list namespaces": core.list_namespace,
    }
    statuses = {what: _status(call) for what, call in calls.items()}
    assert statuses == dict.fromkeys(calls, 403)
    assert _status(lambda: core.list_namespaced_pod(namespace)) == 200  # the pods' cold starts
