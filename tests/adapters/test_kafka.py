"""The Kafka adapter against a real tansu broker: ownership by key, manual commits, sinks, checkpoints."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os

import pytest
from conftest import Broker
from integration_fixtures import kafka_settings, produce, read_topic

from scaler.adapters import kafka
from scaler.ports import RawRecord
from scaler.settings import Settings

pytestmark = pytest.mark.integration

MODELS = [f"model-{i}" for i in range(12)]


def test_partition_for_matches_the_producers_default_partitioner(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap)

    async def run() -> list[int]:
        await kafka.ensure_topics(settings.kafka)
        return await produce(broker.bootstrap, settings.kafka_requests_topic, [(m, b"{}") for m in MODELS])

    landed = asyncio.run(run())
    assert landed == [kafka.partition_for(m, settings.kafka_topic_partitions) for m in MODELS]
    assert len(set(landed)) > 1  # the models really spread over partitions


async def _drain(source: kafka.KafkaEventSource, *, want: int, seconds: float = 20.0) -> list[RawRecord]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    got: list[RawRecord] = []
    while len(got) < want and loop.time() < deadline:
        got.extend(await source.poll(wait_seconds=0.2))
    return got


def test_a_source_owns_the_models_of_its_partitions_and_resumes_after_its_commit(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap)
    owned: list[frozenset[str]] = []

    async def assigned(models: frozenset[str]) -> None:
        owned.append(models)

    async def revoked(models: frozenset[str]) -> None:
        owned.append(frozenset())

    async def session(want: int) -> list[RawRecord]:
        source = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)
        await source.start(on_assigned=assigned, on_revoked=revoked)
        try:
            records = await _drain(source, want=want, seconds=10.0 if want else 3.0)
            assert source.lag() == {} or all(v >= 0 for v in source.lag().values())
            source.settle()
            await source.commit()
        finally:
            await source.stop()
        return records

    async def run() -> tuple[list[RawRecord], list[RawRecord], list[RawRecord]]:
        await kafka.ensure_topics(settings.kafka)
        await produce(broker.bootstrap, settings.kafka_requests_topic, [(m, m.encode()) for m in MODELS[:6]])
        first = await session(6)
        again = await session(0)
        await produce(broker.bootstrap, settings.kafka_metrics_topic, [("model-7", b"late")])
        later = await session(1)
        return first, again, later

    first, again, later = asyncio.run(run())
    assert sorted(r.value for r in first) == sorted(m.encode() for m in MODELS[:6])
    assert all(r.key == r.value for r in first)
    assert owned[0] == frozenset(MODELS)  # a single member owns every partition, so every model
    assert again == []  # committed: nothing is read twice
    assert [(r.topic, r.value) for r in later] == [(settings.kafka_metrics_topic, b"late")]


def test_records_polled_then_revoked_are_never_committed_and_are_read_again(broker: Broker) -> None:
    """A rebalance between a poll and its processing: the revoke's commit must not cover that batch."""
    settings = kafka_settings(broker.bootstrap)
    events = [(m, f"{m}:{i}".encode()) for i in range(5) for m in MODELS]

    async def nothing(models: frozenset[str]) -> None:
        return None

    Records = list[RawRecord]

    async def run() -> tuple[Records, Records, Records, Records, frozenset[int]]:
        await kafka.ensure_topics(settings.kafka)
        await produce(broker.bootstrap, settings.kafka_requests_topic, events)
        first = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)

        async def first_revoked(models: frozenset[str]) -> None:
            await first.commit()  # what the daemon does on a revoke: commit what it has settled

        await first.start(on_assigned=nothing, on_revoked=first_revoked)
        polled = await _drain(first, want=len(events))  # returned by a poll, not yet counted...
        second = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)
        await second.start(on_assigned=nothing, on_revoked=nothing)  # ...when a second member joins
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (second.partitions and first.assigned) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the group's coordinator tasks rebalance meanwhile
        kept = first.still_assigned(polled)  # what the daemon counts of the interrupted batch
        first.settle()
        await first.commit()
        again: list[RawRecord] = []
        deadline = loop.time() + 20
        while len(again) < len(events) and loop.time() < deadline:
            for source in (first, second):
                again += await source.poll(wait_seconds=0.2)
        second_partitions = second.partitions
        await asyncio.gather(first.stop(), second.stop())
        return polled, kept, again, [r for r in again if r.partition in second_partitions], second_partitions

    polled, kept, again, by_second, second_partitions = asyncio.run(run())
    assert len(polled) == len(events)
    assert second_partitions, "the rebalance moved no partition: the test proves nothing"
    assert kept == []  # eager rebalance: every partition was revoked, so none of the batch is counted...
    where = sorted((r.partition, r.offset) for r in again)
    assert where == sorted((r.partition, r.offset) for r in polled)  # ...and all of it is read again, once
    assert by_second
    assert {r.partition for r in by_second} <= second_partitions


