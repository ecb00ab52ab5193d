"""The sandbox: the real daemon loop on in-memory ports, a synthetic workload in accelerated time."""

from __future__ import annotations

import asyncio

import pytest
from integration_fixtures import fake_plan

from scaler.adapters.memory import VirtualClock, synthetic_rate
from scaler.adapters.sim import SimKubernetes, SimServerless
from scaler.app import build_sandbox_daemon, run_for
from scaler.core.policy import ModelPolicy
from scaler.settings import Settings


def _policy(name: str) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "name": name,
            "behavior": {"interval_seconds": 45},
            "forecast": {"bucket_seconds": 10, "horizon_seconds": 600, "seasonalities_seconds": [3600]},
        }
    )


def test_a_sandbox_run_replays_the_workload_and_decides_on_the_policy_interval() -> None:
    policies = {n: _policy(n) for n in ("alpha", "beta")}
    settings = Settings(http_listen="127.0.0.1:0", burst_check_seconds=0.01)
    daemon, source, sink = build_sandbox_daemon(
        settings=settings, policies=policies, speed=600.0, base_rate=5.0, planner=fake_plan
    )
    code = asyncio.run(run_for(daemon, virtual_seconds=900.0, install_signals=False))
    assert code == 0
    assert source.produced > 0.8 * 2 * 5.0 * 900  # both models, about 5 req/s each
    for model in policies:
        mine = [p for m, p in sink.decisions if m == model]
        ticks = [p for p in mine if p["trigger"] == "tick"]
        # every 45 virtual seconds over 900; fewer if the shared machine stalls the 600x clock
        assert 10 <= len(ticks) <= 21
        assert len({p["at"] for p in ticks}) == len(ticks)
    assert daemon.not_ready() == "shutting down"
    assert sink.letters == []


def test_the_sandbox_checkpoints_on_its_virtual_clock() -> None:
    policies = {n: _policy(n) for n in ("alpha", "beta")}
    settings = Settings(http_listen="127.0.0.1:0", burst_check_seconds=0.01, checkpoint_interval_seconds=120)
    daemon, _, _ = build_sandbox_daemon(
        settings=settings, policies=policies, speed=600.0, base_rate=5.0, planner=fake_plan
    )
    assert asyncio.run(run_for(daemon, virtual_seconds=900.0, install_signals=False)) == 0
    saved = daemon.metrics.registry.get_sample_value("scaler_checkpoints_saved_total") or 0.0
    # every 120 virtual seconds of 900 (1.5 s of wall time), then one or two on stopping: up to 9 of each
    # model (a wall-clock pause would have saved those on stopping only)
    assert 2 * 6 <= saved <= 2 * 9


@pytest.mark.parametrize(
    ("offset", "factor"), [(0.0, 1.0), (779.0, 1.0), (780.0, 4.0), (899.0, 4.0), (900.0, 1.0)]
)
def test_the_synthetic_rate_bursts_for_two_minutes_in_fifteen(offset: float, factor: float) -> None:
    # the daily cycle moves the rate by under 4 % in the first quarter hour
    assert synthetic_rate(offset, base=10.0, start=0.0) == pytest.approx(10.0 * factor, rel=0.04)


def test_the_virtual_clock_refuses_a_non_positive_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        VirtualClock(speed=0)
    with pytest.raises(ValueError, match="max_stall_seconds"):
        VirtualClock(speed=10, max_stall_seconds=0)


@pytest.mark.parametrize(
    ("wall_readings", "virtual"),
    [
        ([0.0, 0.05, 0.1], [0.0, 15.0, 30.0]),  # 300 times the wall clock
        ([0.0, 0.05, 2.05, 2.1], [0.0, 15.0, 45.0, 60.0]),  # a 2 s stall counts as 0.1 s: no 600 s jump
        ([0.0, 0.1, 0.1, 0.1], [0.0, 30.0, 30.0, 30.0]),  # no wall time, no virtual time
    ],
)
def test_the_virtual_clock_runs_speed_times_faster_and_a_stall_does_not_jump(
    wall_readings: list[float], virtual: list[float]
) -> None:
    readings = iter([0.0, *wall_readings])  # the first is read when the clock is made
    clock = VirtualClock(speed=300.0, start=1_000.0, max_stall_seconds=0.1, monotonic=lambda: next(readings))
    assert [clock.now() - 1_000.0 for _ in wall_readings] == pytest.approx(virtual)


def test_a_virtual_sleep_lasts_at_least_what_it_was_asked() -> None:
    clock = VirtualClock(speed=300.0)

    async def run() -> float:
        before = clock.now()
        await clock.sleep(45.0)
        return clock.now() - before

    slept = asyncio.run(run())
    assert slept >= 45.0
    assert slept < 45.0 + 300.0 * 0.5  # and not a stall's worth longer, unless the machine stalled that long


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_sandbox_run_with_actuate_carries_decisions_out_on_the_simulator(dry_run: bool) -> None:
    policies = {"alpha": _policy("alpha")}
    settings = Settings(http_listen="127.0.0.1:0", burst_check_seconds=0.01, actuate=True, dry_run=dry_run)
    daemon, _source, _sink = build_sandbox_daemon(
        settings=settings, policies=policies, speed=600.0, base_rate=30.0, planner=fake_plan
    )
    acts = daemon.runtime.executor.actuators
    assert acts is not None
    assert isinstance(acts.kubernetes, SimKubernetes)
    assert isinstance(acts.serverless, SimServerless)
    code = asyncio.run(run_for(daemon, virtual_seconds=900.0, install_signals=False))
    assert code == 0
    policy = daemon.runtime.policies["alpha"]  # simulated targets: sandbox/alpha, lambda alpha-burst:live
    assert policy.targets is not None
    assert policy.targets.kubernetes is not None
    state = asyncio.run(acts.kubernetes.read(policy.targets.kubernetes, name="alpha"))
    changes = daemon.metrics.registry.get_sample_value(
        "scaler_actuator_changes_total",
        {"model": "alpha", "kind": "serverless", "dry_run": str(dry_run).lower()},
    )
    assert changes is not None
    if dry_run:  # nothing changes, so every decision logs the same change again
        assert changes >= 2
        assert acts.kubernetes.changes == []
        assert acts.serverless.changes == []
        assert state.desired == 0
    else:
        assert changes == 1  # the stand-in planner always asks for 2: once, then idempotent
        assert [c.value for c in acts.serverless.changes] == [2]
        assert state.desired >= 1
        assert state.ready >= 1  # the default 300 s cold start has passed for the first replicas
