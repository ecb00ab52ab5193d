"""The decisions topic, tailed: every process learns the newest decision of every model, owned or not.

The KEDA external scaler (:mod:`scaler.adapters.keda`) answers models that another process owns from
it. The consumer has no group (``group_id=None``): it assigns itself every partition of the topic,
commits nothing and joins nothing, so the daemon's group and offsets are untouched. At start (and
after a reconnect) each partition is read from ``max(beginning, end - lookback)``, so the newest
decision of each model is known after a short read, and then followed. Each record is parsed with
:func:`scaler.control.payload.read_decision` and handed on; records that cannot be parsed are
counted and the first one is logged with its partition and offset.

Counted in ``scaler_decision_feed_records_total{outcome}``: ``newer`` (kept), ``older`` (not newer
than the model's newest already read, e.g. a reread one) and ``unparsable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from scaler.adapters.kafka import client_options
from scaler.control.payload import PublishedDecision, read_decision
from scaler.settings import KafkaSettings

log = structlog.get_logger("scaler.decision_feed")

LOOKBACK_RECORDS: Final = 2000  # per partition, read at start: more than a partition's models decide at once
RETRY_SECONDS: Final = 2.0  # after the consumer failed, or while the topic does not exist yet
PARTITIONS_CHECK_SECONDS: Final = 30.0  # how often partitions added to the topic are looked for


class DecisionFeed:
    """Follows the decisions topic and hands each decision read to ``on_decision``.

    ``on_decision`` returns whether the decision was newer than the newest of its model it has.
    """

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        on_decision: Callable[[PublishedDecision], bool],
        lookback: int = LOOKBACK_RECORDS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Create a stopped feed of ``kafka.decisions_topic``."""
        self.kafka = kafka
        self.topic = kafka.decisions_topic
        self.on_decision = on_decision
        self.lookback = lookback
        self.records = Counter(
            "scaler_decision_feed_records",
            "Records read from the decisions topic by the KEDA scaler's feed, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.caught_up = asyncio.Event()  # set once every partition was read up to its end once
        self._logged_unparsable = False
        self._rewound: set[TopicPartition] = set()  # seeked back once after reading past the end

    def take(self, *, partition: int, offset: int, value: bytes | None) -> str:
        """Parse one record and hand it on; return its outcome (``newer``, ``older`` or ``unparsable``)."""
        try:
            decision = read_decision(value or b"")
        except ValueError as exc:
            outcome = "unparsable"
            if not self._logged_unparsable:  # once: a stream of bad records must not flood the log
                self._logged_unparsable = True
                log.warning(
                    "decision_record_unparsable",
                    topic=self.topic,
                    partition=partition,
                    offset=offset,
                    error=str(exc),
                    note="further ones are only counted in scaler_decision_feed_records_total",
                )
        else:
            outcome = "newer" if self.on_decision(decision) else "older"
        self.records.labels(outcome=outcome).inc()
        return outcome

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the topic until ``stopping`` is set; reconnect after failures; never raises."""
        while not stopping.is_set():
            try:
                await self._follow(stopping)
            except (KafkaError, ConnectionError, OSError) as exc:
                log.warning("decision_feed_failed", topic=self.topic, error=str(exc), retry_s=RETRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RETRY_SECONDS)

    async def _follow(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # an offset gone (retention) is read from the beginning
        )
        await consumer.start()
        try:
            parts = await self._partitions(consumer, stopping)
            if not parts:
                return  # stopping
            await self._seek_back(consumer, parts)
            loop = asyncio.get_running_loop()
            checked_at = loop.time()
            log.info("decision_feed_following", topic=self.topic, partitions=len(parts))
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for r in records:
                        self.take(partition=r.partition, offset=r.offset, value=r.value)
                await self._check_positions(consumer, parts)
                if loop.time() - checked_at > PARTITIONS_CHECK_SECONDS:
                    checked_at = loop.time()
                    found = self._known_partitions(consumer)
                    if found and found != parts:  # partitions were added: read them all again
                        parts = found
                        consumer.assign(parts)
                        await self._seek_back(consumer, parts)
        finally:
            await consumer.stop()

    def _known_partitions(self, consumer: Any) -> list[TopicPartition]:
        return [
            TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())
        ]

    async def _partitions(self, consumer: Any, stopping: asyncio.Event) -> list[TopicPartition]:
        """Return the topic's partitions, waiting while it does not exist ([] once ``stopping``)."""
        while not stopping.is_set():
            await consumer.topics()  # refreshes the metadata
            parts = self._known_partitions(consumer)
            if parts:
                consumer.assign(parts)
                return parts
            log.info("decision_feed_waiting", topic=self.topic, reason="the topic does not exist yet")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RETRY_SECONDS)
        return []

    async def _seek_back(self, consumer: Any, parts: list[TopicPartition]) -> None:
        """Seek each partition to ``max(beginning, end - lookback)``."""
        begins = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        self._rewound.clear()
        for tp in parts:
            consumer.seek(tp, max(begins[tp], ends[tp] - self.lookback))

    async def _check_positions(self, consumer: Any, parts: list[TopicPartition]) -> None:
        """Note when every partition was read to its end; seek back a partition read past it.

        A position past the high-water mark the fetches report would wait forever for records that
        are already there: an end offset the broker overstated (the tansu broker's ``end_offsets()``
        is not to be trusted, see :mod:`scaler.adapters.kafka`).
        """
        done = 0
        for tp in parts:
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = await consumer.position(tp)
            if position > high and tp not in self._rewound:
                self._rewound.add(tp)
                log.warning("decision_feed_rewound", partition=tp.partition, position=position, end=high)
                consumer.seek(tp, max(0, high - self.lookback))
            elif position >= high:
                done += 1
        if done == len(parts) and not self.caught_up.is_set():
            self.caught_up.set()
            log.info("decision_feed_caught_up", topic=self.topic, partitions=len(parts))
