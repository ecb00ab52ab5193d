"""The shadow ledger as timelines and tables: this capacity for so long costs this much; these events
give these SLO outcomes; a checkpoint keeps the totals; bad states are refused."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.control import checkpoint
from scaler.control.controller import ModelController, ReadBack
from scaler.control.ledger import MAX_GAP_SECONDS, Ledger, SloCounts
from scaler.control.payload import decision_payload
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed
from scaler.forecast.models import DemandForecaster

T0 = 1_750_000_020.0
# $3.60/h per replica = $0.001 per replica-second; $0.36/h provisioned = $0.0001 per instance-second
POLICY = ModelPolicy.model_validate(
    {
        "name": "m",
        "prices": {
            "replica_per_hour": 3.6,
            "serverless_per_gpu_second": 0.01,
            "serverless_per_million_tokens": 2.0,
            "serverless_provisioned_per_hour": 0.36,
        },
        "replica": {"prefill_tokens_per_second": 1000, "decode_tokens_per_second": 100, "max_concurrency": 4},
        "slo": {"ttft_seconds": 2.0},
    }
)


def _capacity(replicas: int = 0, *, starting: int = 0, standby: int = 0, provisioned: int = 0) -> Observed:
    return Observed(
        replicas_ready=replicas,
        replicas_starting=starting,
        standby_ready=standby,
        standby_starting=0,
        serverless_provisioned=provisioned,
    )


def _event(
    kind: str, rid: str, ts: float, *, prompt: int = 1000, output: int = 100, **kw: object
) -> RequestEvent:
    return RequestEvent("m", T0 + ts, kind, rid, prompt, output, **kw)  # type: ignore[arg-type]


def _feed(ledger: Ledger, *events: RequestEvent, policy: ModelPolicy = POLICY) -> SloCounts:
    for event in events:
        ledger.add_request(event, policy)
    return ledger.slo


# -- cost ---------------------------------------------------------------------------------------------


def test_capacity_seen_at_each_observation_prices_the_time_since_the_previous_one() -> None:
    ledger = Ledger()
    ledger.observe(now=T0, policy=POLICY, capacity=_capacity(2))  # the first observation prices nothing
    assert ledger.cost.total == 0.0
    # 100 s of 2 replicas + 1 starting and 1 standby, 3 provisioned serverless
    ledger.observe(now=T0 + 100, policy=POLICY, capacity=_capacity(2, starting=1, standby=1, provisioned=3))
    cost = ledger.cost
    assert cost.replicas == pytest.approx(3 * 100 * 0.001)
    assert cost.standby == pytest.approx(1 * 100 * 0.001)
    assert cost.serverless_provisioned == pytest.approx(3 * 100 * 0.0001)
    assert cost.serverless_busy == cost.serverless_tokens == 0.0
    # then 50 s of one replica
    ledger.observe(now=T0 + 150, policy=POLICY, capacity=_capacity(1))
    assert ledger.cost.replicas == pytest.approx(0.3 + 0.05)


def test_a_gap_longer_than_the_limit_is_left_unpriced_and_time_going_back_prices_nothing() -> None:
    ledger = Ledger()
    ledger.observe(now=T0, policy=POLICY, capacity=_capacity(2))
    ledger.observe(now=T0 + MAX_GAP_SECONDS + 1, policy=POLICY, capacity=_capacity(2))
    assert ledger.cost.total == 0.0
    assert ledger.unpriced_seconds == MAX_GAP_SECONDS + 1
    ledger.observe(now=T0, policy=POLICY, capacity=_capacity(50))  # a clock step back
    assert ledger.cost.total == 0.0
    ledger.observe(now=T0 + MAX_GAP_SECONDS + 11, policy=POLICY, capacity=_capacity(1))
    assert ledger.cost.replicas == pytest.approx(10 * 0.001)


def test_provisioned_serverless_no_read_back_showed_is_billed_as_unknown_not_as_the_capacity_says() -> None:
    ledger = Ledger()
    advised = _capacity(1, provisioned=2)
    ledger.observe(now=T0, policy=POLICY, capacity=advised, serverless_observed=False)
    ledger.observe(now=T0 + 100, policy=POLICY, capacity=advised, serverless_observed=False)
    assert ledger.cost.serverless_provisioned == 0.0
    assert ledger.cost.replicas == pytest.approx(100 * 0.001)
    assert ledger.serverless_unobserved_seconds == 100.0
    # a read-back shows it again: billed from then on, and the unknown seconds stay as counted
    ledger.observe(now=T0 + 150, policy=POLICY, capacity=_capacity(1, provisioned=2))
    assert ledger.cost.serverless_provisioned == pytest.approx(2 * 50 * 0.0001)
    assert ledger.serverless_unobserved_seconds == 100.0
    assert ledger.take_unexported(POLICY).serverless_unobserved_seconds == 100.0
    restored = Ledger.from_state(ledger.state(POLICY))
    assert restored.serverless_unobserved_seconds == 100.0
    # a policy that prices no provisioned serverless has nothing unknown to bill
    prices = POLICY.prices.model_copy(update={"serverless_provisioned_per_hour": 0.0})
    unpriced = POLICY.model_copy(update={"prices": prices})
    free = Ledger()
    free.observe(now=T0, policy=unpriced, capacity=_capacity(1), serverless_observed=False)
    free.observe(now=T0 + 100, policy=unpriced, capacity=_capacity(1), serverless_observed=False)
    assert free.serverless_unobserved_seconds == 0.0


def _dry_run(readback: ReadBack | None) -> tuple[ModelController, list[int], dict[str, object]]:
    """Run a controller for 30 min of a trickle (a request every 4 s, one replica's metric events) with
    ``readback`` at every decision; return it, the serverless each decision advised and the last ledger
    block published."""
    ctl = _controller()
    advised: list[int] = []
    block: dict[str, object] = {}
    for s in range(1800):
        now = T0 + s
        if s % 4 == 0:
            for kind, after in (("arrival", 0.0), ("first_token", 0.5), ("finish", 1.5)):
                ctl.ingest_request(_event(kind, f"r{s}", s + after), now=now)
        if s % 15 == 0:
            metric = MetricEvent(
                model="m", ts=now, replica="p0", waiting=0, running=1, kv_cache_usage=0.1, ready=True
            )
            ctl.ingest_metric(metric, now=now)
        trigger = ctl.due(now=now)
        if trigger is not None:
            step = ctl.decide(now=now, trigger=trigger, readback=readback)
            advised.append(step.decision.serverless_provisioned)
            payload = decision_payload(
                model="m", decision=step.decision, trigger=trigger, dry_run=True, ledger=step.ledger
            )
            block = payload["ledger"]  # type: ignore[assignment]
    ctl.account(now=T0 + 1800, readback=readback)
    return ctl, advised, block


def test_in_dry_run_the_ledger_bills_no_advised_serverless_and_says_it_is_unknown() -> None:
    # advisory: no actuators, no read-back; the replica metric events show one replica all along
    ctl, advised, block = _dry_run(None)
    assert max(advised) >= 1, "the trickle should be advised onto provisioned serverless"
    cost = ctl.ledger.settled_cost(POLICY)
    assert cost.serverless_provisioned == 0.0  # nothing was ever provisioned: advice is not a bill
    assert cost.replicas == pytest.approx(1800 * 0.001)  # the replica the events show, priced
    assert ctl.ledger.serverless_unobserved_seconds == 1800.0  # and the serverless part said unknown
    assert block["serverless_unobserved_seconds"] == pytest.approx(
        float(block["to"]) - float(block["from"])  # type: ignore[arg-type]
    )
    realized = block["realized_by_kind"]
    assert isinstance(realized, dict)
    assert realized["serverless_provisioned"] == 0.0
    # with a read-back that shows one provisioned instance, that instance is billed and nothing is unknown
    shown, _, block = _dry_run(ReadBack(replicas_ready=1, replicas_starting=0, serverless_provisioned=1))
    assert shown.ledger.cost.serverless_provisioned == pytest.approx(1800 * 0.0001)
    assert shown.ledger.serverless_unobserved_seconds == 0.0
    assert block["serverless_unobserved_seconds"] == 0.0


def test_serverless_work_is_priced_per_finished_request_the_events_place_on_serverless() -> None:
    ledger = Ledger()
    # S = C (P/Tp + O/Td) = 4 (1 + 1) = 8 s, so S/C = 2 busy instance-seconds; 1,100 tokens
    _feed(
        ledger,
        _event("arrival", "a", 0.0),
        _event("first_token", "a", 1.0, backend="serverless"),  # the backend said on the first token only
        _event("finish", "a", 9.0),
        _event("arrival", "b", 0.0),
        _event("finish", "b", 9.0, backend="serverless"),
        _event("arrival", "k", 0.0),
        _event("finish", "k", 9.0, backend="kubernetes"),  # replicas are priced by time, not per request
        _event("arrival", "r", 0.0, backend="serverless"),
        _event("reject", "r", 0.5),  # a rejected request costs nothing
    )
    cost = ledger.settled_cost(POLICY)
    assert cost.serverless_busy == pytest.approx(2 * 2.0 * 0.01)
    assert cost.serverless_tokens == pytest.approx(2 * 1100 / 1e6 * 2.0)
    assert cost.replicas == 0.0


# -- SLO outcomes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [("arrival", 0.0), ("first_token", 1.9), ("finish", 5.0)], "met_measured", id="ttft-met"
        ),
        pytest.param(
            [("arrival", 0.0), ("first_token", 2.1), ("finish", 5.0)], "missed_measured", id="ttft-missed"
        ),
        pytest.param([("arrival", 0.0), ("reject", 0.1)], "missed_measured", id="reject"),
        pytest.param([("reject", 0.1)], "missed_measured", id="reject-without-arrival"),
        # no first token: wait = finish - arrival - S (8 s), TTFT = wait + P/Tp (1 s)
        pytest.param([("arrival", 0.0), ("finish", 8.5)], "met_estimated", id="estimate-met"),
        pytest.param([("arrival", 0.0), ("finish", 9.5)], "missed_estimated", id="estimate-missed"),
        pytest.param([("arrival", 0.0), ("finish", 0.0)], "met_estimated", id="estimate-never-negative"),
        pytest.param([("first_token", 1.0), ("finish", 5.0)], "unknown", id="arrival-before-this-process"),
        pytest.param([("finish", 5.0)], "unknown", id="finish-only"),
        pytest.param(
            [("arrival", 0.0), ("first_token", 3.0), ("reject", 4.0)], "missed_measured", id="judged-once"
        ),
        pytest.param(
            [("arrival", 0.0), ("first_token", 1.0), ("first_token", 9.0), ("finish", 20.0)],
            "met_measured",
            id="duplicate-first-token",
        ),
        pytest.param(
            [("arrival", 0.0), ("first_token", 1.0), ("arrival", 0.0), ("first_token", 1.0), ("finish", 2.0)],
            "met_measured",
            id="delivered-twice",
        ),
    ],
)
def test_each_request_gets_one_outcome_from_its_events(
    events: list[tuple[str, float]], expected: str
) -> None:
    ledger = Ledger()
    counts = _feed(ledger, *(_event(kind, "r1", ts) for kind, ts in events))
    assert counts == SloCounts(**{expected: 1})
    ledger.observe(now=T0 + 10_000, policy=POLICY, capacity=_capacity())
    assert ledger.slo == counts  # nothing is counted again when the books are expired
    assert ledger.open_requests == 0


def test_a_queue_wait_target_judges_the_wait_before_the_first_token() -> None:
    policy = POLICY.model_copy(update={"slo": POLICY.slo.model_copy(update={"queue_wait_seconds": 0.5})})
    ledger = Ledger()
    # TTFT 1.4 s within 2 s, but the wait before prefill (1.4 - 1.0) within 0.5 s: met; 1.6 s: wait 0.6 s
    counts = _feed(
        ledger,
        _event("arrival", "a", 0.0),
        _event("first_token", "a", 1.4),
        _event("arrival", "b", 0.0),
        _event("first_token", "b", 1.6),
        policy=policy,
    )
    assert counts == SloCounts(met_measured=1, missed_measured=1)


def test_an_arrival_with_no_verdict_is_unknown_after_the_pending_time_and_memory_stays_bounded() -> None:
    ledger = Ledger(max_pending=100, pending_seconds=60.0)
    _feed(ledger, *(_event("arrival", f"r{i}", i * 0.1) for i in range(1000)))
    assert ledger.open_requests <= 100
    pushed_out = ledger.slo.unknown
    assert pushed_out >= 900
    ledger.observe(now=T0 + 100.0 + 59.0, policy=POLICY, capacity=_capacity())  # the newest is 59.1 s old
    assert 0 < ledger.open_requests <= 100
    ledger.observe(now=T0 + 100.0 + 61.0, policy=POLICY, capacity=_capacity())
    assert ledger.open_requests == 0
    assert ledger.slo == SloCounts(unknown=1000)
    assert math.isnan(ledger.slo.attainment)


def test_requests_that_never_finish_after_their_first_token_stay_bounded_too() -> None:
    ledger = Ledger(max_pending=100, pending_seconds=600.0)
    for i in range(1000):
        _feed(ledger, _event("arrival", f"r{i}", i * 0.1), _event("first_token", f"r{i}", i * 0.1 + 0.5))
    assert ledger.open_requests <= 100
    assert ledger.slo == SloCounts(met_measured=1000)  # judged once each; forgetting them changes nothing


# -- intervals, export, checkpoint -------------------------------------------------------------------


def test_an_interval_holds_the_previous_decisions_prediction_beside_what_was_measured() -> None:
    ledger = Ledger()
    first = ledger.close_interval(now=T0, policy=POLICY, capacity=_capacity(2), predicted_per_hour=None)
    assert first.predicted is None
    assert first.realized.total == 0.0
    _feed(ledger, _event("arrival", "a", 10.0), _event("first_token", "a", 10.5))
    second = ledger.close_interval(now=T0 + 60, policy=POLICY, capacity=_capacity(2), predicted_per_hour=7.2)
    assert (second.start, second.end) == (T0, T0 + 60)
    assert second.predicted == pytest.approx(7.2 * 60 / 3600)
    assert second.realized.replicas == pytest.approx(2 * 60 * 0.001)
    assert second.slo == SloCounts(met_measured=1)
    third = ledger.close_interval(now=T0 + 90, policy=POLICY, capacity=_capacity(4), predicted_per_hour=3.6)
    assert third.realized.replicas == pytest.approx(4 * 30 * 0.001)
    assert third.slo == SloCounts()
    assert third.total.replicas == pytest.approx(0.12 + 0.12)
    assert ledger.predicted == pytest.approx(0.12 + 0.03)

    payload = decision_payload(model="m", decision=_decision(), trigger="tick", dry_run=True, ledger=third)
    block = payload["ledger"]
    assert isinstance(block, dict)
    assert block["predicted_dollars"] == pytest.approx(0.03)
    assert block["realized_dollars"] == pytest.approx(0.12)
    assert block["total_dollars"] == pytest.approx(0.24)
    assert block["total_slo"] == {"met": 1, "missed": 0, "unknown": 0, "estimated": 0}


def test_the_exporter_gets_each_amount_once() -> None:
    ledger = Ledger()
    ledger.observe(now=T0, policy=POLICY, capacity=_capacity(1))
    ledger.observe(now=T0 + 10, policy=POLICY, capacity=_capacity(1))
    _feed(ledger, _event("reject", "x", 1.0))
    first = ledger.take_unexported(POLICY)
    assert first.cost.replicas == pytest.approx(0.01)
    assert first.slo == SloCounts(missed_measured=1)
    again = ledger.take_unexported(POLICY)
    assert again.cost.total == 0.0
    assert again.slo == SloCounts()
    # a restored ledger exports only what it measures from then on (per-process counters)
    restored = Ledger.from_state(ledger.state(POLICY))
    assert restored.take_unexported(POLICY).cost.total == 0.0
    assert restored.slo == SloCounts(missed_measured=1)


def _decision() -> object:
    ctl = _controller()
    return ctl.decide(now=T0, readback=ReadBack(replicas_ready=1, replicas_starting=0)).decision


def _controller() -> ModelController:
    return ModelController(
        policy=POLICY, forecaster=DemandForecaster.from_policy(POLICY), planner=plan, now=T0
    )


def test_a_restored_controller_continues_the_ledger_totals_and_its_interval() -> None:
    ctl = _controller()
    back = ReadBack(replicas_ready=2, replicas_starting=0)
    ctl.decide(now=T0, readback=back)
    for i in range(5):
        ctl.ingest_request(_event("arrival", f"r{i}", 1.0 + i), now=T0 + 2 + i)
        ttft = 0.5 if i < 4 else 3.0  # the last one misses the 2 s target
        ctl.ingest_request(_event("first_token", f"r{i}", 1.0 + i + ttft), now=T0 + 2 + i)
    ctl.decide(now=T0 + 60, readback=back)
    ctl.account(now=T0 + 90, readback=back)
    saved = checkpoint.encode(ctl)
    restored = checkpoint.restore(
        saved, policy=POLICY, load_forecaster=DemandForecaster.from_bytes, planner=plan, now=T0 + 100
    )
    assert restored.ledger.cost == ctl.ledger.cost
    assert restored.ledger.slo == SloCounts(met_measured=4, missed_measured=1)
    step = restored.decide(now=T0 + 120, readback=back)
    assert step.ledger is not None
    assert (step.ledger.start, step.ledger.end) == (T0 + 60, T0 + 120)  # the interval spans the restart
    assert step.ledger.realized.replicas == pytest.approx(2 * 60 * 0.001)
    assert step.ledger.total.replicas == pytest.approx(2 * 120 * 0.001)


@pytest.mark.parametrize(
    "bad",
    [
        "not an object",
        {"version": 99},
        {"version": 1, "cost": {"replicas": 1.0}},
        {
            "version": 1,
            "cost": dict.fromkeys(
                ("replicas", "standby", "serverless_busy", "serverless_provisioned", "serverless_tokens"),
                -1.0,
            ),
        },
    ],
    ids=["string", "version", "missing-kinds", "negative"],
)
def test_a_checkpoint_with_a_bad_ledger_is_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="ledger state"):
        Ledger.from_state(bad)


def test_a_checkpoint_without_a_ledger_starts_a_fresh_one() -> None:
    ctl = _controller()
    ctl.decide(now=T0, readback=ReadBack(replicas_ready=1, replicas_starting=0))
    header, blob = checkpoint.decode(checkpoint.encode(ctl))
    del header["ledger"]
    head = json.dumps(header).encode()
    old = checkpoint.MAGIC + struct.pack(">I", len(head)) + head + blob
    restored = checkpoint.restore(
        old, policy=POLICY, load_forecaster=DemandForecaster.from_bytes, planner=plan, now=T0
    )
    assert restored.ledger.cost.total == 0.0


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 120.0), st.integers(0, 20), st.integers(0, 4), st.integers(0, 8)),
        min_size=1,
        max_size=30,
    )
)
def test_interval_costs_add_up_to_the_total_and_splitting_an_interval_changes_nothing(
    steps: list[tuple[float, int, int, int]],
) -> None:
    whole, split = Ledger(), Ledger()
    now = T0
    intervals = 0.0
    for ledger in (whole, split):
        ledger.close_interval(now=T0, policy=POLICY, capacity=_capacity(), predicted_per_hour=None)
    for seconds, replicas, standby, provisioned in steps:
        capacity = _capacity(replicas, standby=standby, provisioned=provisioned)
        split.observe(now=now + seconds / 2, policy=POLICY, capacity=capacity)  # same capacity, one more look
        now += seconds
        intervals += whole.close_interval(
            now=now, policy=POLICY, capacity=capacity, predicted_per_hour=1.0
        ).realized.total
        split.close_interval(now=now, policy=POLICY, capacity=capacity, predicted_per_hour=1.0)
        assert whole.cost.total >= 0.0
    assert intervals == pytest.approx(whole.cost.total, rel=1e-9, abs=1e-12)
    assert split.cost.total == pytest.approx(whole.cost.total, rel=1e-9, abs=1e-12)
    assert whole.predicted == pytest.approx((now - T0) / 3600.0)


LIFECYCLES = (
    ("arrival", "first_token", "finish"),
    ("arrival", "finish"),
    ("arrival", "reject"),
    ("arrival", "first_token", "reject"),
    ("arrival",),
    ("first_token", "finish"),
    ("finish",),
    ("reject",),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(LIFECYCLES), max_size=40), st.randoms(use_true_random=False))
def test_every_request_gets_exactly_one_outcome_however_the_requests_interleave(
    lifecycles: list[tuple[str, ...]], rng: random.Random
) -> None:
    queues = [
        [(kind, f"r{i}", i * 0.5 + k * 0.7) for k, kind in enumerate(life)]
        for i, life in enumerate(lifecycles)
    ]
    stream = []
    while any(queues):  # interleave requests at random, each request's own events in order
        queue = rng.choice([q for q in queues if q])
        stream.append(queue.pop(0))
    ledger = Ledger()
    _feed(ledger, *(_event(kind, rid, ts) for kind, rid, ts in stream))
    ledger.observe(now=T0 + 10_000.0, policy=POLICY, capacity=_capacity())  # the rest expire as unknown
    counts = ledger.slo
    assert counts.met + counts.missed + counts.unknown == len(lifecycles)
    unknown = {("arrival",), ("first_token", "finish"), ("finish",)}  # no arrival seen, or nothing after it
    assert counts.unknown == sum(life in unknown for life in lifecycles)
    assert ledger.open_requests == 0
