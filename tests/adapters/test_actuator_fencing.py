"""The fencing gate inside the actuators' retry loop: a retry that sleeps through a pause writes nothing."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.sim import SimFaults, SimKubernetes
from scaler.core.policy import KubernetesTarget
from tests.adapters.actuator_fixtures import decision, policy
from tests.clocks import ManualClock

TARGET = KubernetesTarget(namespace="llm", name="chat")


@pytest.mark.parametrize(("answers", "written"), [([True, True], [1, 3]), ([True, False], [1])])
def test_every_write_attempt_asks_the_gate(answers: list[bool], written: list[int]) -> None:
    clock = ManualClock()
    faults = SimFaults(clock=clock)
    kube = SimKubernetes(clock=clock, lead_times={}, faults=faults)
    registry = CollectorRegistry()
    actuators = Actuators(
        kubernetes=kube,
        serverless=None,
        metrics=ActuatorMetrics(registry),
        dry_run=False,
        retry=RetryPolicy(attempts=4, base_seconds=1.0, cap_seconds=1.0, timeout_seconds=5.0),
        sleep=clock.sleep,
    )
    asked: list[str] = []

    def gate(model: str) -> bool:
        asked.append(model)
        return answers[min(len(asked), len(answers)) - 1]

    actuators.gate = gate
    pol = policy(kubernetes={"namespace": "llm", "name": "chat"})

    async def run() -> None:
        await kube.set_replicas(TARGET, name="chat", replicas=1, reason="start")
        current = await actuators.read(pol)
        faults.outage("kubernetes", seconds=0.1)  # the first attempt fails, the retry sleeps past it
        await actuators.apply(policy=pol, decision=decision(replicas=3), current=current, now=clock.t)

    asyncio.run(run())
    assert [c.value for c in kube.changes] == written
    assert asked == ["chat", "chat"]  # before the first attempt and before the retry
    failures = registry.get_sample_value(
        "scaler_actuator_failures_total", {"kind": "replicas", "target": "Deployment/llm/chat"}
    )
    assert not failures  # a refused write is not an API failure
