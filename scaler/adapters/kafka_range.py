"""Reading a time range of Kafka topics for a replay or an export, without touching any consumer group.

The consumer has no group (``group_id=None``): it assigns itself every partition, commits nothing and
joins nothing, so the daemon's committed offsets and assignment are untouched. Per partition it seeks
with ``offsets_for_times`` to the first record at or after ``since`` (less ``slack``) and stops once
a record is stamped past ``until`` (plus ``slack``) or its position reaches the high-water mark the
fetches report (the tansu broker's ``end_offsets()`` is wrong for multi-record batches). Record
timestamps only bound the scan; the events' own ``ts`` decides what is in range (the reader filters).

The tansu broker answers ``offsets_for_times`` with offset 0 whatever the time (seen 2026-12-01), so
against it a scan starts at the beginning of each partition and skips what is stamped before the
range: slower, same records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from scaler.adapters.kafka import client_options
from scaler.ports import RawRecord
from scaler.settings import KafkaSettings
from scaler.sim.events_trace import EventsReader, EventsReplay

SLACK_SECONDS: Final = 60.0  # events may be stamped by the broker a little after their own ts
STALL_SECONDS: Final = 15.0  # no progress for this long: the broker is gone or the range never ends


async def read_range(
    *,
    kafka: KafkaSettings,
    topics: Sequence[str],
    since: float,
    until: float,
    on_record: Callable[[RawRecord], None],
    slack: float = SLACK_SECONDS,
) -> int:
    """Call ``on_record`` for every record of ``topics`` stamped in ``[since - slack, until + slack]``.

    Returns the number of records passed on. Raises ConnectionError when the brokers cannot be
    reached or stop answering, and LookupError naming a topic that does not exist.
    """
    consumer = AIOKafkaConsumer(
        **client_options(kafka), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    servers = ",".join(kafka.bootstrap_servers)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise ConnectionError(f"cannot reach Kafka at {servers}: {exc}") from exc
    try:
        return await _scan(
            consumer, topics=topics, since=since - slack, until=until + slack, on_record=on_record
        )
    except KafkaError as exc:
        raise ConnectionError(f"reading {', '.join(topics)} from {servers} failed: {exc}") from exc
    finally:
        await consumer.stop()


async def _seek(consumer: AIOKafkaConsumer, *, topics: Sequence[str], since: float) -> set[TopicPartition]:
    """Assign every partition of ``topics``, seek each to ``since``; return those with records after it."""
    parts: list[TopicPartition] = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            await consumer.topics()  # fetches the cluster's metadata afresh
            found = consumer.partitions_for_topic(topic)
        if not found:
            raise LookupError(f"topic {topic!r} does not exist")
        parts.extend(TopicPartition(topic, p) for p in sorted(found))
    consumer.assign(parts)
    starts = await consumer.offsets_for_times({tp: max(0, int(since * 1000)) for tp in parts})
    todo: set[TopicPartition] = set()
    for tp in parts:
        start = starts.get(tp)
        if start is not None:  # None: nothing stamped at or after since
            consumer.seek(tp, start.offset)
            todo.add(tp)
    return todo


async def _scan(
    consumer: AIOKafkaConsumer,
    *,
    topics: Sequence[str],
    since: float,
    until: float,
    on_record: Callable[[RawRecord], None],
) -> int:
    todo = await _seek(consumer, topics=topics, since=since)
    since_ms, until_ms = since * 1000, until * 1000
    passed = 0
    loop = asyncio.get_running_loop()
    stalled_at = loop.time() + STALL_SECONDS
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
        for tp, batch in batches.items():
            past = next((i for i, r in enumerate(batch) if r.timestamp > until_ms), None)
            for r in batch[:past]:
                if r.timestamp >= since_ms:
                    on_record(RawRecord(r.topic, r.partition, r.offset, r.key, r.value or b""))
                    passed += 1
            if past is not None:
                todo.discard(tp)
            if batch:
                stalled_at = loop.time() + STALL_SECONDS
        for tp in list(todo):
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                todo.discard(tp)
        if todo and loop.time() > stalled_at:
            left = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(todo))
            raise ConnectionError(f"no records for {STALL_SECONDS:g} s from {left}")
    return passed


async def replay_from_kafka(
    *,
    kafka: KafkaSettings,
    topics: Sequence[str],
    known_models: Sequence[str],
    since: float,
    until: float,
    only: Sequence[str] | None = None,
) -> EventsReplay:
    """Return the replay of ``topics`` over ``[since, until]`` (see :func:`read_range` for errors).

    ``only`` as for :class:`EventsReader`. Raises TraceError (from :meth:`EventsReader.finish`) when
    too many records are bad or none is an arrival in range. A problem names its record as
    ``topic[partition]@offset``.
    """
    reader = EventsReader(
        known_models=known_models, since=since, until=until, only=only, source=", ".join(topics)
    )

    def feed(record: RawRecord) -> None:
        reader.feed(record.value, where=f"{record.topic}[{record.partition}]@{record.offset}")

    await read_range(kafka=kafka, topics=topics, since=since, until=until, on_record=feed)
    return reader.finish()
