"""The per-model controller as timelines: at t0 + N seconds, with this load, expect this decision."""

from __future__ import annotations

import itertools
import math

import pytest

from scaler.control import checkpoint
from scaler.control.controller import ModelController, ReadBack
from scaler.control.payload import decision_payload
from scaler.core import framing
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.fallback import FallbackSignal
from scaler.core.operators import ExternalChange, OperatorState
from scaler.core.overrides import Action, Override
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Unavailable
from scaler.forecast.models import DemandForecaster

T0 = 1_750_000_020.0  # a multiple of the 10 s bucket


def _policy(**overrides: object) -> ModelPolicy:
    spec: dict[str, object] = {
        "name": "m",
        "behavior": {"interval_seconds": 10, "scale_down_delay_seconds": 60},
        "forecast": {"bucket_seconds": 10, "horizon_seconds": 600, "fallback_after_seconds": 60},
        "lead_times": {"cold_start_seconds": 120},
        **overrides,
    }
    return ModelPolicy.model_validate(spec)


def _controller(policy: ModelPolicy | None = None) -> ModelController:
    policy = policy or _policy()
    return ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=T0
    )


def _run(
    ctl: ModelController,
    *,
    start: int,
    end: int,
    rate: float | None = None,
    rate_at: dict[int, float] | None = None,
    readback: ReadBack | None = None,
) -> list[tuple[int, str, int, int]]:
    """Feed ``rate`` arrivals/s (1000 + 200 tokens each) second by second, deciding what is due.

    Return (second since T0, trigger, replicas, serverless provisioned) of every decision.
    """
    seen = []
    for s in range(start, end):
        per = (rate_at or {}).get(s, rate)
        if per:
            count = round(per)
            ctl.ingest_second(
                second=int(T0) + s,
                arrivals=count,
                prompt_tokens=1000 * count,
                output_tokens=200 * count,
                now=T0 + s + 1,
            )
        trigger = ctl.due(now=T0 + s + 1)
        if trigger is not None:
            d = ctl.decide(now=T0 + s + 1, trigger=trigger, readback=readback).decision
            seen.append((s + 1, trigger, d.replicas, d.serverless_provisioned))
    return seen


def test_a_cold_controller_holds_what_runs_then_sizes_steady_load_within_a_few_buckets() -> None:
    ctl = _controller()
    first = ctl.decide(now=T0, readback=ReadBack(replicas_ready=3, replicas_starting=0))
    # no data yet: hold what runs (never scale a running workload down on missing data)
    assert first.decision.held
    assert first.decision.replicas == 3
    assert first.decision.bound_by == "no-data"
    seen = _run(ctl, start=0, end=300, rate=20.0, readback=ReadBack(replicas_ready=3, replicas_starting=0))
    ticks = [t for t, trig, _, _ in seen if trig == "tick"]
    assert ticks[:3] == [10, 20, 30]  # every interval after the first decision at t0
    assert all(b - a == 10 for a, b in itertools.pairwise(ticks))
    # at t0 + 5 min: 20 req/s of 1000/200-token requests keep ~3.3 default replicas busy
    _, _, replicas, _ = seen[-1]
    assert 2 <= replicas <= 4
    assert not ctl.previous or not ctl.previous.held


def test_a_burst_between_ticks_is_decided_within_a_second_and_not_before() -> None:
    ctl = _controller(_policy(behavior={"interval_seconds": 60, "scale_down_delay_seconds": 60}))
    ctl.decide(now=T0)
    burst = dict.fromkeys(range(185, 200), 200.0)
    seen = _run(ctl, start=0, end=200, rate=5.0, rate_at=burst)
    bursts = [t for t, trig, _, _ in seen if trig == "burst"]
    assert bursts, seen
    assert 185 < bursts[0] <= 187  # the second the 40x step arrives, or the next
    assert not [t for t in bursts if t <= 185]  # steady 5 req/s never looks like a burst
    after = next(r for t, trig, r, s in seen if trig == "burst")
    assert after >= 1


