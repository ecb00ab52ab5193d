"""The lead-time learner: table tests of what each observation does, property tests of its bounds."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.control import checkpoint
from scaler.control.controller import ModelController, ReadBack
from scaler.control.leadtime import (
    PENDING_EXPIRY_SECONDS,
    WINDOW,
    ColdStart,
    LeadTimeLearner,
)
from scaler.core.events import MetricEvent
from scaler.core.plan import plan
from scaler.core.policy import LeadTimes, ModelPolicy
from scaler.forecast.models import DemandForecaster

NOW = 1_750_000_000.0
LEAD = LeadTimes()  # 300 s prior, floor 75 s, ceiling 1200 s, p90, 3 observations


def _pod(key: str, started: float, ready: float | None) -> ColdStart:
    return ColdStart(key=key, started_at=started, ready_at=ready)


def _learn(durations: list[float], lead: LeadTimes = LEAD) -> LeadTimeLearner:
    """Return a learner that saw one pod per duration, each watched from creation to Ready."""
    learner = LeadTimeLearner()
    for i, seconds in enumerate(durations):
        start = NOW - 1000.0 + i
        learner.observe(_pod(f"p{i}", start, None), lead=lead, now=start + 1)
        learner.observe(_pod(f"p{i}", start, start + seconds), lead=lead, now=start + seconds)
    return learner


@pytest.mark.parametrize(
    ("durations", "expected", "source"),
    [
        ([], 300.0, "configured"),  # no observation: the policy's value
        ([120.0, 130.0], 300.0, "configured"),  # fewer than min_observations
        ([120.0, 130.0, 140.0], 140.0, "learned"),  # p90 of three is the largest
        ([100.0] * 9 + [400.0], 100.0, "learned"),  # p90 of ten: the 9th smallest
        ([100.0] * 8 + [400.0, 410.0], 400.0, "learned"),
        ([10.0, 12.0, 11.0], 75.0, "learned"),  # clamped up to the floor (300 / 4)
        ([5000.0, 6000.0, 7000.0], 1200.0, "learned"),  # clamped down to the ceiling (4 x 300)
    ],
)
def test_the_planner_leads_by_the_clamped_p90_of_what_was_observed(
    durations: list[float], expected: float, source: str
) -> None:
    estimate = _learn(durations).estimate(LEAD, "replica", now=NOW)
    assert (estimate.seconds, estimate.source) == (expected, source)


def test_learning_off_uses_the_configured_value_whatever_was_seen() -> None:
    off = LeadTimes(learn=False)
    assert _learn([100.0] * 10, off).estimate(off, "replica", now=NOW).seconds == 300.0


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (_pod("neg", NOW - 10.0, NOW - 20.0), "refused"),  # Ready before created
        (_pod("future", NOW + 3600.0, None), "refused"),  # created in the future: clock skew
        (_pod("future-ready", NOW - 10.0, NOW + 3600.0), "refused"),
        (_pod("nan", math.nan, None), "refused"),
        (_pod("inf", NOW - 10.0, math.inf), "refused"),
        (_pod("old", NOW - 86_400.0, NOW - 86_000.0), "ignored"),  # Ready before we watched
        (_pod("flap", NOW - 86_400.0, NOW - 5.0), "ignored"),  # a Ready flap of an old pod
        (_pod("recent", NOW - 200.0, NOW - 10.0), "counted"),  # started and Ready between two reads
        (_pod("starting", NOW - 10.0, None), "pending"),
    ],
)
def test_each_observation_is_counted_refused_or_ignored(start: ColdStart, expected: str) -> None:
    learner = LeadTimeLearner()
    assert learner.observe(start, lead=LEAD, now=NOW) == expected
    assert learner.refused["replica"] == (1 if expected == "refused" else 0)


def test_each_pod_is_counted_once_and_kubernetes_replaces_what_events_said() -> None:
    learner = LeadTimeLearner()
    lead = LeadTimes(min_observations=1)
    learner.observe_metric(replica="pod-a", ts=NOW + 60.0, ready=False, lead=lead, now=NOW + 60.0)
    assert learner.observe_metric(replica="pod-a", ts=NOW + 200.0, ready=True, lead=lead, now=NOW + 200) == (
        "counted"
    )
    assert learner.estimate(lead, "replica", now=NOW + 200).seconds == 140.0  # first metric -> ready
    replaced = learner.observe(_pod("pod-a", NOW, NOW + 200.0), lead=lead, now=NOW + 210.0)
    assert replaced == "replaced"
    assert learner.estimate(lead, "replica", now=NOW + 210).seconds == 200.0  # creation -> Ready
    for _ in range(3):  # read again and again: still one observation
        assert learner.observe(_pod("pod-a", NOW, NOW + 200.0), lead=lead, now=NOW + 220.0) == "seen"
    assert learner.estimate(lead, "replica", now=NOW + 220).observations == 1


def test_a_new_pod_under_an_old_name_is_a_new_observation() -> None:
    learner = LeadTimeLearner()
    first = ColdStart(key="chat-0", uid="a", started_at=NOW, ready_at=None)
    learner.observe(first, lead=LEAD, now=NOW + 1)
    ready = ColdStart(key="chat-0", uid="a", started_at=NOW, ready_at=NOW + 100)
    learner.observe(ready, lead=LEAD, now=NOW + 100)
    again = ColdStart(key="chat-0", uid="b", started_at=NOW + 500, ready_at=None)
    assert learner.observe(again, lead=LEAD, now=NOW + 501) == "pending"
    ready = dataclasses.replace(again, ready_at=NOW + 700)
    assert learner.observe(ready, lead=LEAD, now=NOW + 701) == "counted"
    estimate = learner.estimate(LEAD, "replica", now=NOW + 701)
    assert (estimate.observations, estimate.pending) == (1, 0)  # the old one replaced by the new pod's 200 s


def test_a_pod_that_never_becomes_ready_raises_the_lead_time_and_never_lowers_it() -> None:
    learner = _learn([100.0, 110.0, 120.0])
    assert learner.estimate(LEAD, "replica", now=NOW).seconds == 120.0
    stuck = NOW + 10.0
    learner.observe(_pod("stuck", stuck, None), lead=LEAD, now=stuck)
    # young: starting pods say nothing yet
    assert learner.estimate(LEAD, "replica", now=stuck + 60.0).seconds == 120.0
    # older than the estimate (still read as not Ready): a censored observation of at least its age
    learner.observe(_pod("stuck", stuck, None), lead=LEAD, now=stuck + 450.0)
    assert learner.estimate(LEAD, "replica", now=stuck + 500.0).seconds == 500.0
    learner.observe(_pod("stuck", stuck, None), lead=LEAD, now=stuck + 4950.0)
    assert learner.estimate(LEAD, "replica", now=stuck + 5000.0).seconds == 1200.0  # ceiling
    # no longer reported: it stops ageing at its last sighting
    assert learner.estimate(LEAD, "replica", now=stuck + 4950.0 + 3600.0).seconds == 1200.0
    # last read at 500 s, then gone from the reads: a censored observation of the age it was last seen at
    learner.observe(_pod("stuck", stuck, None), lead=LEAD, now=stuck + 500.0)
    learner.observe_all((), lead=LEAD, now=stuck + 500.0 + PENDING_EXPIRY_SECONDS + 1)
    estimate = learner.estimate(LEAD, "replica", now=stuck + 10_000.0)
    assert (estimate.censored, estimate.pending, estimate.seconds) == (1, 0, 500.0)


def test_a_pod_stuck_before_enough_observations_raises_the_configured_value() -> None:
    learner = LeadTimeLearner()
    learner.observe(_pod("stuck", NOW, None), lead=LEAD, now=NOW)
    assert learner.estimate(LEAD, "replica", now=NOW + 100.0).seconds == 300.0
    learner.observe(_pod("stuck", NOW, None), lead=LEAD, now=NOW + 400.0)
    assert learner.estimate(LEAD, "replica", now=NOW + 450.0).seconds == 450.0
    # a pod whose metrics stopped (deleted while starting) stops ageing: 400 s, not 10,000 s
    assert learner.estimate(LEAD, "replica", now=NOW + 10_000.0).seconds == 400.0


def test_a_cancelled_start_says_nothing() -> None:
    learner = _learn([200.0, 210.0, 220.0])
    learner.observe(_pod("cancelled", NOW, None), lead=LEAD, now=NOW + 30)
    learner.observe_all((), lead=LEAD, now=NOW + 30 + PENDING_EXPIRY_SECONDS + 1)
    estimate = learner.estimate(LEAD, "replica", now=NOW + 2000)
    assert (estimate.observations, estimate.pending, estimate.seconds) == (3, 0, 220.0)


def test_the_window_is_bounded_and_follows_the_latest_starts() -> None:
    learner = _learn([600.0] * WINDOW + [150.0] * WINDOW)
    estimate = learner.estimate(LEAD, "replica", now=NOW)
    assert (estimate.observations, estimate.seconds) == (WINDOW, 150.0)


def test_serverless_warm_ups_learn_apart_from_replica_cold_starts() -> None:
    learner = _learn([200.0] * 5)
    for i in range(5):
        start = ColdStart(
            key=f"sv{i}", kind="serverless", started_at=NOW, ready_at=NOW + 40.0, source="backend"
        )
        learner.observe(start, lead=LEAD, now=NOW + 41.0)
    assert learner.estimate(LEAD, "serverless", now=NOW + 41).seconds == 40.0
    assert learner.estimate(LEAD, "replica", now=NOW + 41).seconds == 200.0


SLOW = LeadTimes(serverless_cold_start_seconds=60.0)  # serverless bounds: 15 s .. 240 s


def _warm_ups(timeline: list[tuple[float, int, int]], lead: LeadTimes = SLOW) -> LeadTimeLearner:
    """Return a learner that read (seconds after NOW, provisioned, ready) of a serverless target."""
    learner = LeadTimeLearner()
    for offset, provisioned, ready in timeline:
        at = NOW + offset
        learner.observe_provisioned(provisioned=provisioned, ready=ready, at=at, lead=lead, now=at + 15.0)
    return learner


@pytest.mark.parametrize(
    ("timeline", "observations", "seconds"),
    [
        ([(0, 0, 0), (15, 0, 0)], 0, 60.0),  # nothing asked for: nothing to time
        ([(0, 2, 0), (15, 2, 0), (30, 2, 1), (45, 2, 2)], 1, 60.0),  # one warm-up (45 s): prior until 3
        # three warm-ups of 90 s, 120 s and 90 s: their p90
        ([(0, 2, 0), (90, 2, 2), (200, 4, 2), (320, 4, 4), (400, 5, 4), (490, 5, 5)], 3, 120.0),
        # asked for less before warm (a cancelled warm-up says nothing), then three of 30 s
        (
            [
                *[(0, 3, 0), (15, 0, 0)],  # cancelled
                *[(30, 1, 0), (60, 1, 1), (90, 2, 1), (120, 2, 2), (150, 3, 2), (180, 3, 3)],
            ],
            3,
            30.0,
        ),
        # three of 1 s: held at the floor
        ([(0, 1, 0), (1, 1, 1), (10, 2, 1), (11, 2, 2), (20, 3, 2), (21, 3, 3)], 3, 15.0),
    ],
)
def test_serverless_warm_ups_are_timed_from_the_backends_read_back(
    timeline: list[tuple[float, int, int]], observations: int, seconds: float
) -> None:
    estimate = _warm_ups(timeline).estimate(SLOW, "serverless", now=NOW + 1000)
    assert (estimate.observations, estimate.seconds) == (observations, seconds)
    assert _warm_ups(timeline).estimate(SLOW, "replica", now=NOW + 1000).observations == 0


def test_a_serverless_warm_up_that_never_ends_raises_the_lead_and_is_held_at_the_ceiling() -> None:
    learner = _warm_ups([(0, 1, 0), (1, 1, 1), (10, 2, 1), (11, 2, 2), (20, 3, 2), (21, 3, 3)])
    stuck = [(30.0 + 15 * i, 4, 3) for i in range(60)]  # 15 minutes with one instance never warm
    for offset, provisioned, ready in stuck:
        at = NOW + offset
        learner.observe_provisioned(provisioned=provisioned, ready=ready, at=at, lead=SLOW, now=at)
    estimate = learner.estimate(SLOW, "serverless", now=NOW + 915)
    assert (estimate.pending, estimate.seconds) == (1, 240.0)  # its age, within the ceiling


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-1e5, 1e5, allow_nan=False),  # start offset
            st.one_of(st.none(), st.floats(-1e5, 1e5, allow_nan=False)),  # ready offset (may precede start)
            st.floats(0, 1e5, allow_nan=False),  # when it is read
        ),
        max_size=40,
    ),
    st.floats(0, 2e5, allow_nan=False),
)
def test_no_observation_takes_a_lead_time_outside_floor_and_ceiling(
    rows: list[tuple[float, float | None, float]], later: float
) -> None:
    learner = LeadTimeLearner()
    now = NOW
    for i, (start, ready, read) in enumerate(rows):
        now = max(now, NOW + read)
        pod = _pod(f"p{i % 7}", NOW + start, None if ready is None else NOW + ready)
        learner.observe_all((pod,), lead=LEAD, now=now)
        estimate = learner.estimate(LEAD, "replica", now=now)
        assert 75.0 <= estimate.seconds <= 1200.0
    assert 75.0 <= learner.estimate(LEAD, "replica", now=now + later).seconds <= 1200.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(75.0, 1200.0), min_size=3, max_size=30), st.floats(0.0, 5000.0))
def test_a_pending_pod_never_shrinks_the_lead_time(durations: list[float], age: float) -> None:
    learner = _learn(durations)
    before = learner.estimate(LEAD, "replica", now=NOW).seconds
    learner.observe(_pod("slow", NOW, None), lead=LEAD, now=NOW)
    assert learner.estimate(LEAD, "replica", now=NOW + age).seconds >= before


def test_the_learner_survives_a_checkpoint_and_old_checkpoints_still_restore() -> None:
    policy = ModelPolicy.model_validate({"name": "m", "forecast": {"bucket_seconds": 10}})
    forecaster = DemandForecaster.from_policy(policy)
    ctl = ModelController(policy=policy, forecaster=forecaster, planner=plan, now=NOW)
    ctl.ingest_metric(
        MetricEvent(model="m", ts=NOW, replica="r", waiting=0, running=0, kv_cache_usage=0.0, ready=False),
        now=NOW,
    )
    pods = tuple(_pod(f"p{i}", NOW - 400.0, NOW - 200.0 + i) for i in range(4))
    ctl.decide(now=NOW, readback=ReadBack(cold_starts=pods))
    assert ctl.lead_times(now=NOW)[0].seconds == 203.0
    data = checkpoint.encode(ctl)

    def load(blob: bytes) -> DemandForecaster:
        return DemandForecaster.from_bytes(blob)

    restored = checkpoint.restore(data, policy=policy, load_forecaster=load, planner=plan, now=NOW + 1)
    assert restored.lead_times(now=NOW + 1) == ctl.lead_times(now=NOW + 1)
    # version 1: no version key, no lead times
    header, blob = checkpoint.decode(data)
    del header["version"], header["lead_times"]
    head = json.dumps(header).encode()
    old = checkpoint.MAGIC + len(head).to_bytes(4, "big") + head + blob
    cold = checkpoint.restore(old, policy=policy, load_forecaster=load, planner=plan, now=NOW + 1)
    assert cold.lead_times(now=NOW + 1)[0].source == "configured"
    # a newer version, or lead times that do not fit, are clear errors
    for bad in ({**header, "version": 99}, {**header, "lead_times": {"samples": {"gpu": []}}}):
        head = json.dumps(bad).encode()
        with pytest.raises(ValueError, match=r"version|lead times"):
            checkpoint.restore(
                checkpoint.MAGIC + len(head).to_bytes(4, "big") + head + blob,
                policy=policy, load_forecaster=load, planner=plan, now=NOW + 1,
            )


# --- two leads: the typical one starts the replica lifetime, the coverage one spans the cold start ---


@pytest.mark.parametrize(
    ("durations", "coverage", "typical"),
    [
        ([], 300.0, 300.0),  # no observation: the prior for both
        ([120.0, 130.0], 300.0, 300.0),  # fewer than min_observations: the prior for both
        ([120.0, 130.0, 140.0], 140.0, 130.0),  # p90 and median of three
        ([100.0] * 8 + [400.0, 410.0], 400.0, 100.0),  # a slow tail moves the coverage only
        ([10.0, 12.0, 11.0], 75.0, 75.0),  # both clamped up to the floor
        ([5000.0, 6000.0, 7000.0], 1200.0, 1200.0),  # both clamped down to the ceiling
    ],
)
def test_the_lifetime_starts_at_the_median_and_the_coverage_spans_the_p90(
    durations: list[float], coverage: float, typical: float
) -> None:
    lead = LeadTimes(lifetime_quantile=0.5)
    estimate = _learn(durations, lead).estimate(lead, "replica", now=NOW)
    assert (estimate.seconds, estimate.typical) == (coverage, typical)
    assert (estimate.learned is None) == (estimate.learned_typical is None) == (len(durations) < 3)


def test_a_lifetime_quantile_above_the_coverage_is_held_at_the_coverage() -> None:
    lead = LeadTimes(quantile=0.5, lifetime_quantile=0.9)
    estimate = _learn([100.0, 200.0, 300.0, 400.0], lead).estimate(lead, "replica", now=NOW)
    assert (estimate.seconds, estimate.typical) == (200.0, 200.0)


def test_the_controller_hands_the_planner_both_leads() -> None:
    policy = ModelPolicy.model_validate({"name": "m", "forecast": {"bucket_seconds": 10}})
    ctl = ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=NOW
    )
    durations = [100.0] * 8 + [400.0, 410.0]
    pods = tuple(_pod(f"p{i}", NOW - 10.0 - d, NOW - 10.0) for i, d in enumerate(durations))
    seen: list[LeadTimes] = []

    def spy(**kwargs: object) -> object:
        seen.append(kwargs["policy"].lead_times)  # type: ignore[attr-defined]
        return plan(**kwargs)  # type: ignore[arg-type]

    ctl.planner = spy  # type: ignore[assignment]
    step = ctl.decide(now=NOW, readback=ReadBack(cold_starts=pods))
    assert (seen[-1].cold_start_seconds, seen[-1].typical_cold_start_seconds) == (400.0, 100.0)
    assert (step.lead_times[0].seconds, step.lead_times[0].typical) == (400.0, 100.0)


def test_the_controller_plans_serverless_with_the_warm_ups_it_read_back() -> None:
    policy = ModelPolicy.model_validate(
        {"name": "m", "forecast": {"bucket_seconds": 10}, "lead_times": {"serverless_cold_start_seconds": 60}}
    )
    ctl = ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=NOW
    )
    seen: list[LeadTimes] = []

    def spy(**kwargs: object) -> object:
        seen.append(kwargs["policy"].lead_times)  # type: ignore[attr-defined]
        return plan(**kwargs)  # type: ignore[arg-type]

    ctl.planner = spy  # type: ignore[assignment]
    # three warm-ups of 150 s, read back every 30 s (each read-back is seen at the next decision)
    t = NOW
    for level in (1, 2, 3):
        for ready in [level - 1] * 5 + [level]:
            back = ReadBack(serverless_provisioned=level, serverless_ready=ready, read_at=t)
            step = ctl.decide(now=t + 30.0, readback=back)
            t += 30.0
    assert seen[0].serverless_cold_start_seconds == 60.0  # the prior, until three were seen
    assert seen[-1].serverless_cold_start_seconds == 150.0
    assert (step.lead_times[1].seconds, step.lead_times[1].source) == (150.0, "learned")


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1e5), st.integers(3, 40), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_identical_observations_give_equal_leads_within_the_bounds(
    seconds: float, count: int, quantile: float, lifetime: float
) -> None:
    lead = LeadTimes(quantile=quantile, lifetime_quantile=lifetime)
    estimate = _learn([seconds] * count, lead).estimate(lead, "replica", now=NOW)
    # durations are ready - created at epoch scale: equal within rounding
    assert estimate.typical == estimate.seconds
    assert estimate.seconds == pytest.approx(min(max(seconds, 75.0), 1200.0), rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e4, 1e5, allow_nan=False), max_size=30), st.floats(0.0, 5000.0))
def test_the_typical_lead_never_exceeds_the_coverage_nor_the_bounds(
    durations: list[float], age: float
) -> None:
    learner = _learn(durations)
    learner.observe(_pod("slow", NOW, None), lead=LEAD, now=NOW)
    estimate = learner.estimate(LEAD, "replica", now=NOW + age)
    assert 75.0 <= estimate.typical <= estimate.seconds <= 1200.0


# --- the default typical lead: the fastest start seen (lifetime_quantile 0) ---


@pytest.mark.parametrize(
    ("durations", "coverage", "typical"),
    [
        ([], 300.0, 300.0),  # no observation: the prior for both
        ([120.0, 130.0], 300.0, 300.0),  # fewer than min_observations: the prior for both
        ([140.0, 120.0, 130.0], 140.0, 120.0),  # the fastest of three, the p90 is the slowest
        ([100.0] * 8 + [400.0, 410.0], 400.0, 100.0),  # a slow tail moves the coverage only
        ([90.0] + [300.0] * 9, 300.0, 90.0),  # one fast start is enough
        ([10.0, 300.0, 310.0], 310.0, 75.0),  # a too-fast start is held at the floor (300 / 4)
        ([5000.0, 6000.0, 7000.0], 1200.0, 1200.0),  # both held at the ceiling (4 x 300)
    ],
)
def test_by_default_the_lifetime_starts_at_the_fastest_start_seen(
    durations: list[float], coverage: float, typical: float
) -> None:
    assert (LEAD.lifetime_quantile, LEAD.typical_quantile) == (0.0, 0.0)
    estimate = _learn(durations).estimate(LEAD, "replica", now=NOW)
    assert estimate.seconds == pytest.approx(coverage, abs=1e-3)
    assert estimate.typical == pytest.approx(typical, abs=1e-3)
    assert estimate.typical_quantile == 0.0


@pytest.mark.parametrize(
    ("prices", "quota"),
    [({}, 16), ({}, 0), ({"replica_per_hour": 1.0}, 2), ({"serverless_per_gpu_second": 0.01}, 100)],
)
def test_the_fastest_start_holds_at_any_prices_and_quota(prices: dict[str, float], quota: int) -> None:
    policy = ModelPolicy.model_validate(
        {"name": "m", "prices": prices, "bounds": {"serverless_quota": quota}}
    )
    lead = policy.lead_times_in_force
    estimate = _learn([250.0, 150.0, 400.0, 200.0], lead).estimate(lead, "replica", now=NOW)
    assert (estimate.typical, estimate.seconds) == pytest.approx((150.0, 400.0), abs=1e-3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1e4), min_size=3, max_size=30), st.floats(0.0, 1e4))
def test_another_start_moves_the_fastest_only_towards_itself(durations: list[float], extra: float) -> None:
    before = _learn(durations).estimate(LEAD, "replica", now=NOW).typical
    after = _learn([*durations, extra]).estimate(LEAD, "replica", now=NOW).typical
    assert len(durations) < WINDOW  # nothing drops out of the window
    assert after == pytest.approx(min(before, max(extra, 75.0), 1200.0), abs=1e-3)


def test_bad_observations_never_take_the_fastest_start_below_the_floor() -> None:
    learner = _learn([200.0, 250.0, 300.0])
    learner.observe(_pod("skewed", NOW + 3600.0, NOW + 3601.0), lead=LEAD, now=NOW)  # clock skew: refused
    learner.observe(_pod("backwards", NOW, NOW - 50.0), lead=LEAD, now=NOW)  # negative: refused
    learner.observe(_pod("stuck", NOW - 5000.0, None), lead=LEAD, now=NOW)  # never Ready: raises only
    estimate = learner.estimate(LEAD, "replica", now=NOW)
    assert estimate.refused == 2
    assert estimate.typical == pytest.approx(200.0, abs=1e-3)
    fast = _learn([1.0, 2.0, 3.0])  # impossibly fast starts: held at the floor
    assert fast.estimate(LEAD, "replica", now=NOW).typical == 75.0