def test_no_record_is_returned_while_its_models_are_being_loaded(broker: Broker) -> None:
    """aiokafka fetches for new partitions before ``on_assigned`` returns: those records must wait."""
    settings = kafka_settings(broker.bootstrap)
    events = [(m, f"{m}:{i}".encode()) for i in range(5) for m in MODELS]
    loading: set[str] = set()
    early: list[RawRecord] = []

    def slow(name: str) -> kafka.OwnershipCallback:
        async def on_assigned(models: frozenset[str]) -> None:
            loading.add(name)
            await asyncio.sleep(1.5)  # checkpoints and Prometheus history take a while
            loading.discard(name)

        return on_assigned

    async def nothing(models: frozenset[str]) -> None:
        return None

    async def read(name: str, source: kafka.KafkaEventSource, into: list[RawRecord], until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            got = await source.poll(wait_seconds=0.1)
            if name in loading:
                early.extend(got)
            into += got
            source.settle()
            await source.commit()

    async def run() -> tuple[list[RawRecord], list[RawRecord]]:
        await kafka.ensure_topics(settings.kafka)
        first = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)
        second = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)
        await first.start(on_assigned=slow("first"), on_revoked=nothing)
        loop = asyncio.get_running_loop()
        by_first: list[RawRecord] = []
        by_second: list[RawRecord] = []
        reading = asyncio.create_task(read("first", first, by_first, loop.time() + 14))
        await produce(broker.bootstrap, settings.kafka_requests_topic, events)
        await asyncio.sleep(3)
        await second.start(on_assigned=slow("second"), on_revoked=nothing)  # a rebalance, slow again
        await produce(broker.bootstrap, settings.kafka_requests_topic, events)
        await read("second", second, by_second, loop.time() + 10)
        await reading
        await asyncio.gather(first.stop(), second.stop())
        return by_first, by_second

    by_first, by_second = asyncio.run(run())
    assert early == []  # nothing was handed out for models not yet loaded
    assert by_second  # the second member took some partitions over
    read_values = sorted(r.value for r in by_first + by_second)
    assert read_values == sorted(v for _, v in events + events)  # every record once: none lost, none twice


def test_decisions_and_dead_letters_are_published_keyed_by_model(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap)
    bad = RawRecord(settings.kafka_requests_topic, 2, 41, b"model-1", b"\xff not json")

    async def run() -> tuple[list[object], list[object]]:
        await kafka.ensure_topics(settings.kafka)
        sink = kafka.KafkaDecisionSink(kafka=settings.kafka)
        await sink.start()
        try:
            await sink.publish(model="model-1", payload={"model": "model-1", "desired": {"replicas": 3}})
            await sink.dead_letter(record=bad, reason="not_utf8", detail="invalid byte at offset 0")
            await sink.flush()
        finally:
            await sink.stop()
        decisions = await read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=1)
        letters = await read_topic(broker.bootstrap, settings.kafka_deadletter_topic, at_least=1)
        return decisions, letters

    decisions, letters = asyncio.run(run())
    assert [(r.key, json.loads(r.value)) for r in decisions] == [  # type: ignore[attr-defined]
        (b"model-1", {"model": "model-1", "desired": {"replicas": 3}})
    ]
    letter = json.loads(letters[0].value)  # type: ignore[attr-defined]
    assert letter["reason"] == "not_utf8"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (bad.topic, 2, 41)
    assert base64.b64decode(letter["value"]) == bad.value


