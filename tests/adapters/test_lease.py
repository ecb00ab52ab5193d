"""Fencing Leases against the real kube-apiserver: acquire, renew, take over a silent holder, release.

Two keepers act as users ``scaler`` and ``chart``, each bound to a Role of exactly the lease
module's RBAC_RULES. Their monotonic clocks are the test's: a "pause" is time passing without
a renewal, so the takeover is exact and no test waits for wall-clock seconds.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client
from structlog.testing import capture_logs

from scaler.adapters.lease import LeaseKeeper, describe_rules
from tests.kube_cluster import KubeCluster, bind_role

pytestmark = pytest.mark.integration


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keepers(kube: KubeCluster, kube_namespace: str) -> tuple[LeaseKeeper, LeaseKeeper, Clock]:
    """Keepers a (user scaler) and b (user chart) of partition Leases in the test's namespace."""
    clock = Clock()
    made = []
    for user in ("scaler", "chart"):
        bind_role(kube, namespace=kube_namespace, user=user, rules=describe_rules())
        made.append(
            LeaseKeeper(
                kube.api_client(user),
                namespace=kube_namespace,
                prefix="spillway",
                identity=f"{user}-pod-1234",
                duration=15.0,
                renew_every=5.0,
                margin=5.0,
                request_timeout=5.0,
                monotonic=clock,
            )
        )
    return made[0], made[1], clock


def _holder(kube: KubeCluster, namespace: str, name: str) -> str | None:
    with kube.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    return lease.spec.holder_identity


def test_a_silent_holder_loses_its_lease_after_the_duration_and_stops_acting_before(
    keepers: tuple[LeaseKeeper, LeaseKeeper, Clock], kube: KubeCluster, kube_namespace: str
) -> None:
    a, b, clock = keepers

    async def run() -> list[tuple[str, bool, bool]]:
        seen = []
        await a.assigned(frozenset({0, 1}))
        await a.step()
        seen.append(("a acquired", a.holds(0, now=clock.now), b.holds(0, now=clock.now)))
        await b.assigned(frozenset({0}))  # the group moved partition 0 to b; a is paused
        await b.step()
        seen.append(("b waits", a.holds(0, now=clock.now), b.holds(0, now=clock.now)))
        clock.now += 10.0  # a has not renewed for 10 s: inside the margin, it must stop acting
        await b.step()
        seen.append(("10 s silent", a.holds(0, now=clock.now), b.holds(0, now=clock.now)))
        clock.now += 5.0  # 15 s unchanged by b's clock: b takes it
        await b.step()
        seen.append(("15 s silent", a.holds(0, now=clock.now), b.holds(0, now=clock.now)))
        await a.step()  # a wakes and renews at its stale resourceVersion: 409, lost at once
        seen.append(("a woke", a.renewed_at(0) is not None, b.holds(0, now=clock.now)))
        return seen

    seen = asyncio.run(run())
    assert seen == [
        ("a acquired", True, False),
        ("b waits", True, False),
        ("10 s silent", False, False),
        ("15 s silent", False, True),
        ("a woke", False, True),
    ]
    assert _holder(kube, kube_namespace, "spillway-0") == "chart-pod-1234"
    assert _holder(kube, kube_namespace, "spillway-1") == "scaler-pod-1234"  # a renewed its other one


def test_a_released_lease_is_taken_at_once_and_a_renewing_holder_keeps_it(
    keepers: tuple[LeaseKeeper, LeaseKeeper, Clock], kube: KubeCluster, kube_namespace: str
) -> None:
    a, b, clock = keepers

    async def run() -> list[bool]:
        await a.assigned(frozenset({3}))
        await a.step()
        await b.assigned(frozenset({3}))
        for _ in range(5):  # 25 s of a renewing every 5 s: b never takes it
            clock.now += 5.0
            await a.step()
            await b.step()
        kept = [a.holds(3, now=clock.now), not b.holds(3, now=clock.now)]
        await a.revoked(frozenset({3}))  # the rebalance took it from a: released
        released = not a.holds(3, now=clock.now)
        await b.step()  # no waiting for the duration
        return [*kept, released, b.holds(3, now=clock.now)]

    assert asyncio.run(run()) == [True, True, True, True]
    assert _holder(kube, kube_namespace, "spillway-3") == "chart-pod-1234"


def test_without_the_role_nothing_is_held_and_the_error_is_logged(
    kube: KubeCluster, kube_namespace: str
) -> None:
    keeper = LeaseKeeper(
        kube.api_client("plain"),
        namespace=kube_namespace,
        prefix="spillway",
        identity="plain-1",
        duration=15.0,
        renew_every=5.0,
        margin=5.0,
        request_timeout=5.0,
    )

    async def run() -> bool:
        await keeper.assigned(frozenset({0}))
        await keeper.step()
        return keeper.holds(0, now=keeper.monotonic())

    with capture_logs() as logs:
        held = asyncio.run(run())
    assert held is False
    failures = [e for e in logs if e["event"] == "lease_call_failed"]
    assert failures
    assert "HTTP 403" in failures[0]["error"]
    assert failures[0]["lease"] == "spillway-0"