def test_silence_without_a_signal_holds_and_a_fresh_signal_decides_on_prometheus() -> None:
    ctl = _controller()
    _run(ctl, start=0, end=120, rate=20.0, readback=ReadBack(replicas_ready=3))
    before = ctl.previous
    assert before is not None
    # events stop for longer than fallback_after_seconds (60 s)
    quiet = ctl.decide(now=T0 + 200, readback=ReadBack(replicas_ready=3))
    assert quiet.transition == "fallback_started"
    assert quiet.source == "none"
    assert quiet.decision.held
    assert quiet.decision.replicas == before.replicas  # silence is not zero load
    assert "fallback: no data" in quiet.decision.reason
    ctl.set_fallback(FallbackSignal(at=T0 + 205, request_rate=20.0, replicas_ready=3))
    informed = ctl.decide(now=T0 + 210, readback=ReadBack(replicas_ready=3))
    assert informed.source == "fallback"
    assert informed.transition is None
    assert "fallback: Prometheus" in informed.decision.reason
    assert informed.observed.request_rate == pytest.approx(20.0)
    # events come back
    resumed = _run(ctl, start=210, end=240, rate=20.0)
    assert resumed
    assert ctl.on_fallback is False


def test_the_read_back_replaces_what_replica_events_say() -> None:
    ctl = _controller()
    for k in range(5):
        ctl.ingest_metric(
            MetricEvent(
                model="m", ts=T0, replica=f"r{k}", waiting=0, running=1, kv_cache_usage=0.1, ready=True
            ),
            now=T0,
        )
    from_events = ctl.decide(now=T0 + 1)
    assert from_events.observed.replicas_ready == 5
    read = ctl.decide(
        now=T0 + 2, readback=ReadBack(replicas_ready=2, replicas_starting=1, serverless_provisioned=4)
    )
    assert (read.observed.replicas_ready, read.observed.replicas_starting) == (2, 1)
    assert read.observed.serverless_provisioned == 4


def test_overrides_apply_and_the_one_clamp_keeps_every_output_in_the_bounds_in_force() -> None:
    policy = _policy(bounds={"max_replicas": 6, "serverless_quota": 4})
    ctl = _controller(policy)
    boost = Override(
        key="a", alert="Boost", action=Action.BOOST, model="m", ends_at=T0 + 999, min_replicas=50
    )
    step = ctl.decide(now=T0, overrides=[boost])
    # the boost asks for 50, the policy allows 6: the decision published is the one actuated
    assert step.decision.replicas == 6
    assert "boost" in step.decision.reason
    off = Override(key="b", alert="NoServerless", action=Action.SERVERLESS_OFF, model="m", ends_at=T0 + 999)
    step = ctl.decide(now=T0 + 10, overrides=[off])
    assert Unavailable.SERVERLESS in step.observed.unavailable
    assert step.decision.serverless_provisioned == 0


def test_a_boost_beyond_a_schedule_window_is_clamped_once_so_published_equals_actuated() -> None:
    # a window over every day, all day (UTC), caps replicas at 2 while the policy allows 6
    policy = _policy(
        bounds={"max_replicas": 6},
        schedules=[{"name": "cap", "start": "00:00", "end": "23:59", "max_replicas": 2}],
    )
    ctl = _controller(policy)
    boost = Override(key="a", alert="Boost", action=Action.BOOST, model="m", ends_at=T0 + 999, min_replicas=5)
    step = ctl.decide(now=T0, readback=ReadBack(replicas_ready=1), overrides=[boost])
    # the override raised the floor to 5 (within the policy's 6); the window in force allows 2
    assert step.decision.replicas == 2
    assert step.clamped == ("replicas 5 clamped to 2 (bounds 0..2)",)


def test_a_restored_checkpoint_decides_exactly_as_the_controller_it_was_taken_from() -> None:
    ctl = _controller()
    _run(ctl, start=0, end=200, rate=12.0)
    saved = checkpoint.encode(ctl)
    again = checkpoint.restore(
        saved, policy=ctl.policy, load_forecaster=DemandForecaster.from_bytes, planner=plan, now=T0 + 200
    )
    a = _run(ctl, start=200, end=400, rate=30.0)
    b = _run(again, start=200, end=400, rate=30.0)
    assert a == b
    assert a  # it decided


