"""The fencing gate as a timeline: what the executor may publish, and what is counted and logged."""

from __future__ import annotations

import asyncio
import dataclasses

from structlog.testing import capture_logs

from scaler.adapters.fence import Fence
from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.fencing import GroupView
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision
from scaler.executor import Executor
from tests.integration_fixtures import WallClock


class Group:
    """The consumer's facts, set by the test: every model on partition 0."""

    def __init__(self) -> None:
        self.generation: int | None = 7
        self.view = GroupView(assigned=True, assigned_generation=7, current_generation=7, heartbeat_at=0.0)

    def partition_of(self, model: str) -> int | None:
        return 0

    def group_view(self, partition: int) -> GroupView:
        return self.view


class Leases:
    identity = "pod-a-1234"
    duration = 15.0
    margin = 5.0

    def __init__(self) -> None:
        self.renewed: float | None = 0.0

    def renewed_at(self, partition: int) -> float | None:
        return self.renewed


def _fence(group: Group, leases: Leases | None, now: list[float], metrics: DaemonMetrics) -> Fence:
    return Fence(
        group=group,
        leases=leases,
        session_timeout=3.0,
        session_margin=0.5,
        identity="pod-a-1234",
        metrics=metrics,
        monotonic=lambda: now[0],
    )


def _fenced(metrics: DaemonMetrics, action: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "scaler_decisions_fenced_total", {"action": action, "reason": reason}
    )
    return value or 0.0


def test_a_pause_fences_every_decision_but_logs_once_per_transition() -> None:
    group, leases, now, metrics = Group(), Leases(), [0.0], DaemonMetrics()
    fence = _fence(group, leases, now, metrics)
    with capture_logs() as logs:
        timeline = [fence.allows("chat", action="publish")]  # t=0: assigned, fresh, Lease held
        now[0] = 7.0  # woke from a 7 s pause: no heartbeat since
        timeline += [fence.allows("chat", action="publish") for _ in range(3)]
        group.view = dataclasses.replace(group.view, heartbeat_at=10.4)  # the broker still knows us
        now[0] = 10.5
        timeline.append(fence.allows("chat", action="actuate"))  # ...but the Lease is 10.5 s old: margin
        leases.renewed = 10.5
        timeline.append(fence.allows("chat", action="actuate"))
        group.view = dataclasses.replace(group.view, current_generation=None)  # then it forgot us
        timeline.append(fence.allows("chat", action="publish"))
    assert timeline == [True, False, False, False, False, True, False]
    assert _fenced(metrics, "publish", "session_expired") == 3
    assert _fenced(metrics, "actuate", "lease_not_held") == 1
    assert _fenced(metrics, "publish", "generation_changed") == 1
    assert [(e["event"], e.get("reason", e.get("was"))) for e in logs] == [
        ("fenced", "session_expired"),
        ("fenced", "lease_not_held"),
        ("fence_lifted", "lease_not_held"),
        ("fenced", "generation_changed"),
    ]


def test_without_leases_only_the_group_decides() -> None:
    group, now, metrics = Group(), [1.0], DaemonMetrics()
    fence = _fence(group, None, now, metrics)
    assert fence.allows("chat", action="publish")
    group.view = dataclasses.replace(group.view, assigned=False)
    assert fence.reason("chat") == "not_assigned"
    assert fence.headers("chat") == [("spillway-member", b"pod-a-1234"), ("spillway-generation", b"7")]


def test_a_decision_made_before_a_pause_is_not_published_after_it() -> None:
    group, now, metrics = Group(), [0.0], DaemonMetrics()
    sink = MemorySink()
    executor = Executor(
        sink=sink, actuators=None, metrics=metrics, clock=WallClock(), gate=_fence(group, None, now, metrics)
    )
    policy = ModelPolicy(name="chat")
    decision = Decision(
        at=0.0,
        replicas=2,
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason="test",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={},
        recent_targets=(),
    )

    async def run() -> None:
        executor.submit(policy=policy, decision=decision, payload={"n": 1})
        await executor.idle()  # published while the session is alive
        executor.submit(policy=policy, decision=decision, payload={"n": 2})
        now[0] = 7.0  # the process is paused before the publishing task runs
        await executor.idle()

    asyncio.run(run())
    assert [payload for _, payload in sink.decisions] == [{"n": 1}]
    assert _fenced(metrics, "publish", "session_expired") == 1
