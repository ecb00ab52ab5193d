"""The ledger's request books keyed by the ids' hashes: the figures and the checkpoint of the books keyed by
the ids themselves, and a ledger checkpoint written before the change loads with the same totals."""

from __future__ import annotations

import json

import pytest

from scaler.control.ledger import Ledger
from scaler.core.events import RequestEvent
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed

T0 = 1_750_000_020.0

POLICY = ModelPolicy.model_validate(
    {
        "name": "m",
        "prices": {
            "replica_per_hour": 3.6,
            "serverless_per_gpu_second": 0.01,
            "serverless_per_million_tokens": 2.0,
        },
        "replica": {"prefill_tokens_per_second": 1000, "decode_tokens_per_second": 100, "max_concurrency": 4},
        "slo": {"ttft_seconds": 2.0},
    }
)
CAPACITY = Observed(
    replicas_ready=2, replicas_starting=1, standby_ready=0, standby_starting=0, serverless_provisioned=0
)


def _timeline() -> Ledger:
    """Return a ledger after a scripted timeline: every verdict kind, serverless work, two intervals."""
    ledger = Ledger(max_pending=20, pending_seconds=60.0)
    ledger.close_interval(now=T0, policy=POLICY, capacity=CAPACITY, predicted_per_hour=None)
    events = []
    for k in range(120):
        rid, ts = f"req-{k}", k * 0.5
        backend = "serverless" if k % 7 == 0 else None
        events.append(RequestEvent("m", T0 + ts, "arrival", rid, 800, 0, backend=backend))
        if k % 4 == 0:
            events.append(RequestEvent("m", T0 + ts + 0.4 + k % 3, "first_token", rid, 800, 0))
        if k % 4 in (0, 1):
            events.append(RequestEvent("m", T0 + ts + 3.0, "finish", rid, 800, 120))
        elif k % 4 == 2 and k % 8 == 2:
            events.append(RequestEvent("m", T0 + ts + 1.0, "reject", rid, 800, 0))
    events.append(RequestEvent("m", T0 + 5.0, "arrival", "req-0", 800, 0))  # delivered again
    events.append(RequestEvent("m", T0 + 6.0, "finish", "before-us", 800, 120))
    for event in sorted(events, key=lambda e: e.ts):
        ledger.add_request(event, POLICY)
    ledger.close_interval(now=T0 + 61.0, policy=POLICY, capacity=CAPACITY, predicted_per_hour=8.0)
    ledger.observe(now=T0 + 130.0, policy=POLICY, capacity=CAPACITY)
    return ledger


# What the ledger of the dict-based request books (commit 2d369eb) saved after _timeline()
OLD_STATE: dict[str, object] = {
    "version": 1,
    "cost": {
        "replicas": 0.39,
        "standby": 0.0,
        "serverless_busy": 0.18,
        "serverless_provisioned": 0.0,
        "serverless_tokens": 0.01656,
    },
    "slo": {
        "met_measured": 20,
        "met_estimated": 30,
        "missed_measured": 25,
        "missed_estimated": 0,
        "unknown": 47,
    },
    "predicted": 0.13555555555555557,
    "unpriced_seconds": 0.0,
    "observed_at": 1750000150.0,
    "interval_start": 1750000081.0,
    "interval_cost": {
        "replicas": 0.18300000000000002,
        "standby": 0.0,
        "serverless_busy": 0.18,
        "serverless_provisioned": 0.0,
        "serverless_tokens": 0.01656,
    },
    "interval_slo": {
        "met_measured": 20,
        "met_estimated": 30,
        "missed_measured": 25,
        "missed_estimated": 0,
        "unknown": 29,
    },
    "interval_unpriced_seconds": 0.0,
}


def test_hash_keyed_books_give_the_figures_and_the_checkpoint_the_dict_books_gave() -> None:
    ledger = _timeline()
    # the same state, with the provisioned-serverless seconds counted since (none: every read showed it)
    unobserved = {"serverless_unobserved_seconds": 0.0, "interval_serverless_unobserved_seconds": 0.0}
    assert json.loads(json.dumps(ledger.state(POLICY))) == OLD_STATE | unobserved


def test_a_checkpoint_written_before_hash_keyed_books_loads_with_its_cost_and_slo_counts() -> None:
    restored = Ledger.from_state(OLD_STATE)
    assert restored.cost.as_dict() == OLD_STATE["cost"]
    assert restored.slo.summary() == {"met": 50, "missed": 25, "unknown": 47, "estimated": 30}
    assert restored.open_requests == 0  # open requests are not checkpointed, before or now
    restored.add_request(RequestEvent("m", T0 + 200.0, "arrival", "after", 800, 0), POLICY)
    restored.add_request(RequestEvent("m", T0 + 200.5, "first_token", "after", 800, 0), POLICY)
    interval = restored.close_interval(
        now=T0 + 210.0, policy=POLICY, capacity=CAPACITY, predicted_per_hour=8.0
    )
    assert (interval.slo.met_measured, interval.total_slo.met_measured) == (1, 21)
    # 80 s at 3 replicas since the saved observation, $0.001 a replica-second, on the saved totals
    assert interval.total.replicas == pytest.approx(0.39 + 0.24)
    assert interval.realized.replicas == pytest.approx(0.39 + 0.24 - 0.183)
    assert interval.start == OLD_STATE["interval_start"]
