"""The simulator behind the actuator ports: lead times in virtual time, read back through the safety layer."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, Capacity, RetryPolicy, TransientError
from scaler.adapters.sim import (
    SimFaults,
    SimKubernetes,
    SimServerless,
    sandbox_actuators,
    with_sandbox_targets,
)
from scaler.core.actuation import Change
from scaler.core.policy import KubernetesTarget, LeadTimes, ModelPolicy
from scaler.core.types import Decision, Observed, Unavailable
from scaler.ports import ServerlessState
from scaler.settings import Settings
from tests.adapters.actuator_fixtures import decision
from tests.clocks import ManualClock

LEADS = LeadTimes(
    cold_start_seconds=300.0, standby_promotion_seconds=15.0, serverless_cold_start_seconds=20.0
)
TARGET = KubernetesTarget(namespace="llm", name="chat", standby_name="chat-standby")


def _policy(**extra: object) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "name": "Chat_8B:v1",
            "replica": {"max_concurrency": 8},
            "bounds": {"min_replicas": 1, "max_replicas": 5, "max_standby": 2, "serverless_quota": 3},
            "lead_times": {"cold_start_seconds": 300, "standby_promotion_seconds": 15},
            **extra,
        },
        strict=False,
    )


def test_new_pods_start_cold_even_with_a_ready_standby_workload() -> None:
    clock = ManualClock()
    kube = SimKubernetes(clock=clock, lead_times={"llm/chat": LEADS})
    asyncio.run(kube.set_replicas(TARGET, name="chat-standby", replicas=2, reason="refill"))
    state = asyncio.run(kube.read(TARGET, name="chat-standby"))
    assert (state.desired, state.ready, state.starting) == (2, 0, 2)
    clock.t += 300.0
    asyncio.run(kube.set_replicas(TARGET, name="chat", replicas=3, reason="burst"))
    clock.t += 15.0
    state = asyncio.run(kube.read(TARGET, name="chat"))
    assert (state.desired, state.ready, state.starting) == (3, 0, 3)  # promotion is a scale-up: all cold
    clock.t += 285.0
    assert asyncio.run(kube.read(TARGET, name="chat")).ready == 3
    asyncio.run(kube.set_replicas(TARGET, name="chat", replicas=1, reason="calm"))
    assert asyncio.run(kube.read(TARGET, name="chat")) == asyncio.run(kube.read(TARGET, name="chat"))
    assert asyncio.run(kube.read(TARGET, name="chat")).desired == 1
    assert [c.value for c in kube.changes] == [2, 3, 1]


def test_serverless_is_provisioned_at_once_warm_after_its_cold_start_and_within_the_quota() -> None:
    clock = ManualClock()
    pol = with_sandbox_targets(_policy())
    assert pol.targets is not None
    target = pol.targets.serverless
    assert target is not None
    aws = SimServerless(clock=clock, lead_times={"lambda/chat-8b-v1-burst:live": LEADS})
    asyncio.run(aws.set_provisioned(target, instances=9, quota=3, max_concurrency=8))
    assert asyncio.run(aws.read(target, max_concurrency=8)) == ServerlessState(provisioned=3, ready=0)
    clock.t += 20.0
    assert asyncio.run(aws.read(target, max_concurrency=8)) == ServerlessState(provisioned=3, ready=3)


def test_an_outage_raises_a_transient_error_until_it_ends() -> None:
    clock = ManualClock()
    faults = SimFaults(clock=clock)
    kube = SimKubernetes(clock=clock, lead_times={}, faults=faults)
    faults.outage("kubernetes", seconds=60.0)
    with pytest.raises(TransientError, match="simulated outage"):
        asyncio.run(kube.read(TARGET, name="chat"))
    clock.t += 60.0
    assert asyncio.run(kube.read(TARGET, name="chat")).desired == 0


def test_sandbox_targets_are_named_after_the_model_and_kept_when_given() -> None:
    pol = with_sandbox_targets(_policy())
    assert pol.targets is not None
    assert pol.targets.kubernetes is not None
    assert (pol.targets.kubernetes.namespace, pol.targets.kubernetes.name) == ("sandbox", "chat-8b-v1")
    assert pol.targets.kubernetes.standby_name == "chat-8b-v1-standby"
    given = _policy(targets={"kubernetes": {"namespace": "llm", "name": "chat"}})
    assert with_sandbox_targets(given) is given


def _observed_from(observed: Observed, capacity: Capacity, off: Unavailable) -> Observed:
    """Return ``observed`` with the counts the simulated cluster read back (as the executor passes them)."""
    changes: dict[str, object] = {"unavailable": off}
    if capacity.replicas is not None:
        changes.update(replicas_ready=capacity.replicas.ready, replicas_starting=capacity.replicas.starting)
    if capacity.standby is not None:
        changes.update(standby_ready=capacity.standby.ready, standby_starting=capacity.standby.starting)
    if capacity.serverless is not None:
        changes["serverless_provisioned"] = capacity.serverless.provisioned
    return dataclasses.replace(observed, **changes)  # type: ignore[arg-type]


def _step(acts: Actuators, pol: ModelPolicy, dec: Decision) -> tuple[Observed, list[Change]]:
    async def run() -> tuple[Observed, list[Change]]:
        observed = Observed(
            replicas_ready=0,
            replicas_starting=0,
            standby_ready=0,
            standby_starting=0,
            serverless_provisioned=0,
        )
        capacity = await acts.read(pol)
        assert isinstance(capacity, Capacity)
        observed = _observed_from(observed, capacity, acts.unavailable(pol.name))
        made = await acts.apply(policy=pol, decision=dec, current=capacity, now=dec.at)
        return observed, made

    return asyncio.run(run())


def _sandbox(clock: ManualClock, **settings: object) -> tuple[ModelPolicy, Actuators, CollectorRegistry]:
    registry = CollectorRegistry()
    chosen = Settings(actuate=True, actuator_failure_threshold=2, **settings)  # type: ignore[arg-type]
    policies, acts = sandbox_actuators(
        actuator=chosen.actuator,
        dry_run=chosen.dry_run,
        policies={"Chat_8B:v1": _policy()},
        clock=clock,
        registry=registry,
    )
    return policies["Chat_8B:v1"], acts, registry


def test_the_safety_layer_clamps_and_is_idempotent_on_the_simulator() -> None:
    clock = ManualClock()
    pol, acts, registry = _sandbox(clock)
    _, made = _step(acts, pol, decision(replicas=9, standby=1, serverless=7, at=clock.t))
    assert {(c.kind, c.desired) for c in made} == {("replicas", 5), ("standby", 1), ("serverless", 3)}
    assert registry.get_sample_value("scaler_actuator_clamped_total", {"model": "Chat_8B:v1"}) == 1
    clock.t += 10.0
    observed, made = _step(acts, pol, decision(replicas=5, standby=1, serverless=3, at=clock.t))
    assert made == []  # same decision: nothing changes
    assert (observed.replicas_ready, observed.replicas_starting, observed.serverless_provisioned) == (0, 5, 3)
    clock.t += 300.0
    observed, _ = _step(acts, pol, decision(replicas=5, standby=1, serverless=3, at=clock.t))
    assert (observed.replicas_ready, observed.replicas_starting, observed.standby_ready) == (5, 0, 1)


def test_dry_run_on_the_simulator_changes_nothing() -> None:
    clock = ManualClock()
    pol, acts, _ = _sandbox(clock, dry_run=True)
    _, made = _step(acts, pol, decision(replicas=3, serverless=2, at=clock.t))
    assert {c.kind for c in made} == {"replicas", "serverless"}
    assert isinstance(acts.kubernetes, SimKubernetes)
    assert acts.kubernetes.changes == []
    assert isinstance(acts.serverless, SimServerless)
    assert acts.serverless.changes == []


def test_a_simulated_outage_is_reported_unavailable_and_recovers() -> None:
    clock = ManualClock()
    pol, acts, registry = _sandbox(clock, actuator_attempts=1)
    assert isinstance(acts.serverless, SimServerless)
    acts.serverless.faults.outage("serverless", seconds=100.0)
    labels = {"model": "Chat_8B:v1", "kind": "serverless"}
    for _ in range(2):
        observed, _ = _step(acts, pol, decision(replicas=1, serverless=2, at=clock.t))
        clock.t += 10.0
    assert observed.unavailable & Unavailable.SERVERLESS
    assert registry.get_sample_value("scaler_capacity_unavailable", labels) == 1
    clock.t += 100.0
    observed, made = _step(acts, pol, decision(replicas=1, serverless=2, at=clock.t))
    assert not observed.unavailable & Unavailable.SERVERLESS
    assert registry.get_sample_value("scaler_capacity_unavailable", labels) == 0
    assert ("serverless", 2) in {(c.kind, c.desired) for c in made}


def test_sagemaker_weights_go_with_the_capacity_on_the_simulator() -> None:
    clock = ManualClock()
    pol = with_sandbox_targets(
        _policy(
            targets={
                "serverless": {
                    "backend": "sagemaker",
                    "endpoint_name": "chat",
                    "variant_name": "burst",
                    "primary_variant": "main",
                }
            }
        )
    )
    aws = SimServerless(clock=clock, lead_times={})
    acts = Actuators(
        kubernetes=None,
        serverless=aws,
        metrics=ActuatorMetrics(CollectorRegistry()),
        dry_run=False,
        retry=RetryPolicy(attempts=1),
    )
    dec = dataclasses.replace(decision(replicas=1, serverless=2, at=clock.t), spill_fraction=0.3)
    _step(acts, pol, dec)
    assert aws.weights == {"sagemaker/chat/burst": {"main": 0.7, "burst": 0.3}}
    assert [c.value for c in aws.changes] == [2]  # capacity and weights in one change