def test_arrivals_in_bursts_inside_buckets_are_provisioned_for_not_averaged_away() -> None:
    # the same 60 arrivals every 10 s bucket: spread over it, or all in its first second
    steady, bursty = _controller(), _controller()
    calm = _run(steady, start=0, end=300, rate=6.0)
    spiky = _run(bursty, start=0, end=300, rate_at=dict.fromkeys(range(0, 300, 10), 60.0))
    assert steady.burst.factor == 1.0
    assert bursty.burst.factor > 2.0
    assert spiky[-1][3] > calm[-1][3] > 0  # serverless kept warm for the bursts, not for their mean

    # the factor is checkpointed; a checkpoint written before it learns afresh from 1
    header, blob = checkpoint.decode(checkpoint.encode(bursty))
    again = checkpoint.restore(
        checkpoint.encode(bursty), policy=bursty.policy, load_forecaster=DemandForecaster.from_bytes,
        planner=plan, now=T0 + 300,
    )
    assert again.burst.factor == bursty.burst.factor
    del header["burstiness"]
    old = checkpoint.restore(
        framing.frame(checkpoint.MAGIC, header, blob), policy=bursty.policy,
        load_forecaster=DemandForecaster.from_bytes, planner=plan, now=T0 + 300,
    )
    assert old.burst.factor == 1.0
    header["burstiness"] = [9.0]
    with pytest.raises(ValueError, match="burstiness"):
        checkpoint.restore(
            framing.frame(checkpoint.MAGIC, header, blob), policy=bursty.policy,
            load_forecaster=DemandForecaster.from_bytes, planner=plan, now=T0 + 300,
        )


def test_a_checkpoint_of_another_bucket_size_or_garbage_is_refused() -> None:
    ctl = _controller()
    saved = checkpoint.encode(ctl)
    other = _policy(forecast={"bucket_seconds": 60})
    load = DemandForecaster.from_bytes
    with pytest.raises(ValueError, match="bucket"):
        checkpoint.restore(saved, policy=other, load_forecaster=load, planner=plan, now=T0)
    for junk in (b"", b"SPW1", b"SPW1\x00\x00\x00\x05{}", b"nope" * 10):
        with pytest.raises(ValueError, match="checkpoint"):
            checkpoint.restore(junk, policy=ctl.policy, load_forecaster=load, planner=plan, now=T0)


def test_late_and_early_events_are_refused_not_folded_into_the_wrong_bucket() -> None:
    ctl = _controller()
    ok = RequestEvent("m", T0 + 5, "arrival", "r1", 100, 0)
    late = RequestEvent("m", T0 - 30, "arrival", "r2", 100, 0)
    early = RequestEvent("m", T0 + 10_000, "arrival", "r3", 100, 0)
    assert ctl.ingest_request(ok, now=T0 + 6)
    assert not ctl.ingest_request(late, now=T0 + 6)
    assert not ctl.ingest_request(early, now=T0 + 6)
    assert math.isclose(ctl.last_event_at, T0 + 6)


def test_an_operators_scale_is_a_floor_until_the_scale_down_delay_then_the_plan_resumes() -> None:
    ctl = _controller()  # scale-down delay 60 s
    _run(ctl, start=0, end=200, rate=5.0, readback=ReadBack(replicas_ready=2))
    planned = ctl.decide(now=T0 + 200, readback=ReadBack(replicas_ready=2)).decision.replicas
    operator = planned + 3
    change = ExternalChange(at=T0 + 205, replicas=operator, previous=planned)
    back = ReadBack(replicas_ready=operator, operators=OperatorState(external={"replicas": change}))
    seen = {
        t: r
        for t, trigger, r, _ in _run(ctl, start=200, end=330, rate=5.0, readback=back)
        if trigger == "tick"
    }
    assert all(seen[t] == operator for t in (210, 230, 260))  # kept while the delay runs (60 s)
    # then the planner's own count again, one step down per interval (max_step_down 1)
    assert [seen[t] for t in (270, 280, 290)] == [operator - 1, operator - 2, operator - 3]
    assert seen[320] == planned


def test_a_paused_serving_target_is_reported_and_planned_around_as_unavailable() -> None:
    ctl = _controller()
    _run(ctl, start=0, end=200, rate=5.0, readback=ReadBack(replicas_ready=2))
    back = ReadBack(replicas_ready=2, operators=OperatorState(paused=frozenset({"replicas"})))
    step = ctl.decide(now=T0 + 200, readback=back)
    assert step.paused == ("replicas",)
    assert Unavailable.KUBERNETES in step.observed.unavailable
    payload = decision_payload(
        model="m",
        decision=step.decision,
        trigger="tick",
        dry_run=False,
        paused=step.paused,
        floors=step.floors,
    )
    assert (payload["paused"], payload["external_floors"]) == (["replicas"], {})
