"""Per-request cluster model: conservation, billing, cold starts, standby, drains, serverless keep-alive."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.core.policy import Bounds, LeadTimes, ModelPolicy, Prices, Replica, Slo
from scaler.sim import kernels
from scaler.sim.cluster import GIVE_UP_SECONDS, KEEPALIVE_SECONDS, RequestCluster
from scaler.sim.engine import simulate
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.workload import Workload


@dataclasses.dataclass
class Scripted:
    """Returns the last scripted target whose time has come (``(time, target)`` pairs, sorted)."""

    script: list[tuple[float, CapacityTarget]]
    name: str = "scripted"
    interval_seconds: float = 5.0

    def decide(self, obs: TickObservation) -> CapacityTarget:
        current = self.script[0][1]
        for at, target in self.script:
            if at <= obs.now:
                current = target
        return current


def fixed(replicas: int, *, serverless: bool = False, standby: int = 0, provisioned: int = 0) -> Scripted:
    target = CapacityTarget(
        replicas=replicas, standby=standby, serverless_enabled=serverless, serverless_provisioned=provisioned
    )
    return Scripted([(0.0, target)])


def make_policy(
    *,
    concurrency: int = 1,
    cold: float = 30.0,
    promotion: float = 5.0,
    sv_cold: float = 10.0,
    min_replicas: int = 0,
    quota: int = 4,
) -> ModelPolicy:
    """A policy with round numbers: one slot per instance, a request of P=1000, O=100 holds 2 s."""
    return ModelPolicy(
        name="m",
        slo=Slo(ttft_seconds=2.0, attainment=0.9),
        replica=Replica(
            prefill_tokens_per_second=1000.0, decode_tokens_per_second=100.0, max_concurrency=concurrency
        ),
        lead_times=LeadTimes(
            cold_start_seconds=cold,
            standby_promotion_seconds=promotion,
            serverless_cold_start_seconds=sv_cold,
        ),
        prices=Prices(
            replica_per_hour=3.6,  # 0.001 per second
            serverless_per_gpu_second=0.01,
            serverless_per_million_tokens=1.0,
            serverless_provisioned_per_hour=36.0,  # 0.01 per second
        ),
        bounds=Bounds(min_replicas=min_replicas, max_replicas=50, serverless_quota=quota),
    )


def workload(arrivals: list[float], *, duration: float, prompt: int = 1000, output: int = 100) -> Workload:
    n = len(arrivals)
    return Workload(
        name="w",
        arrivals=np.asarray(arrivals, dtype=np.float64),
        prompt_tokens=np.full(n, prompt, dtype=np.int64),
        output_tokens=np.full(n, output, dtype=np.int64),
        duration=duration,
    )


def run_cluster(w: Workload, ctl: Scripted, policy: ModelPolicy) -> RequestCluster:
    """Drive a RequestCluster tick by tick like the engine does and return it (finished)."""
    cluster = RequestCluster(w, policy=policy)
    now = 0.0
    while now < w.duration:
        cluster.apply(ctl.decide(cluster.observe(now=now, interval=ctl.interval_seconds)), now=now)
        now = min(now + ctl.interval_seconds, w.duration)
        cluster.advance(until=now)
    cluster.finish(timeline_step=60.0)
    return cluster


def starts_and_kinds(cluster: RequestCluster) -> tuple[np.ndarray, np.ndarray]:
    return cluster._out_start, cluster._out_kind  # the per-request record the summary is built from


def test_billing_matches_hand_computation() -> None:
    # two warm replicas for 10 minutes; three requests at t=1, one slot each: the third spills to serverless
    policy = make_policy(min_replicas=2, sv_cold=0.0)
    result = simulate(workload([1.0, 1.0, 1.0], duration=600.0), fixed(2, serverless=True), policy=policy)
    cost = result.summary.cost
    assert cost.replicas == pytest.approx(2 * 600 * 0.001)
    assert cost.serverless_busy == pytest.approx(0.01 * 2.0)  # S = 1000/1000 + 100/100 = 2 s
    assert cost.serverless_tokens == pytest.approx(1100 / 1e6 * 1.0)
    assert cost.standby == 0.0
    assert cost.serverless_provisioned == 0.0
    assert cost.total == pytest.approx(1.2 + 0.02 + 0.0011)
    assert (result.summary.served_kubernetes, result.summary.served_serverless) == (2, 1)


def test_provisioned_serverless_billed_per_hour_whether_used_or_not() -> None:
    policy = make_policy(sv_cold=0.0)
    result = simulate(workload([], duration=100.0), fixed(0, provisioned=2), policy=policy)
    assert result.summary.cost.serverless_provisioned == pytest.approx(2 * 100 * 0.01)
    assert result.summary.cost.serverless_busy == 0.0


@pytest.mark.parametrize(
    ("serverless", "expected_kind"), [(False, kernels.KUBERNETES), (True, kernels.SERVERLESS)]
)
def test_replica_never_serves_before_its_cold_start(serverless: bool, expected_kind: int) -> None:
    # target 1 replica from t=0, cold start 30 s: the early requests wait for it or go to serverless
    arrivals = [0.0, 1.0, 2.0, 10.0]
    cluster = run_cluster(
        workload(arrivals, duration=120.0), fixed(1, serverless=serverless), make_policy(concurrency=4)
    )
    start, kind = starts_and_kinds(cluster)
    assert np.all(kind == expected_kind)
    if not serverless:
        assert np.all(start >= 30.0)
    served_by_replica = kind == kernels.KUBERNETES
    assert np.all(start[served_by_replica] >= 30.0)


def test_standby_promotion_is_faster_than_cold_start() -> None:
    # a request at t=201 finds no replica; the target goes 0 -> 1 at t=200
    policy = make_policy(cold=100.0, promotion=5.0)
    w = workload([201.0], duration=400.0)
    with_standby = Scripted(
        [(0.0, CapacityTarget(replicas=0, standby=1)), (200.0, CapacityTarget(replicas=1, standby=0))]
    )
    without = Scripted([(0.0, CapacityTarget(replicas=0)), (200.0, CapacityTarget(replicas=1))])
    start_promoted = starts_and_kinds(run_cluster(w, with_standby, policy))[0][0]
    fast = simulate(w, with_standby, policy=policy).summary
    slow = simulate(w, without, policy=policy).summary
    assert start_promoted == pytest.approx(205.0)
    assert fast.dropped == 0
    assert slow.dropped == 1  # a cold start (ready at 300) is longer than the give-up time
    assert fast.cost.standby == pytest.approx(200 * 0.001)


def test_drained_replica_stops_billing_when_its_requests_end() -> None:
    # one warm replica and a request holding it for 100 s from t=5; the target drops to 0 at t=10
    policy = make_policy(min_replicas=1)
    w = workload([5.0], duration=300.0, prompt=0, output=10_000)  # S = 10000/100 = 100 s
    result = simulate(w, Scripted([(0.0, CapacityTarget(replicas=1)), (10.0, CapacityTarget(replicas=0))]),
                      policy=policy)  # fmt: skip
    assert result.summary.cost.replicas == pytest.approx(105 * 0.001)  # billed until drained at t=105
    idle = simulate(workload([], duration=300.0), Scripted([(0.0, CapacityTarget(replicas=1)),
                    (10.0, CapacityTarget(replicas=0))]), policy=policy)  # fmt: skip
    assert idle.summary.cost.replicas == pytest.approx(10 * 0.001)


def test_cancelled_starting_replica_is_billed_only_until_cancelled() -> None:
    policy = make_policy(cold=300.0)
    ctl = Scripted([(0.0, CapacityTarget(replicas=1)), (50.0, CapacityTarget(replicas=0))])
    result = simulate(workload([], duration=400.0), ctl, policy=policy)
    assert result.summary.cost.replicas == pytest.approx(50 * 0.001)


def test_scale_down_cancels_starting_replicas_before_ready_ones() -> None:
    # 1 warm replica; target 2 at t=0 (one starts, ready at 30), target 1 at t=10: the starting one goes
    policy = make_policy(min_replicas=1, cold=30.0)
    ctl = Scripted([(0.0, CapacityTarget(replicas=2)), (10.0, CapacityTarget(replicas=1))])
    result = simulate(workload([20.0], duration=100.0), ctl, policy=policy)
    assert result.summary.cost.replicas == pytest.approx(100 * 0.001 + 10 * 0.001)
    assert result.summary.served_kubernetes == 1
    assert result.summary.wait_p50 == 0.0  # the ready replica stayed and served at once


def test_serverless_cold_start_and_keep_alive_show_in_ttft() -> None:
    # serverless only, cold start 10 s, requests of 2 s: t=0 starts an instance (ready at 10), t=20 finds
    # it warm, so does a request just inside the keep-alive after that one ended; later ones start cold
    policy = make_policy(sv_cold=10.0)
    inside = 22.0 + KEEPALIVE_SECONDS - 1.0
    outside = inside + 2.0 + KEEPALIVE_SECONDS + 1.0
    arrivals = [0.0, 20.0, inside, outside]
    cluster = run_cluster(workload(arrivals, duration=300.0), fixed(0, serverless=True), policy)
    start, kind = starts_and_kinds(cluster)
    assert np.all(kind == kernels.SERVERLESS)
    assert start - np.array(arrivals) == pytest.approx([10.0, 0.0, 0.0, 10.0])
    summary = simulate(workload(arrivals, duration=300.0), fixed(0, serverless=True), policy=policy).summary
    assert summary.ttft_p99 == pytest.approx(10.0 + 1.0, rel=0.01)  # cold start + prefill of 1 s
    assert summary.slo_attainment == pytest.approx(0.5)  # the two cold starts miss the 2 s TTFT


def test_serverless_quota_sends_overflow_to_the_queue() -> None:
    # quota 1, one slot each: the second simultaneous request has nowhere to go and gives up
    policy = make_policy(quota=1, sv_cold=0.0)
    result = simulate(workload([1.0, 1.0], duration=200.0), fixed(0, serverless=True), policy=policy)
    assert result.summary.served_serverless == 1
    assert result.summary.dropped == 1
    assert result.summary.slo_attainment == pytest.approx(0.5)


def test_queued_request_waits_fifo_and_gives_up_after_the_limit() -> None:
    # one warm replica, one slot, requests of 2 s: a burst of 40 at t=0 queues; those that would start
    # after GIVE_UP_SECONDS are dropped
    policy = make_policy(min_replicas=1)
    cluster = run_cluster(workload([0.0] * 40, duration=200.0), fixed(1), policy)
    start, kind = starts_and_kinds(cluster)
    served = kind == kernels.KUBERNETES
    assert np.all(np.diff(start[served]) == pytest.approx(2.0))  # back to back, in arrival order
    assert int(served.sum()) == int(GIVE_UP_SECONDS / 2.0) + 1
    assert np.all(kind[~served] == kernels.DROPPED)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Workload, Scripted, ModelPolicy]:
    n = draw(st.integers(0, 60))
    arrivals = sorted(draw(st.lists(st.floats(0.0, 299.0), min_size=n, max_size=n)))
    prompt = draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    steps = draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 2), st.booleans()),
            min_size=1,
            max_size=6,
        )
    )
    script = [
        (30.0 * i, CapacityTarget(replicas=r, standby=s, serverless_provisioned=p, serverless_enabled=e))
        for i, (r, s, p, e) in enumerate(steps)
    ]
    policy = make_policy(
        concurrency=draw(st.integers(1, 4)),
        cold=draw(st.sampled_from([0.0, 20.0, 60.0])),
        sv_cold=draw(st.sampled_from([0.0, 10.0])),
        min_replicas=draw(st.integers(0, 2)),
        quota=draw(st.integers(0, 3)),
    )
    w = Workload(
        name="h",
        arrivals=np.asarray(arrivals, dtype=np.float64),
        prompt_tokens=np.asarray(prompt, dtype=np.int64),
        output_tokens=np.asarray(output, dtype=np.int64),
        duration=300.0,
    )
    return w, Scripted(script, interval_seconds=draw(st.sampled_from([1.0, 7.0, 30.0]))), policy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_is_served_once_or_dropped(case: tuple[Workload, Scripted, ModelPolicy]) -> None:
    w, ctl, policy = case
    cluster = run_cluster(w, ctl, policy)
    start, kind = starts_and_kinds(cluster)
    assert set(np.unique(kind)) <= {kernels.KUBERNETES, kernels.SERVERLESS, kernels.DROPPED}
    assert np.all(start >= w.arrivals - 1e-9)
    dropped = kind == kernels.DROPPED
    assert np.all(start[dropped] == pytest.approx(w.arrivals[dropped] + GIVE_UP_SECONDS))
    summary = simulate(w, ctl, policy=policy).summary
    assert summary.served_kubernetes + summary.served_serverless + summary.dropped == w.requests
    assert 0.0 <= summary.slo_attainment <= 1.0
    assert summary.cost.total >= 0.0
    # requests on replicas never outnumber the replica slots that exist
    c = policy.replica.max_concurrency
    served_k = kind == kernels.KUBERNETES
    hold = c * (w.prompt_tokens / 1000.0 + w.output_tokens / 100.0)
    events = sorted(
        [(s, 1) for s in start[served_k]]
        + [(s + h, -1) for s, h in zip(start[served_k], hold[served_k], strict=True)],
        key=lambda e: (e[0], e[1]),
    )
    busy, peak = 0, 0
    for _, delta in events:
        busy += delta
        peak = max(peak, busy)
    assert peak <= cluster.fleet.id_capacity * c  # replicas ever created, times their slots


def test_timeline_shows_a_serverless_instance_for_its_cold_start_work_and_keep_alive() -> None:
    # one request at t=0: the instance starts at 0, serves 10..12, stays warm until 12 + keep-alive
    policy = make_policy(sv_cold=10.0)
    result = simulate(workload([0.0], duration=180.0), fixed(0, serverless=True), policy=policy)
    alive_until = 12.0 + KEEPALIVE_SECONDS
    expected = [1.0, (alive_until - 60.0) / 60.0, 0.0]
    assert result.timeline.serverless_instances == pytest.approx(expected)
    assert result.timeline.slo_misses == pytest.approx([1.0, 0.0, 0.0])  # its TTFT of 11 s missed 2 s
