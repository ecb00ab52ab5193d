"""Demand from replica rates (the vLLM bridge's counters): one path with request events, as timelines
and properties."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.control.controller import ModelController
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.forecast.models import DemandForecaster

T0 = 1_750_000_020.0  # a multiple of the 10 s bucket


def _policy() -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "name": "m",
            "behavior": {"interval_seconds": 10, "scale_down_delay_seconds": 60},
            "forecast": {"bucket_seconds": 10, "horizon_seconds": 600, "fallback_after_seconds": 60},
            "lead_times": {"cold_start_seconds": 120},
        }
    )


def _controller() -> ModelController:
    policy = _policy()
    return ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=T0
    )


def _metric(replica: str, ts: float, *, rate: float | None, seconds: float = 5.0) -> MetricEvent:
    rates = (
        {}
        if rate is None
        else {
            "request_rate": rate,
            "prompt_token_rate": 1000 * rate,
            "output_token_rate": 200 * rate,
            "rate_seconds": seconds,
        }
    )
    return MetricEvent(
        model="m", ts=ts, replica=replica, waiting=0, running=4, kv_cache_usage=0.3, ready=True, **rates
    )


def _arrival(ts: float, n: int) -> RequestEvent:
    return RequestEvent(
        model="m", ts=ts, type="arrival", request_id=f"r{n}", prompt_tokens=10, output_tokens=0
    )


def _buckets(ctl: ModelController, *, now: float) -> list[tuple[float, int, int, int]]:
    return [
        (b.start - T0, b.requests, b.prompt_tokens, b.output_tokens) for b in ctl.aggregator.close(now=now)
    ]


def test_rates_of_two_replicas_fill_the_buckets_as_their_requests_would() -> None:
    ctl = _controller()
    for k in range(1, 7):  # every 5 s for 30 s: 3 and 1.5 requests/s
        ctl.ingest_metric(_metric("a", T0 + 5 * k, rate=3.0), now=T0 + 5 * k)
        ctl.ingest_metric(_metric("b", T0 + 5 * k, rate=1.5), now=T0 + 5 * k)
    assert _buckets(ctl, now=T0 + 32.5) == [
        (0.0, 45, 45_000, 9_000),
        (10.0, 45, 45_000, 9_000),
        (20.0, 45, 45_000, 9_000),
    ]


def test_a_controller_fed_rates_decides_like_one_fed_the_same_requests() -> None:
    by_rates, by_requests = _controller(), _controller()
    decided: list[tuple[int, int]] = []
    for s in range(1, 601):
        now = T0 + s
        by_requests.ingest_second(
            second=int(T0) + s - 1, arrivals=20, prompt_tokens=20_000, output_tokens=4_000, now=now
        )
        if s % 5 == 0:  # the same replica, with rates and without
            by_rates.ingest_metric(_metric("a", now, rate=20.0), now=now)
            by_requests.ingest_metric(_metric("a", now, rate=None), now=now)
        if s % 10 == 0:
            one, other = by_rates.decide(now=now).decision, by_requests.decide(now=now).decision
            decided.append((one.replicas, other.replicas))
    assert decided[-1][0] > 1  # 20 requests/s needs replicas
    assert all(one == other for one, other in decided), decided


def test_rates_are_ignored_while_request_events_arrive_and_count_again_after_fallback_after() -> None:
    ctl = _controller()
    for k in range(1, 13):  # 60 s of 1 arrival/s and rates saying 10/s
        ts = T0 + 5 * k
        for i in range(5):
            ctl.ingest_request(_arrival(ts - 5 + i, 5 * k + i), now=ts)
        ctl.ingest_metric(_metric("a", ts, rate=10.0), now=ts)
    assert [b[1] for b in _buckets(ctl, now=T0 + 62.5)] == [10] * 6  # the requests only
    counted = []
    for k in range(13, 40):  # request events stop: after 60 s of silence, rates count
        ctl.ingest_metric(_metric("a", T0 + 5 * k, rate=10.0), now=T0 + 5 * k)
        counted += [b[1] for b in _buckets(ctl, now=T0 + 5 * k + 2.5)]  # the daemon closes buckets as it goes
    assert counted[:5] == [0, 0, 0, 0, 0]  # 60..110 s: still within fallback_after of the last request
    assert counted[-5:] == [100] * 5


def test_rates_over_a_closed_bucket_go_to_the_oldest_open_one_never_lost() -> None:
    ctl = _controller()
    ctl.ingest_metric(_metric("a", T0 + 4, rate=1.0, seconds=4), now=T0 + 4)  # a baseline in bucket 0
    assert _buckets(ctl, now=T0 + 12.5) == [(0.0, 4, 4000, 800)]
    ctl.ingest_metric(_metric("a", T0 + 13, rate=2.0, seconds=9), now=T0 + 13)  # 4..13 s, bucket 0 closed
    assert _buckets(ctl, now=T0 + 22.5) == [(10.0, 18, 18_000, 3_600)]
    assert ctl.aggregator.late == 0


def test_fractions_of_a_request_are_carried_to_the_replicas_next_event() -> None:
    ctl = _controller()
    for k in range(1, 9):  # 0.1 requests/s, every 5 s: half a request each time
        ctl.ingest_metric(_metric("a", T0 + 5 * k, rate=0.1), now=T0 + 5 * k)
    assert sum(b[1] for b in _buckets(ctl, now=T0 + 42.5)) == 4


_reports = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.floats(0.0, 500.0),  # requests/s
        st.floats(0.5, 30.0),  # seconds covered
        st.floats(0.0, 10.0),  # seconds since the previous report
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_reports)
def test_rates_are_counted_whole_never_negative_never_late_and_nothing_is_made_up(
    reports: list[tuple[str, float, float, float]],
) -> None:
    ctl = _controller()
    now = T0 + 40  # counting began at T0: no report covers a second before it
    expected = 0.0
    counted: list[int] = []
    for replica, rate, seconds, wait in reports:
        now += wait
        ctl.ingest_metric(_metric(replica, now, rate=rate, seconds=seconds), now=now)
        expected += rate * seconds
        counted += [b[1] for b in _buckets(ctl, now=now)]
    counted += [b[1] for b in _buckets(ctl, now=now + 100)]
    assert all(c >= 0 for c in counted)
    assert ctl.aggregator.late == ctl.aggregator.early == 0
    replicas = len({r for r, *_ in reports})
    assert math.floor(expected + 1e-6) - replicas <= sum(counted) <= math.ceil(expected + 1e-6)


def test_a_report_straddling_two_buckets_is_split_by_the_time_it_covers_in_each() -> None:
    ctl = _controller()
    ctl.ingest_metric(_metric("a", T0 + 11.5, rate=10.0, seconds=5.0), now=T0 + 11.5)  # 6.5..11.5 s
    assert _buckets(ctl, now=T0 + 22.5) == [(0.0, 35, 35_000, 7_000), (10.0, 15, 15_000, 3_000)]


def test_a_report_that_ended_in_a_closed_bucket_is_dropped_like_a_late_request() -> None:
    ctl = _controller()
    ctl.aggregator.close(now=T0 + 32.5)  # buckets 0..20 s closed
    ctl.ingest_metric(_metric("a", T0 + 15, rate=10.0), now=T0 + 32.5)  # a backlog: 10..15 s
    ctl.ingest_metric(_metric("a", T0 + 32, rate=10.0), now=T0 + 32.5)  # 27..32 s: 3 s moved to 30
    assert _buckets(ctl, now=T0 + 42.5) == [(30.0, 50, 50_000, 10_000)]
