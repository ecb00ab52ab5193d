"""The runtime's batch ingest: the same dead letters, counts and drops as one record at a time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from integration_fixtures import make_runtime, sample
from test_daemon_loop import RecordingSink, _policies

from scaler.core import events
from scaler.core.events import (
    InvalidEvent,
    MetricEvent,
    RequestEvent,
    RequestType,
    encode_metric,
    encode_request,
)
from scaler.ports import RawRecord
from scaler.runtime import Runtime

T0 = 1_750_000_200.0
REQ, MET = "llm.requests", "llm.metrics"


def _request(model: str, ts: float, kind: RequestType = "arrival") -> bytes:
    event = RequestEvent(
        model=model,
        ts=ts,
        type=kind,
        request_id="r",
        prompt_tokens=100,
        output_tokens=7,
    )
    return encode_request(event)


def _records() -> list[RawRecord]:
    values: list[tuple[str, bytes | bytearray]] = [
        (REQ, _request("a", T0 + 1)),
        (REQ, b"not json"),
        (REQ, _request("a", T0 + 2, "finish")),
        (REQ, _request("ghost", T0 + 1)),  # no policy
        (
            MET,
            encode_metric(
                MetricEvent(
                    model="a", ts=T0, replica="p", waiting=1, running=2, kv_cache_usage=0.5, ready=True
                )
            ),
        ),
        (REQ, _request("b", T0 + 1)),  # known, not owned
        (REQ, _request("a", T0 + 9999)),  # timestamp skew
        (MET, b'{"model": "a"}'),
        (REQ, json.dumps({"model": "a", "ts": T0, "type": "arrival"}).encode()),  # missing fields
        (REQ, bytearray(_request("a", T0 + 3))),
        (REQ, _request("a", T0 - 50)),  # late: before counting began
        (REQ, _request("b", T0 + 2)),
        (REQ, _request("a", T0 + 3, "reject")),
        (REQ, b"x" * 70_000),
    ]
    return [RawRecord(topic, 0, offset, None, value) for offset, (topic, value) in enumerate(values)]  # type: ignore[arg-type]


def _runtime() -> Runtime:
    rt = make_runtime(_policies("a", "b"), sink=RecordingSink())
    rt.assign(frozenset({"a"}), checkpoints={}, now=T0)
    return rt


def _summary(rt: Runtime, rejected: list[tuple[RawRecord, InvalidEvent]]) -> object:
    dropped = {
        why: sample(rt.metrics, "scaler_events_dropped_total", why=why)
        for why in ("not_owned", "late_or_early")
    }
    controller = rt.owned["a"]
    return (
        [(r.offset, e.reason) for r, e in rejected],
        dropped,
        controller.aggregator.open_state(),
        controller.aggregator.replicas(now=T0 + 1),
        controller.due(now=T0 + 1),
    )


def test_one_batch_rejects_counts_and_drops_as_the_records_one_at_a_time() -> None:
    batch, single = _runtime(), _runtime()
    in_batch = batch.ingest(_records(), now=T0 + 5)
    one_by_one = [found for record in _records() for found in single.ingest([record], now=T0 + 5)]
    assert _summary(batch, in_batch) == _summary(single, one_by_one)
    assert [(r.offset, e.reason) for r, e in in_batch] == [
        (1, "not_json"),
        (3, "unknown_model"),
        (6, "timestamp_skew"),
        (7, "missing_field"),
        (8, "missing_field"),
        (13, "too_large"),
    ]
    # the valid ones of model a: two arrivals (one from a bytearray), a finish, a reject; one late
    state = batch.owned["a"].aggregator.open_state()
    rows = state["rows"]
    assert isinstance(rows, list)
    assert sum(row[0] for row in rows) == 2
    assert sample(batch.metrics, "scaler_events_dropped_total", why="late_or_early") == 1
    assert sample(batch.metrics, "scaler_events_dropped_total", why="not_owned") == 2
    # the shadow ledger takes every valid request of the batch, as one at a time
    for model, controller in batch.owned.items():
        policy = controller.policy
        assert controller.ledger.state(policy) == single.owned[model].ledger.state(policy)
        assert controller.last_request_at == single.owned[model].last_request_at


def test_a_decoder_that_raises_costs_only_its_record_a_dead_letter_and_the_rest_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    boom = b'{"boom": true}'  # the batch decoder leaves it to the one-record decoders, which raise
    real_request, real_metric = events.decode_request, events.decode_metric

    def request(raw: bytes, **context: Any) -> RequestEvent:
        if raw == boom:
            raise OverflowError("int too large to convert to float")
        return real_request(raw, **context)

    def metric(raw: bytes, **context: Any) -> MetricEvent:
        if raw == boom:
            raise RuntimeError("a decoder bug")
        return real_metric(raw, **context)

    monkeypatch.setattr(events, "decode_request", request)
    monkeypatch.setattr(events, "decode_metric", metric)
    values: list[tuple[str, bytes]] = [
        (REQ, _request("a", T0 + 1)),
        (REQ, boom),
        (MET, boom),
        (REQ, _request("a", T0 + 2)),
        (REQ, b"not json"),
        (REQ, _request("a", T0 + 3)),
    ]
    records = [RawRecord(topic, 0, offset, None, value) for offset, (topic, value) in enumerate(values)]
    rt = _runtime()
    rejected = rt.ingest(records, now=T0 + 5)
    # each raising record is returned (the daemon dead-letters it), naming the exception
    found = [(r.offset, e.reason) for r, e in rejected]
    assert found == [(1, "bad_value"), (2, "bad_value"), (4, "not_json")]
    assert "OverflowError" in rejected[0][1].detail
    assert "RuntimeError" in rejected[1][1].detail
    # the rest of the batch, before and after them, is counted: consumed = valid + rejected
    assert sample(rt.metrics, "scaler_events_consumed_total", topic=REQ) == 5
    assert sample(rt.metrics, "scaler_events_consumed_total", topic=MET) == 1
    assert sample(rt.metrics, "scaler_events_rejected_total", reason="bad_value") == 2
    rows = rt.owned["a"].aggregator.open_state()["rows"]
    assert isinstance(rows, list)
    assert sum(row[0] for row in rows) == 3  # the three valid arrivals