def test_checkpoints_read_back_the_newest_per_model(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap)

    async def run() -> tuple[dict[str, bytes], dict[str, bytes]]:
        await kafka.ensure_topics(settings.kafka)
        sink = kafka.KafkaDecisionSink(kafka=settings.kafka)
        await sink.start()
        store = kafka.KafkaCheckpointStore(kafka=settings.kafka, sink=sink)
        try:
            empty = await store.load(frozenset({"a"}))
            await store.save({"a": b"a1", "b": b"b1"})
            await store.save({"a": b"a2"})
            return empty, await store.load(frozenset({"a", "b", "c"}))
        finally:
            await sink.stop()

    empty, loaded = asyncio.run(run())
    assert empty == {}
    assert loaded == {"a": b"a2", "b": b"b1"}


def test_an_unreachable_broker_is_a_connection_error_naming_it() -> None:
    settings = Settings(kafka_bootstrap_servers=("127.0.0.1:1",), kafka_create_topics=False)

    async def run() -> None:
        sink = kafka.KafkaDecisionSink(kafka=settings.kafka)
        await sink.start()

    with pytest.raises(ConnectionError, match="Kafka producer"):
        asyncio.run(run())


def test_a_dead_letter_of_a_huge_original_is_cut_to_size_with_its_hash(broker: Broker) -> None:
    settings = kafka_settings(broker.bootstrap)
    original = os.urandom(900_000)  # base64'd whole, this letter was over the producer's 1 MB limit
    huge = RawRecord(settings.kafka_requests_topic, 1, 7, b"model-1", original)

    async def run() -> list[object]:
        await kafka.ensure_topics(settings.kafka)
        sink = kafka.KafkaDecisionSink(kafka=settings.kafka)
        await sink.start()
        try:
            await sink.dead_letter(record=huge, reason="too_large", detail="event over 65536 bytes")
            await sink.flush()
        finally:
            await sink.stop()
        return await read_topic(broker.bootstrap, settings.kafka_deadletter_topic, at_least=1)

    (record,) = asyncio.run(run())
    assert len(record.value) < 100_000  # type: ignore[attr-defined]
    letter = json.loads(record.value)  # type: ignore[attr-defined]
    assert letter["value_truncated"] is True
    assert letter["value_bytes"] == 900_000
    assert letter["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert base64.b64decode(letter["value"]) == original[: kafka.DEAD_LETTER_VALUE_BYTES]
    assert (letter["reason"], letter["offset"], record.key) == ("too_large", 7, b"model-1")  # type: ignore[attr-defined]


def test_connected_follows_the_broker_going_away_and_coming_back(own_broker: Broker) -> None:
    settings = kafka_settings(own_broker.bootstrap)
    seen: list[tuple[str, bool, float]] = []

    async def until(source: kafka.KafkaEventSource, want: bool, *, seconds: float) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while source.connected() != want and loop.time() - started < seconds:
            await source.poll(wait_seconds=0.1)
        return loop.time() - started

    async def noop(models: frozenset[str]) -> None:
        return None

    async def run() -> None:
        source = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: MODELS)
        seen.append(("before start", source.connected(), 0.0))
        await source.start(on_assigned=noop, on_revoked=noop)
        try:
            await until(source, True, seconds=5)
            seen.append(("started", source.connected(), 0.0))
            own_broker.kill()
            took = await until(source, False, seconds=15)
            seen.append(("broker killed", source.connected(), took))
            own_broker.start()
            took = await until(source, True, seconds=30)
            seen.append(("broker back", source.connected(), took))
        finally:
            await source.stop()
        seen.append(("stopped", source.connected(), 0.0))

    asyncio.run(run())
    print([f"{what}: {state} after {took:.1f} s" for what, state, took in seen])
    assert [(what, state) for what, state, _ in seen] == [
        ("before start", False),
        ("started", True),
        ("broker killed", False),
        ("broker back", True),
        ("stopped", False),
    ]
