"""Baselines as timelines: scripted observations in, the replica counts a real autoscaler would pick out."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import queueing
from scaler.core.policy import ModelPolicy
from scaler.sim import baselines
from scaler.sim import predictive_baselines as predictive
from scaler.sim.protocol import Controller, TickObservation
from scaler.sim.workload import RateWorkload, Workload

SLOTS = 64


def _policy(**bounds: int) -> ModelPolicy:
    return ModelPolicy.model_validate({"name": "m", "bounds": {"max_replicas": 16, **bounds}})


def _obs(
    now: float,
    *,
    ready: int = 0,
    starting: int = 0,
    busy: float = 0.0,
    queue: int = 0,
    in_flight: int = 0,
    interval: float = 15.0,
) -> TickObservation:
    return TickObservation(
        now=now,
        interval=interval,
        arrivals=0,
        prompt_tokens=0,
        output_tokens=0,
        replicas_ready=ready,
        replicas_starting=starting,
        standby_ready=0,
        standby_starting=0,
        serverless_provisioned=0,
        serverless_active=0,
        busy_slots=busy,
        slots_per_replica=SLOTS,
        queue_length=queue,
        in_flight=in_flight,
    )


class _Replay:
    """Feed a controller observations where ready replicas follow its own targets at once."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.replicas = 0

    def tick(self, now: float, *, busy_per_replica: float | None = None, load: float | None = None) -> int:
        """Observe at ``now``; ``load`` is total slots of demand (busy capped at capacity, rest queues)."""
        ready = self.replicas
        if load is not None:
            busy = min(load, ready * SLOTS)
            queue = max(0, round(load - busy))
        else:
            busy = (busy_per_replica or 0.0) * ready
            queue = 0
        obs = _obs(
            now,
            ready=ready,
            busy=busy,
            queue=queue,
            in_flight=round(busy),
            interval=self.controller.interval_seconds,
        )
        self.replicas = self.controller.decide(obs).replicas
        return self.replicas


# ---- HPA -------------------------------------------------------------------------------------------


def test_hpa_scales_up_to_target_utilisation_within_its_rate_limit() -> None:
    hpa = baselines.Hpa(policy=_policy())
    run = _Replay(hpa)
    run.replicas = 1
    # 4 replicas' worth of slots busy at a 70 % target wants ceil(4 / 0.7) = 6 replicas;
    # from 1 the scale-up policy allows max(1 + 4, 2 * 1) = 5 per 15 s sync.
    first = hpa.decide(_obs(0.0, ready=1, busy=4 * SLOTS))
    assert first.replicas == 5
    second = hpa.decide(_obs(15.0, ready=5, busy=4 * SLOTS))
    assert second.replicas == 6
    assert not second.serverless_enabled


def test_hpa_ignores_changes_within_its_tolerance() -> None:
    hpa = baselines.Hpa(policy=_policy())
    hpa.decide(_obs(0.0, ready=1, busy=0.7 * 10 * SLOTS))  # start somewhere
    hpa.decide(_obs(15.0, ready=5, busy=0.7 * 10 * SLOTS))
    held = hpa.decide(_obs(30.0, ready=10, busy=0.7 * 10 * SLOTS))
    assert held.replicas == 10
    # 7 % above target is inside the 10 % tolerance: no change
    assert hpa.decide(_obs(45.0, ready=10, busy=0.75 * 10 * SLOTS)).replicas == 10


def test_hpa_waits_out_its_300s_stabilisation_window_before_scaling_down() -> None:
    hpa = baselines.Hpa(policy=_policy())
    run = _Replay(hpa)
    run.replicas = 8
    hpa._core.current = 8  # running at 8 replicas, then the load drops to a quarter
    timeline = {t: run.tick(t, busy_per_replica=0.7 * SLOTS) for t in (0.0, 15.0)}
    assert timeline == {0.0: 8, 15.0: 8}
    run.replicas = 8
    times = np.arange(30.0, 30.0 + 600.0, 15.0)
    counts = [hpa.decide(_obs(t, ready=8, busy=2 * 0.7 * SLOTS)).replicas for t in times]
    down_at = next(t for t, n in zip(times, counts, strict=True) if n < 8)
    # the highest recommendation (8) stays in the window until 300 s after the last high one (t=15)
    assert down_at == pytest.approx(15.0 + 300.0 + 15.0)
    assert counts[-1] == 2


