"""The decisions topic read back: the message parser as a table, the feed's handling of each record,
and the feed against the real tansu broker (a long topic is read from near its end, then followed)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import structlog
from conftest import Broker
from integration_fixtures import kafka_settings, produce
from prometheus_client import CollectorRegistry

from scaler.adapters import kafka
from scaler.adapters.decision_feed import DecisionFeed
from scaler.adapters.keda import KedaScaler, Seen
from scaler.control.payload import PublishedDecision, decision_payload, read_decision
from tests.adapters.actuator_fixtures import decision


def _published(model: str, replicas: int, at: float) -> bytes:
    """Return a decision message as the daemon's sink writes it."""
    payload = decision_payload(
        model=model, decision=decision(replicas=replicas, at=at), trigger="interval", dry_run=False
    )
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def test_a_published_decision_reads_back() -> None:
    assert read_decision(_published("llama-8b", 3, 1700.5)) == PublishedDecision("llama-8b", 1700.5, 3)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"at": 1, "desired": {"replicas": 1}}', "no 'model'"),
        (b'{"model": "", "at": 1, "desired": {"replicas": 1}}', "no 'model'"),
        (b'{"model": "m", "at": "now", "desired": {"replicas": 1}}', "'at' is not a finite number"),
        (b'{"model": "m", "at": true, "desired": {"replicas": 1}}', "'at' is not a finite number"),
        (b'{"model": "m", "at": NaN, "desired": {"replicas": 1}}', "'at' is not a finite number"),
        (b'{"model": "m", "at": 1, "desired": {"replicas": -1}}', "'desired.replicas' is not a count"),
        (b'{"model": "m", "at": 1, "desired": {"replicas": 1.5}}', "'desired.replicas' is not a count"),
        (b'{"model": "m", "at": 1, "desired": 4}', "'desired.replicas' is not a count"),
        (b'{"model": "m", "at": 1}', "'desired.replicas' is not a count"),
    ],
)
def test_a_record_that_is_not_a_decision_message_is_a_value_error(value: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        read_decision(value)


def _feed(**kwargs: Any) -> tuple[DecisionFeed, KedaScaler, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = kafka_settings("127.0.0.1:1")
    scaler = KedaScaler(intervals=lambda: {"llama-8b": 10.0}, owned=set)
    return (
        DecisionFeed(kafka=settings.kafka, on_decision=scaler.heard, registry=registry, **kwargs),
        scaler,
        registry,
    )


def test_the_feed_keeps_the_newest_decision_per_model_and_counts_the_rest() -> None:
    feed, scaler, registry = _feed()
    outcomes = [
        feed.take(partition=0, offset=0, value=_published("llama-8b", 2, 100.0)),
        feed.take(partition=1, offset=7, value=_published("llama-8b", 5, 90.0)),  # older: another partition
        feed.take(partition=0, offset=1, value=_published("llama-8b", 4, 100.0)),  # not newer
        feed.take(partition=0, offset=2, value=b"garbage"),
        feed.take(partition=0, offset=3, value=None),  # a tombstone
        feed.take(partition=0, offset=4, value=_published("llama-8b", 6, 101.0)),
        feed.take(partition=0, offset=5, value=_published("mistral-7b", 1, 50.0)),
    ]
    assert outcomes == ["newer", "older", "older", "unparsable", "unparsable", "newer", "newer"]
    assert scaler.topic == {"llama-8b": Seen(6, 101.0), "mistral-7b": Seen(1, 50.0)}

    def count(outcome: str) -> float | None:
        return registry.get_sample_value("scaler_decision_feed_records_total", {"outcome": outcome})

    assert (count("newer"), count("older"), count("unparsable")) == (3, 2, 2)


def test_only_the_first_unparsable_record_is_logged_with_its_partition_and_offset() -> None:
    feed, _, _ = _feed()
    with structlog.testing.capture_logs() as logs:
        for offset in range(50):
            feed.take(partition=3, offset=offset + 10, value=b"\x00" * offset)
    warned = [e for e in logs if e["event"] == "decision_record_unparsable"]
    assert len(warned) == 1
    assert (warned[0]["partition"], warned[0]["offset"]) == (3, 10)


@pytest.mark.integration
def test_the_feed_reads_a_long_topic_from_near_its_end_and_follows_it(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap, kafka_topic_partitions=2)
    topic = settings.kafka_decisions_topic
    models = ["llama-8b", "mistral-7b"]
    now = time.time()

    async def run() -> tuple[dict[str, Seen], float, float, dict[str, Seen], int]:
        await kafka.ensure_topics(settings.kafka)
        history = [(m, _published(m, k % 7, now - 600 + k)) for k in range(300) for m in models]
        history += [(m, _published(m, 9 if m == "llama-8b" else 8, now)) for m in models]
        await produce(broker.bootstrap, topic, history)
        await produce(broker.bootstrap, topic, [("llama-8b", b"not a decision")])  # the newest record
        registry = CollectorRegistry()
        scaler = KedaScaler(intervals=lambda: dict.fromkeys(models, 10.0), owned=set)
        feed = DecisionFeed(kafka=settings.kafka, on_decision=scaler.heard, lookback=20, registry=registry)
        stopping = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(feed.run(stopping))
        try:
            await asyncio.wait_for(feed.caught_up.wait(), 30)
            caught_up_after = time.monotonic() - started
            first = dict(scaler.topic)
            sent = time.monotonic()
            await produce(broker.bootstrap, topic, [("mistral-7b", _published("mistral-7b", 3, now + 1))])
            while scaler.topic["mistral-7b"].at != now + 1:
                await asyncio.sleep(0.01)
                assert time.monotonic() - sent < 10, "the new decision never arrived"
            followed_after = time.monotonic() - sent
        finally:
            stopping.set()
            await asyncio.wait_for(task, 10)
        read = sum(
            registry.get_sample_value("scaler_decision_feed_records_total", {"outcome": o}) or 0
            for o in ("newer", "older", "unparsable")
        )
        return first, caught_up_after, followed_after, dict(scaler.topic), int(read)

    first, caught_up_after, followed_after, last, read = asyncio.run(run())
    assert first == {"llama-8b": Seen(9, now), "mistral-7b": Seen(8, now)}
    assert last["mistral-7b"] == Seen(3, now + 1)
    # from near the end, not the 603 records: lookback 20 a partition, plus what tansu's end_offsets()
    # leaves out (it counts the last record batch as one record)
    assert 2 <= read <= 150, read
    print(
        f"decision feed: caught up in {caught_up_after:.2f} s,"
        f" followed a new decision in {followed_after:.2f} s; {read} of 603 records read"
    )
