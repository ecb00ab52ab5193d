"""The chart's fencing Role through the real authorizer: the lease keeper, acting as the chart's
ServiceAccount, acquires and renews the named partition Leases; every other Lease call is 403."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chart_render import manifests
from kubernetes import client

from scaler.adapters.lease import LeaseKeeper
from tests.kube_cluster import KubeCluster, create_namespace, until

pytest.importorskip("helm_python")
pytestmark = pytest.mark.integration


@pytest.fixture
def lease_identity(kube: KubeCluster, kube_namespace: str) -> Iterator[tuple[client.ApiClient, str, str]]:
    """Yield (client as the chart's ServiceAccount bound only to the Leases' Role, namespace, another)."""
    namespace, elsewhere = kube_namespace, f"{kube_namespace}-b"
    create_namespace(kube, elsewhere)
    values = {"actuate": True, "kafka": {"bootstrapServers": ["kafka:9092"], "topicPartitions": 4}}
    objects = [
        o
        for o in manifests(values, namespace=namespace)
        if o["kind"] == "ServiceAccount" or o["metadata"]["name"].endswith("-leases")
    ]
    assert sorted(o["kind"] for o in objects) == ["Role", "RoleBinding", "ServiceAccount"]
    with kube.api_client() as admin:
        core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
        for obj in objects:
            {
                "ServiceAccount": core.create_namespaced_service_account,
                "Role": rbac.create_namespaced_role,
                "RoleBinding": rbac.create_namespaced_role_binding,
            }[obj["kind"]](namespace, obj)
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


def test_the_keeper_holds_the_named_leases_and_nothing_else_is_allowed(
    lease_identity: tuple[client.ApiClient, str, str],
) -> None:
    api, namespace, elsewhere = lease_identity
    now = [0.0]
    keeper = LeaseKeeper(
        api,
        namespace=namespace,
        prefix="spillway",  # the chart's lease prefix for release "spillway"
        identity="pod-1",
        duration=15.0,
        renew_every=5.0,
        margin=5.0,
        request_timeout=5.0,
        monotonic=lambda: now[0],
    )

    async def run() -> list[bool]:
        await keeper.assigned(frozenset({0, 3}))
        await keeper.step()  # create
        now[0] += 5.0
        await keeper.step()  # renew (get + update)
        held = [keeper.holds(0, now=now[0]), keeper.holds(3, now=now[0])]
        await keeper.revoked(frozenset({0, 3}))  # release (update)
        return held

    assert asyncio.run(run()) == [True, True]
    leases = client.CoordinationV1Api(api)
    body = {"metadata": {"name": "spillway-4"}, "spec": {"holderIdentity": "x"}}
    calls: dict[str, Callable[[], Any]] = {
        "get an unnamed lease": lambda: leases.read_namespaced_lease("spillway-4", namespace),
        "update an unnamed lease": lambda: leases.replace_namespaced_lease("spillway-4", namespace, body),
        "list leases": lambda: leases.list_namespaced_lease(namespace),
        "delete a named lease": lambda: leases.delete_namespaced_lease("spillway-0", namespace),
        "patch a named lease": lambda: leases.patch_namespaced_lease("spillway-0", namespace, {"spec": {}}),
        "get a lease in another namespace": lambda: leases.read_namespaced_lease("spillway-0", elsewhere),
        "create a lease in another namespace": lambda: leases.create_namespaced_lease(elsewhere, body),
    }
    assert {name: _status(call) for name, call in calls.items()} == dict.fromkeys(calls, 403)