def test_hpa_never_goes_below_one_replica_nor_above_max() -> None:
    hpa = baselines.Hpa(policy=_policy(max_replicas=3))
    assert hpa.decide(_obs(0.0, ready=1, busy=40 * SLOTS)).replicas == 3
    quiet = [hpa.decide(_obs(15.0 * k, ready=3, busy=0.0)).replicas for k in range(1, 40)]
    assert min(quiet) == 1


def test_reactive_hybrid_is_the_hpa_with_serverless_overflow() -> None:
    hybrid = baselines.reactive_hybrid(policy=_policy())
    target = hybrid.decide(_obs(0.0, ready=1, busy=4 * SLOTS))
    assert target.serverless_enabled
    assert target.replicas == 5
    assert hybrid.name == "reactive-hybrid"


# ---- KEDA ------------------------------------------------------------------------------------------


def test_keda_acts_only_at_its_30s_polls_and_activates_on_any_lag() -> None:
    keda = baselines.Keda(policy=_policy())
    assert keda.interval_seconds == 30.0
    assert keda.decide(_obs(0.0)).replicas == 0  # no lag, nothing running: stays at zero
    one = keda.decide(_obs(30.0, queue=1))
    assert one.replicas == 1  # activation: lag > 0 brings the first replica


def test_keda_sizes_replicas_from_lag_per_replica() -> None:
    keda = baselines.Keda(policy=_policy(), lag_threshold=10.0)
    # 35 messages of lag at 10 per replica: ceil(3.5) = 4 (from 0 the HPA allows +4)
    assert keda.decide(_obs(0.0, queue=35)).replicas == 4


def test_keda_scales_to_zero_only_after_its_cooldown() -> None:
    keda = baselines.Keda(policy=_policy())
    keda.decide(_obs(0.0, queue=5))
    counts = {t: keda.decide(_obs(t, ready=1)).replicas for t in np.arange(30.0, 400.0, 30.0)}
    assert counts[270.0] == 1  # 270 s after the last lag: still inside the 300 s cooldown
    assert counts[300.0] == 0


# ---- Knative KPA -----------------------------------------------------------------------------------


def test_kpa_enters_panic_on_a_2x_burst_within_6s_and_holds_its_count() -> None:
    kpa = baselines.KnativeKpa(policy=_policy())
    target = 0.7 * SLOTS
    steady = 2 * target  # two replicas' worth of concurrency
    calm = []
    for t in np.arange(0.0, 120.0, 2.0):
        kpa.decide(_obs(t, ready=2, in_flight=round(steady), interval=2.0))
        calm.append(kpa.panicking)
    burst, panicking = [], []
    for t in (0.0, 2.0, 4.0):
        burst.append(kpa.decide(_obs(120.0 + t, ready=2, in_flight=round(5 * target), interval=2.0)))
        panicking.append(kpa.panicking)
    assert not any(calm)
    assert all(panicking)  # panic from the first tick of the burst, well within the 6 s window
    assert burst[-1].replicas == 5  # the 6 s panic window sees the burst in full
    # the burst ends: in panic mode the count never drops
    after = [
        kpa.decide(_obs(126.0 + t, ready=5, in_flight=round(steady), interval=2.0)) for t in range(0, 40, 2)
    ]
    assert all(a.replicas >= 5 for a in after)


def test_kpa_stable_mode_follows_the_60s_average() -> None:
    kpa = baselines.KnativeKpa(policy=_policy())
    target = 0.7 * SLOTS
    for t in np.arange(0.0, 120.0, 2.0):
        last = kpa.decide(_obs(t, ready=3, in_flight=round(3 * target), interval=2.0))
    assert last.replicas == 3
    assert not kpa.panicking


def test_kpa_scales_to_zero_after_the_grace_period() -> None:
    kpa = baselines.KnativeKpa(policy=_policy())
    kpa.decide(_obs(0.0, ready=0, in_flight=10, interval=2.0))
    counts = [kpa.decide(_obs(t, ready=1, interval=2.0)).replicas for t in np.arange(2.0, 200.0, 2.0)]
    first_zero = 2.0 + 2.0 * counts.index(0)
    # the 60 s stable window must empty first, then 30 s of grace
    assert first_zero >= 60.0 + 30.0 - 2.0


# ---- static and serverless-only --------------------------------------------------------------------


