"""Aggregation timelines: which bucket each event lands in, when buckets close, bursts and replica views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.aggregate import ClosedBucket, ModelAggregator, burst_threshold, is_burst
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.types import DemandForecast

T0 = 1_750_000_020.0  # a multiple of 60


def _arrival(ts: float, prompt: int = 100, rid: str = "r") -> RequestEvent:
    return RequestEvent(
        model="m", ts=ts, type="arrival", request_id=rid, prompt_tokens=prompt, output_tokens=0
    )


def _finish(ts: float, output: int) -> RequestEvent:
    return RequestEvent(
        model="m", ts=ts, type="finish", request_id="r", prompt_tokens=100, output_tokens=output
    )


def _reject(ts: float) -> RequestEvent:
    return RequestEvent(model="m", ts=ts, type="reject", request_id="r", prompt_tokens=100, output_tokens=0)


def test_a_minute_timeline_closes_buckets_with_their_own_totals() -> None:
    agg = ModelAggregator(bucket_seconds=60, grace_seconds=2.0)
    assert agg.close(now=T0 + 2) == []  # nothing is closed before the first bucket ends
    agg.add_request(_arrival(T0 + 1, prompt=10))
    agg.add_request(_arrival(T0 + 59.9, prompt=20))
    agg.add_request(_finish(T0 + 30, output=7))
    agg.add_request(_reject(T0 + 31))
    agg.add_request(_arrival(T0 + 60, prompt=40))  # the next bucket
    assert agg.close(now=T0 + 61) == []  # within the grace period, late events may still come
    agg.add_request(_arrival(T0 + 59.5, prompt=5))  # late but within grace
    closed = agg.close(now=T0 + 62)
    assert closed == [  # two of its arrivals in its last tenth: its busiest slot holds 2
        ClosedBucket(
            start=T0, seconds=60, requests=3, prompt_tokens=35, output_tokens=7, rejects=1,
            slots=6, peak_slot=2,
        )
    ]
    assert closed[0].rate == pytest.approx(3 / 60)
    assert agg.last_closed == closed[0]
    assert agg.close(now=T0 + 122) == [
        ClosedBucket(
            start=T0 + 60, seconds=60, requests=1, prompt_tokens=40, output_tokens=0, rejects=0,
            slots=6, peak_slot=1,
        )
    ]


@pytest.mark.parametrize(
    ("offsets", "peak"),
    [
        ([0.5 + k for k in range(60)], 10),  # one a second: 10 in each tenth of the minute
        ([50.0 + k / 10 for k in range(60)], 60),  # all in the last ten seconds
        ([9.99, 10.0, 19.99, 20.0], 2),  # a slot is [k * 10, (k + 1) * 10)
        ([], 0),
    ],
)
def test_a_closed_bucket_says_how_many_arrivals_its_busiest_slot_held(
    offsets: list[float], peak: int
) -> None:
    agg = ModelAggregator(bucket_seconds=60)
    agg.begin(now=T0)
    agg.add_requests([_arrival(T0 + dt) for dt in offsets])
    agg.add_request(_finish(T0 + 5, output=3))  # only arrivals count
    (closed,) = agg.close(now=T0 + 62)
    assert (closed.requests, closed.peak_slot) == (len(offsets), peak)
    whole = ModelAggregator(bucket_seconds=60)  # a replay that hands over whole seconds
    whole.begin(now=T0)
    for second in range(50, 60):
        whole.add_second(second=int(T0) + second, arrivals=6, prompt_tokens=600, output_tokens=0)
    assert whole.close(now=T0 + 62)[0].peak_slot == 60


def test_a_bucket_whose_seconds_the_ring_no_longer_holds_says_nothing_about_its_shape() -> None:
    agg = ModelAggregator(bucket_seconds=60)
    agg.begin(now=T0)
    agg.add_requests([_arrival(T0 + 1), _arrival(T0 + 30)])
    agg.add_request(_arrival(T0 + 66))  # the next bucket: overwrites the ring's slot of second T0 + 2
    assert agg.close(now=T0 + 62)[0].peak_slot == 1  # closed in time
    late = ModelAggregator(bucket_seconds=60)
    late.begin(now=T0)
    late.add_requests([_arrival(T0 + 1), _arrival(T0 + 30), _arrival(T0 + 65)])  # overwrites second T0 + 1
    (first, _second) = late.close(now=T0 + 130)
    assert (first.requests, first.peak_slot) == (2, None)
    longer = ModelAggregator(bucket_seconds=120)  # longer than the ring: its shape is never known
    longer.begin(now=T0)  # the first bucket begins at T0 + 60
    longer.add_requests([_arrival(T0 + 70), _arrival(T0 + 80)])
    (bucket,) = longer.close(now=T0 + 182)
    assert (bucket.requests, bucket.peak_slot) == (2, None)


def test_quiet_buckets_are_reported_as_zero_demand() -> None:
    agg = ModelAggregator(bucket_seconds=10, grace_seconds=2.0)
    agg.close(now=T0 + 2.5)
    agg.add_request(_arrival(T0 + 1))
    closed = agg.close(now=T0 + 45)
    assert [b.start - T0 for b in closed] == [0, 10, 20, 30]
    assert [b.requests for b in closed] == [1, 0, 0, 0]


def test_a_long_pause_reports_every_missed_bucket_once_and_the_ring_is_clean() -> None:
    agg = ModelAggregator(bucket_seconds=1, open_buckets=4, grace_seconds=0.0)
    agg.add_request(_arrival(T0 + 0.5))
    agg.add_request(_arrival(T0 + 3.5))
    closed = agg.close(now=T0 + 100)
    assert len(closed) == 100
    assert sum(b.requests for b in closed) == 2
    agg.add_request(_arrival(T0 + 100.5))
    assert [b.requests for b in agg.close(now=T0 + 101)] == [1]


def test_late_and_far_future_events_are_counted_and_dropped() -> None:
    agg = ModelAggregator(bucket_seconds=10, open_buckets=3, grace_seconds=0.0)
    agg.close(now=T0)
    assert agg.add_request(_arrival(T0 + 1))
    agg.close(now=T0 + 10)
    assert not agg.add_request(_arrival(T0 + 9))
    assert not agg.add_request(_arrival(T0 + 45))
    assert agg.add_request(_arrival(T0 + 35))
    assert (agg.late, agg.early) == (1, 1)
    assert [b.requests for b in agg.close(now=T0 + 40)] == [0, 0, 1]


@given(st.lists(st.floats(0, 600, allow_nan=False), max_size=200), st.integers(1, 120))
@settings(max_examples=100, deadline=None)
def test_every_accepted_arrival_is_reported_exactly_once(offsets: list[float], bucket: int) -> None:
    agg = ModelAggregator(bucket_seconds=bucket, open_buckets=1000, grace_seconds=0.0)
    agg.close(now=T0)
    accepted = sum(agg.add_request(_arrival(T0 + x)) for x in sorted(offsets))
    closed = agg.close(now=T0 + 601 + bucket)
    assert accepted == len(offsets)
    assert sum(b.requests for b in closed) == len(offsets)
    starts = [b.start for b in closed]
    assert starts == sorted(set(starts))
    assert all(b.start % bucket == 0 for b in closed)


def test_recent_rate_counts_only_the_window_and_forgets_old_seconds() -> None:
    agg = ModelAggregator(bucket_seconds=60)
    for k in range(30):
        agg.add_request(_arrival(T0 + k * 0.1))  # 30 arrivals in [T0, T0 + 3)
    assert agg.recent_rate(now=T0 + 3.0, window_seconds=2) == (10.0, 10)  # seconds T0+2 and T0+3 (just begun)
    assert agg.recent_rate(now=T0 + 3.0, window_seconds=5) == (7.5, 30)
    assert agg.recent_rate(now=T0 + 2.5, window_seconds=3) == (30 / 2.5, 30)  # 2.5 s covered so far
    assert agg.recent_rate(now=T0 + 10, window_seconds=5) == (0.0, 0)
    assert agg.recent_rate(now=T0 + 0.1, window_seconds=1) == (10 / 0.5, 10)  # at least half a second
    assert agg.recent_rate(now=T0 + 64 + 1, window_seconds=3) == (0.0, 0)  # ring slots reused
    with pytest.raises(ValueError, match="window_seconds"):
        agg.recent_rate(now=T0, window_seconds=64)


def _forecast(p99: list[float]) -> DemandForecast:
    return DemandForecast(
        start=T0,
        bucket_seconds=60.0,
        levels=np.array([0.5, 0.9, 0.99]),
        rate_mean=np.array(p99) / 3,
        rate_quantiles=np.vstack([np.array(p99) / 3, np.array(p99) / 2, np.array(p99)]),
        mean_prompt_tokens=100.0,
        mean_output_tokens=50.0,
    )


@pytest.mark.parametrize(
    ("now", "level", "expected"),
    [
        (T0 + 1, 0.99, 6.0),
        (T0 + 61, 0.99, 12.0),
        (T0 - 5, 0.99, 6.0),  # slightly before the forecast: its first bucket
        (T0 + 121, 0.99, None),  # beyond the horizon
        (T0 + 61, 0.9, 6.0),
        (T0 + 61, 0.95, 12.0),  # nearest level above
        (T0 + 61, 0.999, 12.0),  # no level above: the highest
    ],
)
def test_burst_threshold_reads_the_high_quantile_of_the_current_bucket(
    now: float, level: float, expected: float | None
) -> None:
    assert burst_threshold(_forecast([6.0, 12.0]), now=now, level=level) == expected


def test_an_unusable_forecast_never_signals_a_burst() -> None:
    unusable = DemandForecast.unusable(start=T0, note="no data")
    assert burst_threshold(unusable, now=T0) is None
    assert not is_burst(recent_rate=1e9, recent_count=10**9, threshold=None)


@pytest.mark.parametrize(
    ("rate", "count", "threshold", "burst"),
    [
        (50.0, 100, 10.0, True),  # 100 arrivals in 2 s where about 20 are expected
        (9.0, 100, 10.0, False),
        (50.0, 4, 0.1, False),  # too few arrivals to tell
        (10.0, 20, 10.0, False),
        (14.0, 28, 10.0, False),  # 28 where 20 expected: Poisson noise, not a burst
        (20.0, 40, 10.0, True),  # 40 where 20 expected: beyond noise
        (0.0, 0, 0.0, False),
    ],
)
def test_is_burst_needs_more_arrivals_than_noise_at_the_threshold_explains(
    rate: float, count: int, threshold: float, burst: bool
) -> None:
    assert is_burst(recent_rate=rate, recent_count=count, threshold=threshold) is burst


def _metric(replica: str, ts: float, *, ready: bool, waiting: int = 0, running: int = 0) -> MetricEvent:
    return MetricEvent(
        model="m", ts=ts, replica=replica, waiting=waiting, running=running, kv_cache_usage=0.5, ready=ready
    )


def test_replica_view_keeps_the_newest_report_per_replica_and_drops_stale_ones() -> None:
    agg = ModelAggregator(bucket_seconds=60, replica_stale_seconds=30)
    agg.add_metric(_metric("a", T0, ready=False))
    agg.add_metric(_metric("a", T0 + 5, ready=True, waiting=2, running=10))
    agg.add_metric(_metric("a", T0 + 1, ready=False))  # out of order: older, ignored
    agg.add_metric(_metric("b", T0 + 5, ready=False, waiting=1))
    agg.add_metric(_metric("c", T0 - 60, ready=True))  # stale
    view = agg.replicas(now=T0 + 10)
    assert (view.ready, view.starting, view.waiting, view.running) == (1, 1, 3, 10)
    assert view.kv_cache_usage_mean == 0.5
    assert agg.replicas(now=T0 + 100).ready == 0


def test_open_buckets_survive_a_checkpoint_round_trip() -> None:
    agg = ModelAggregator(bucket_seconds=60)
    agg.add_request(_arrival(T0 + 1, prompt=10))
    agg.add_request(_arrival(T0 + 70, prompt=20))
    other = ModelAggregator(bucket_seconds=60)
    other.restore_open(agg.open_state())
    other.add_request(_arrival(T0 + 2, prompt=1))
    closed = other.close(now=T0 + 200)
    assert [(b.requests, b.prompt_tokens) for b in closed] == [(2, 11), (1, 20), (0, 0)]
    # the checkpoint keeps totals, not slots: a restored bucket does not say how bursty it was
    assert [b.peak_slot for b in closed] == [None, None, 0]
    with pytest.raises(ValueError, match="bucket_seconds"):
        ModelAggregator(bucket_seconds=10).restore_open(agg.open_state())
    with pytest.raises(ValueError, match="malformed"):
        other.restore_open({"bucket_seconds": 60, "first_open": "x", "rows": []})


def test_begin_skips_the_partial_bucket_the_daemon_started_in() -> None:
    agg = ModelAggregator(bucket_seconds=60, grace_seconds=0.0)
    agg.begin(now=T0 + 30)
    assert not agg.add_request(_arrival(T0 + 31))  # the first half of this bucket was never seen
    assert agg.add_request(_arrival(T0 + 61))
    assert [(b.start, b.requests) for b in agg.close(now=T0 + 120)] == [(T0 + 60, 1)]
    assert agg.late == 1


def _report(
    replica: str, *, ts: float, waiting: int, running: int, ready: bool = True, pod: str | None = None
) -> MetricEvent:
    return MetricEvent(
        model="m",
        ts=ts,
        replica=replica,
        waiting=waiting,
        running=running,
        kv_cache_usage=0.1,
        ready=ready,
        pod=pod,
    )


def test_inflight_per_pod_counts_only_fresh_reports_of_ready_replicas() -> None:
    agg = ModelAggregator(bucket_seconds=10, replica_stale_seconds=60)
    agg.add_metric(_report("10.0.0.1:8000", ts=100, waiting=1, running=2, pod="chat-a"))
    agg.add_metric(_report("chat-b", ts=100, waiting=0, running=0))  # no pod field: the replica name
    agg.add_metric(_report("chat-c", ts=100, waiting=0, running=0, ready=False))  # scrape failed: unknown
    agg.add_metric(_report("chat-d", ts=20, waiting=0, running=0))  # stale at 100
    agg.add_metric(_report("10.0.0.1:8000", ts=90, waiting=9, running=9, pod="chat-a"))  # older: ignored
    assert agg.inflight(now=100) == {"chat-a": 3, "chat-b": 0}


_kinds = st.sampled_from(["arrival", "first_token", "finish", "reject"])


@given(
    st.lists(
        st.tuples(st.floats(-30.0, 120.0), _kinds, st.integers(0, 1000), st.integers(0, 1000)), max_size=60
    ),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_a_batch_counts_exactly_as_its_events_one_by_one(
    rows: list[tuple[float, str, int, int]], begun: bool
) -> None:
    batch = [
        RequestEvent(model="m", ts=T0 + dt, type=kind, request_id="r", prompt_tokens=p, output_tokens=o)  # type: ignore[arg-type]
        for dt, kind, p, o in rows
    ]
    one, many = ModelAggregator(bucket_seconds=10), ModelAggregator(bucket_seconds=10)
    if begun:
        one.begin(now=T0)
        many.begin(now=T0)
    counted = sum(one.add_request(e) for e in batch)
    assert many.add_requests(batch) == counted
    assert (many.late, many.early) == (one.late, one.early)
    assert many.open_state() == one.open_state()
    now = T0 + 30
    assert many.recent_rate(now=now, window_seconds=4) == one.recent_rate(now=now, window_seconds=4)
    assert many.close(now=T0 + 200) == one.close(now=T0 + 200)
