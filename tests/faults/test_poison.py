"""Poison events of every kind into the real topics of a real ``scaler run``: it stays up, loses nothing.

Hypothesis writes batches of arbitrary bytes, arbitrary JSON and valid events broken in one field
(huge integers, NaN, wrong types, unknown fields and models, far timestamps, 64 KiB+ payloads,
arbitrary keys), mixed with valid events, onto the requests and metrics topics. After each batch:
the daemon is up and healthy, every record was consumed, and each one is either valid or rejected,
exactly: consumed = valid + rejected on /metrics, and the dead-letter topic holds one letter per
rejected record, at the record's own offset.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from conftest import Broker
from daemon_process import ScalerProcess, until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from integration_fixtures import kafka_settings, policy_yaml, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MODEL = "poison"
MAX_SKEW = 300.0
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = st.none() | st.binary(max_size=64) | st.just(MODEL.encode())


def _good_request(n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "ts": time.time(),
        "type": "arrival",
        "request_id": f"good-{n}",
        "prompt_tokens": 100,
        "output_tokens": 0,
    }


def _good_metric() -> dict[str, Any]:
    return {
        "model": MODEL,
        "ts": time.time(),
        "replica": "r-0",
        "waiting": 1,
        "running": 2,
        "kv_cache_usage": 0.5,
        "ready": True,
    }


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _not_an_object(raw: bytes) -> bool:
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return True


# values no field of either event accepts for the field they replace (always invalid there)
HUGE_INT = st.integers(min_value=10**20, max_value=10**400) | st.integers(
    max_value=-(10**20), min_value=-(10**400)
)
NOT_A_NUMBER = st.none() | st.booleans() | st.text(max_size=20) | st.lists(JSON, max_size=3)
BAD_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "model": st.integers() | st.none() | st.text(min_size=1, max_size=40).filter(lambda s: s != MODEL),
    "ts": HUGE_INT | NOT_A_NUMBER | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e300]),
    "prompt_tokens": HUGE_INT | NOT_A_NUMBER | st.integers(max_value=-1) | st.floats(),
    "kv_cache_usage": HUGE_INT
    | NOT_A_NUMBER
    | st.floats(min_value=1.0001)
    | st.sampled_from([math.nan, -1.0]),
    "waiting": HUGE_INT | NOT_A_NUMBER | st.integers(max_value=-1),
}


@st.composite
def broken_event(draw: st.DrawFn) -> tuple[str, bytes]:
    """Return (topic kind, bytes) of a valid event with one field made invalid."""
    kind = draw(st.sampled_from(["requests", "metrics"]))
    event = _good_request(0) if kind == "requests" else _good_metric()
    how = draw(st.sampled_from(["replace", "remove", "extra"]))
    if how == "replace":
        fields = (
            ["model", "ts", "prompt_tokens"]
            if kind == "requests"
            else ["model", "ts", "kv_cache_usage", "waiting"]
        )
        field = draw(st.sampled_from(fields))
        event[field] = draw(BAD_VALUE[field])
    elif how == "remove":
        del event[draw(st.sampled_from(sorted(event)))]
    else:
        event[draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in event))] = draw(JSON)
    return kind, _dumps(event)


POISON = st.one_of(
    st.tuples(st.sampled_from(["requests", "metrics"]), st.binary(max_size=300).filter(_not_an_object)),
    st.tuples(
        st.sampled_from(["requests", "metrics"]), JSON.filter(lambda v: not isinstance(v, dict)).map(_dumps)
    ),
    st.tuples(
        st.sampled_from(["requests", "metrics"]),
        st.dictionaries(st.text(max_size=8), JSON, max_size=4).map(_dumps),
    ),
    broken_event(),
    st.tuples(
        st.just("requests"), st.integers(65_537, 150_000).map(lambda n: b'{"model":"' + b"x" * n + b'"}')
    ),
    st.tuples(st.just("requests"), st.just(b'{"model":"poison","ts":' + b"9" * 400 + b"}")),
)


@pytest.fixture(scope="module")
def daemon(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScalerProcess]:
    """A dry-run ``scaler run`` for the model ``poison`` on the shared broker, ready."""
    workdir = tmp_path_factory.mktemp("poison")
    policy = workdir / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), max_skew_seconds=MAX_SKEW)
    process = ScalerProcess(settings, log_path=Path(workdir) / "daemon.log")
    try:
        yield process.start()
    finally:
        process.stop()


async def _produce(
    bootstrap: str, records: list[tuple[str, bytes | None, bytes]]
) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=1_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in records]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in sent]


class Ledger:
    """What the test produced so far: records in total, valid ones, and where the poison landed."""

    def __init__(self) -> None:
        self.produced = 0
        self.valid = 0
        self.poison: set[tuple[str, int, int]] = set()


LEDGER = Ledger()


@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking against a live process: the example is printed
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)
@given(
    poison=st.lists(st.tuples(POISON, KEYS), min_size=1, max_size=12),
    good=st.integers(min_value=0, max_value=8),
)
def test_every_record_is_counted_valid_or_dead_lettered(
    broker: Broker, daemon: ScalerProcess, poison: list[tuple[tuple[str, bytes], bytes | None]], good: int
) -> None:
    settings_ = daemon.settings
    topics = {"requests": settings_.kafka_requests_topic, "metrics": settings_.kafka_metrics_topic}
    records: list[tuple[str, bytes | None, bytes]] = [
        (topics[kind], key, value) for (kind, value), key in poison
    ]
    bad = len(records)
    for n in range(good):
        if n % 2:
            records.append((topics["metrics"], MODEL.encode(), _dumps(_good_metric())))
        else:
            records.append((topics["requests"], MODEL.encode(), _dumps(_good_request(n))))
    placed = asyncio.run(_produce(broker.bootstrap, records))
    LEDGER.produced += len(records)
    LEDGER.valid += good
    LEDGER.poison.update(placed[:bad])

    until(
        lambda: daemon.metric("scaler_events_consumed_total") >= LEDGER.produced or not daemon.alive(),
        seconds=60,
        what="every record consumed",
    )
    assert daemon.alive(), daemon.log_path.read_text()[-3000:]
    assert daemon.status("/healthz") == 200
    consumed = daemon.metric("scaler_events_consumed_total")
    rejected = daemon.metric("scaler_events_rejected_total")
    assert consumed == LEDGER.produced  # nothing lost, nothing read twice
    assert consumed - rejected == LEDGER.valid  # consumed = valid + rejected, exactly
    letters = asyncio.run(
        read_topic(
            broker.bootstrap, settings_.kafka_deadletter_topic, at_least=len(LEDGER.poison), seconds=30
        )
    )
    origins = [
        (json.loads(r.value)["topic"], json.loads(r.value)["partition"], json.loads(r.value)["offset"])
        for r in letters
    ]
    assert len(origins) == len(set(origins))  # one letter per record
    assert set(origins) == LEDGER.poison  # each poison record dead-lettered, at its own offset


def _reason_counts(daemon: ScalerProcess) -> dict[str, float]:
    prefix = "scaler_events_rejected_total{"
    return {k[len(prefix) :].split('"')[1]: v for k, v in daemon.metrics().items() if k.startswith(prefix)}


def test_one_poison_of_each_reason_is_rejected_for_that_reason(broker: Broker, daemon: ScalerProcess) -> None:
    topic = daemon.settings.kafka_requests_topic
    good = _good_request(0)
    table: dict[str, bytes] = {
        "too_large": b'{"model":"' + b"x" * 70_000 + b'"}',
        "not_utf8": b'{"model":"\xff\xfe"}',
        "not_json": b"{not json",
        "not_object": b"[1, 2, 3]",
        "missing_field": _dumps({k: v for k, v in good.items() if k != "request_id"}),
        "unknown_field": _dumps({**good, "surprise": 1}),
        "wrong_type": _dumps({**good, "prompt_tokens": "100"}),
        "bad_value": _dumps({**good, "prompt_tokens": -1}),
        "unknown_model": _dumps({**good, "model": "nobody"}),
        "timestamp_skew": _dumps({**good, "ts": time.time() + 10 * MAX_SKEW}),
    }
    before = _reason_counts(daemon)
    consumed = daemon.metric("scaler_events_consumed_total")
    placed = asyncio.run(_produce(broker.bootstrap, [(topic, MODEL.encode(), raw) for raw in table.values()]))
    until(
        lambda: daemon.metric("scaler_events_consumed_total") >= consumed + len(table),
        seconds=60,
        what="the table consumed",
    )
    after = _reason_counts(daemon)
    grew = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in table}
    assert grew == dict.fromkeys(table, 1)
    assert daemon.alive()
    LEDGER.produced += len(table)  # the property test's exact totals include these
    LEDGER.poison.update(placed)