def test_static_peak_sizes_for_the_peak_minute() -> None:
    policy = _policy()
    # 1000 prompt + 200 output tokens: 1/12 + 2/25 = 0.1633 instance-seconds each
    per_request = 1000 / 12_000 + 200 / 2_500
    counts = np.full(600, 1.0)
    counts[300:360] = 30.0  # one minute at 30 req/s
    workload = RateWorkload(name="w", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    assert baselines.peak_instances(workload, policy=policy) == pytest.approx(30 * per_request)
    static = baselines.StaticPeak.for_workload(workload, policy=policy)
    assert static.replicas == int(np.ceil(30 * per_request / 0.8))
    assert {static.decide(_obs(t)).replicas for t in (0.0, 300.0, 1e5)} == {static.replicas}


def test_static_peak_is_bounded_by_max_replicas() -> None:
    counts = np.full(60, 1000.0)
    workload = RateWorkload(name="w", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    static = baselines.StaticPeak.for_workload(workload, policy=_policy(max_replicas=5))
    assert static.replicas == 5


def test_peak_instances_agrees_between_request_and_rate_workloads() -> None:
    rng = np.random.default_rng(1)
    arrivals = np.sort(rng.uniform(0, 600, 3000))
    prompt = np.full(3000, 1000, dtype=np.int64)
    output = np.full(3000, 200, dtype=np.int64)
    req = Workload(name="r", arrivals=arrivals, prompt_tokens=prompt, output_tokens=output, duration=600.0)
    counts = np.bincount(arrivals.astype(np.int64), minlength=600).astype(np.float64)
    rate = RateWorkload(name="r", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    policy = _policy()
    assert baselines.peak_instances(req, policy=policy) == pytest.approx(
        baselines.peak_instances(rate, policy=policy)
    )


def test_serverless_only_never_asks_for_replicas() -> None:
    ctl = baselines.ServerlessOnly()
    target = ctl.decide(_obs(0.0, queue=100))
    assert target.replicas == 0
    assert target.serverless_enabled


def test_every_registered_baseline_builds_and_has_a_unique_name() -> None:
    policy = _policy()
    workload = RateWorkload(name="w", counts=np.ones(60), mean_prompt_tokens=100.0, mean_output_tokens=10.0)
    controllers = [make(policy, workload) for make in baselines.BASELINES.values()]
    assert [c.name for c in controllers] == list(baselines.BASELINES)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(baselines.BASELINES)),
    max_replicas=st.integers(1, 20),
    script=st.lists(
        st.tuples(st.integers(0, 30), st.floats(0, 1), st.integers(0, 3000)), min_size=1, max_size=40
    ),
)
def test_baselines_stay_within_bounds_on_any_observations(
    name: str, max_replicas: int, script: list[tuple[int, float, int]]
) -> None:
    policy = _policy(max_replicas=max_replicas)
    workload = RateWorkload(name="w", counts=np.ones(60), mean_prompt_tokens=100.0, mean_output_tokens=10.0)
    ctl = baselines.BASELINES[name](policy, workload)
    for k, (ready, utilisation, queue) in enumerate(script):
        obs = _obs(
            k * ctl.interval_seconds,
            ready=ready,
            busy=utilisation * ready * SLOTS,
            queue=queue,
            in_flight=round(utilisation * ready * SLOTS),
            interval=ctl.interval_seconds,
        )
        target = ctl.decide(obs)
        assert 0 <= target.replicas <= max_replicas
        assert target.standby == 0


def test_opening_instances_is_the_first_minutes_work() -> None:
    policy = ModelPolicy.model_validate({"name": "m"})  # 1000/12000 + 200/2500 s of work per request
    per_request = 1000 / 12000 + 200 / 2500
    counts = np.concatenate([np.full(60, 3.0), np.full(60, 9.0)])
    work = RateWorkload(name="r", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    assert baselines.opening_instances(work, policy=policy) == pytest.approx(3.0 * per_request)


# ---- Dynamo-planner-like -------------------------------------------------------------------------


def _traffic(
    now: float, *, rate: float, interval: float, prompt: int = 1000, output: int = 200
) -> TickObservation:
    """An observation of ``rate`` req/s over the last ``interval`` seconds with these token sizes."""
    n = round(rate * interval)
    return dataclasses.replace(
        _obs(now, interval=interval), arrivals=n, prompt_tokens=n * prompt, output_tokens=n * output
    )


def test_dynamo_planner_acts_every_180s_and_keeps_one_endpoint_when_idle() -> None:
    planner = predictive.DynamoPlanner(policy=_policy())
    assert planner.interval_seconds == 180.0
    idle = planner.decide(_obs(0.0, interval=180.0))
    assert idle.replicas == 1
    assert not idle.serverless_enabled


def test_dynamo_planner_sizes_the_last_intervals_load_to_the_ttft_target() -> None:
    policy = _policy()
    planner = predictive.DynamoPlanner(policy=policy)
    # 30 req/s of 1000/200 tokens is 30 * (1000/12000 + 200/2500) = 4.9 replicas of work
    n = planner.decide(_traffic(180.0, rate=30.0, interval=180.0)).replicas
    assert queueing.max_rate(n, policy=policy, mean_prompt=1000, mean_output=200) >= 30.0
    assert queueing.max_rate(n - 1, policy=policy, mean_prompt=1000, mean_output=200) < 30.0
    assert n >= 5
    # longer prompts at the same rate need more replicas
    longer = planner.decide(_traffic(360.0, rate=30.0, interval=180.0, prompt=4000)).replicas
    assert longer > n


def test_dynamo_planners_constant_predictor_follows_the_last_interval_without_hysteresis() -> None:
    planner = predictive.DynamoPlanner(policy=_policy())
    high = planner.decide(_traffic(180.0, rate=60.0, interval=180.0)).replicas
    low = planner.decide(_traffic(360.0, rate=6.0, interval=180.0)).replicas
    assert high > low >= 1  # no scale-down delay: the next interval's forecast is the last one's load


# ---- AWS-style predictive scaling ----------------------------------------------------------------


def _aws_day(
    ctl: predictive.AwsPredictive, *, day: int, peak_hour: int, peak_rate: float, base_rate: float
) -> list[int]:
    """Feed one day of minute observations (peak at ``peak_hour``), replicas following the target."""
    out = []
    replicas = 1
    for minute in range(24 * 60):
        now = day * 86_400.0 + minute * 60.0
        rate = peak_rate if int(minute // 60) == peak_hour else base_rate
        work_replicas = rate * (1000 / 12_000 + 200 / 2500)
        obs = dataclasses.replace(
            _traffic(now, rate=rate, interval=60.0), replicas_ready=replicas,
            busy_slots=min(work_replicas, replicas) * SLOTS,
        )  # fmt: skip
        replicas = ctl.decide(obs).replicas
        out.append(replicas)
    return out


def test_aws_predictive_needs_a_day_of_history_then_scales_ahead_of_the_daily_peak() -> None:
    ctl = predictive.AwsPredictive(policy=_policy())
    first = _aws_day(ctl, day=0, peak_hour=10, peak_rate=40.0, base_rate=6.0)
    assert ctl.forecast(24 + 10) is None  # no forecast before 24 hours of history
    # on day one only target tracking acts: the peak is met after it starts, not before
    assert first[10 * 60 - 5] == first[9 * 60]
    second = _aws_day(ctl, day=1, peak_hour=10, peak_rate=40.0, base_rate=6.0)
    peak = ctl.forecast(48 + 10)  # the forecast covers the next 48 hours: tomorrow's peak too
    assert peak is not None
    # 40 req/s is 6.53 replicas of work; over the 70 % target: 10 replicas
    assert peak == math.ceil(40.0 * (1000 / 12_000 + 200 / 2500) / 0.7 - 1e-9)
    # SchedulingBufferTime 300 s: the peak hour's capacity is requested at 9:55, not 10:00
    assert second[10 * 60 - 5] >= peak
    assert second[10 * 60 - 6] < peak


def test_aws_predictive_never_scales_in_on_a_forecast_and_honours_max_capacity() -> None:
    ctl = predictive.AwsPredictive(policy=_policy(max_replicas=6))
    _aws_day(ctl, day=0, peak_hour=10, peak_rate=40.0, base_rate=6.0)
    second = _aws_day(ctl, day=1, peak_hour=10, peak_rate=40.0, base_rate=6.0)
    assert max(second) == 6  # the forecast wants 10: HonorMaxCapacity keeps the group at its maximum
    # after the peak, capacity leaves only through target tracking's 300 s scale-in cooldown
    assert second[11 * 60 + 2] == 6
    assert second[13 * 60] < 6
