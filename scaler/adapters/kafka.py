"""Kafka adapter (aiokafka): the event source, the decision sink and the checkpoint store.

* :class:`KafkaEventSource` joins a consumer group over the request and metric topics with manual
  commits. A model's events are keyed by model, so Kafka's default partitioner puts them on one
  partition, and the process that owns that partition of the request topic acts for that model.
  The rebalance listener awaits ``on_revoked`` BEFORE partitions move (the caller stops acting,
  checkpoints and commits there) and ``on_assigned`` after the new assignment.
  Commits name their offsets: only records the caller has settled (:meth:`~KafkaEventSource.settle`:
  counted, or dead-lettered and the letter acknowledged) are ever committed, never what a poll
  returned and a rebalance interrupted; records of a partition revoked after they were polled are
  not the caller's to count (:meth:`~KafkaEventSource.still_assigned`): the partition's next owner
  reads them again.
* :class:`KafkaDecisionSink` publishes decisions (key = model) and dead letters.
* :class:`KafkaCheckpointStore` keeps per-model checkpoints on a compacted topic (key = model) and
  reads them back by scanning it to its high-water mark.

For fencing (:mod:`scaler.adapters.fence`) the source keeps the group facts of each request-topic
partition: assigned or not, the generation it was assigned in, the consumer's generation now, and
when the last successful heartbeat was sent (read from aiokafka's group coordinator, 0.14, pinned;
without it every partition counts as fenced, never as safe). A :class:`PartitionListener` hears
of request-topic partitions assigned (after ``on_assigned``) and revoked (after ``on_revoked``).

Lag uses ``consumer.highwater(tp)``: the tansu broker's ``end_offsets()`` is wrong when a record
batch holds several records.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from scaler.control.fencing import GroupView
from scaler.ports import DeadLetterError, OwnershipCallback, PartitionListener, RawRecord
from scaler.settings import KafkaSettings

log = structlog.get_logger("scaler.kafka")


def partition_for(key: str, partitions: int) -> int:
    """Return the partition Kafka's default (murmur2) partitioner picks for ``key``."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Return the connection and security keyword arguments shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        )
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


async def ensure_topics(kafka: KafkaSettings) -> None:
    """Create the daemon's topics if missing (state topic compacted); existing topics are left alone."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, kafka.topic_partitions, 1, topic_configs=configs)
            for name, configs in (
                (kafka.requests_topic, {}),
                (kafka.metrics_topic, {}),
                (kafka.decisions_topic, {}),
                (kafka.deadletter_topic, {}),
                (kafka.state_topic, {"cleanup.policy": "compact"}),
            )
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica created it first
                await admin.create_topics(wanted)
            log.info("topics_created", topics=[t.name for t in wanted])
    finally:
        await admin.close()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.source.partitions_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.source.partitions_assigned(list(assigned))


class KafkaEventSource:
    """Consumer-group source over the request and metric topics (see module docstring)."""

    def __init__(
        self, *, kafka: KafkaSettings, models: Callable[[], Iterable[str]], max_records: int = 10_000
    ) -> None:
        """Create a stopped source; ``models`` returns the model names with a policy, now."""
        self.kafka = kafka
        self.models = models
        self.max_records = max_records
        self.consumer: AIOKafkaConsumer | None = None
        self.owned: frozenset[str] = frozenset()
        self.assigned = False
        self._positions: dict[TopicPartition, int] = {}  # after the last record polled: for lag
        self._polled: dict[TopicPartition, int] = {}  # after records polled, not yet settled
        self._settled: dict[TopicPartition, int] = {}  # after records counted or dead-lettered
        self._committed: dict[TopicPartition, int] = {}
        self._moved: set[tuple[str, int]] = set()  # (topic, partition) revoked since the last poll
        self._rebalances = 0  # callbacks begun: a poll that saw one begin returns nothing
        self._on_assigned: OwnershipCallback | None = None
        self._on_revoked: OwnershipCallback | None = None
        self.partition_listener: PartitionListener | None = None  # leases: hears of partitions moving
        self.partitions: frozenset[int] = frozenset()  # request-topic partitions assigned now
        self.generation: int | None = None  # the generation they were assigned in
        self.heartbeat_at: float | None = None  # monotonic send time of the last good heartbeat or join
        self._partition_count = 0

    async def start(self, *, on_assigned: OwnershipCallback, on_revoked: OwnershipCallback) -> None:
        """Connect and subscribe; raise ConnectionError if the bootstrap servers cannot be reached."""
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        s = self.kafka
        if s.create_topics:
            try:
                await ensure_topics(s)
            except KafkaError as exc:
                raise ConnectionError(
                    f"cannot create topics on {','.join(s.bootstrap_servers)}: {exc}"
                ) from exc
        self.consumer = AIOKafkaConsumer(
            **client_options(s),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            rebalance_timeout_ms=max(s.session_timeout_ms, 10_000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        self.consumer.subscribe([s.requests_topic, s.metrics_topic], listener=_Listener(self))
        try:
            await self.consumer.start()
        except KafkaError as exc:
            await self.consumer.stop()
            raise ConnectionError(
                f"cannot reach Kafka at {','.join(s.bootstrap_servers)}: {exc}"
            ) from exc
        self._watch_heartbeats()

    def _watch_heartbeats(self) -> None:
        """Record the send time of every successful heartbeat (wraps the coordinator's ``_do_heartbeat``)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        beat = getattr(coordinator, "_do_heartbeat", None)
        if coordinator is None or beat is None:
            log.warning("heartbeats_not_visible", effect="every partition counts as fenced")
            return

        async def watched() -> bool:
            sent = time.monotonic()
            ok = bool(await beat())
            if ok:
                self.heartbeat_at = max(self.heartbeat_at or sent, sent)
            return ok

        coordinator._do_heartbeat = watched

    def _current_generation(self) -> int | None:
        """Return the consumer's group generation now (None when unknown or reset after an expiry)."""
        generation = getattr(getattr(self.consumer, "_coordinator", None), "generation", None)
        return generation if isinstance(generation, int) and generation >= 0 else None

    def partition_of(self, model: str) -> int | None:
        """Return the request-topic partition of ``model`` (None before the first assignment)."""
        if self._partition_count == 0:
            return None
        return partition_for(model, self._partition_count)

    def group_view(self, partition: int) -> GroupView:
        """Return what the consumer knows of request-topic ``partition`` now (no I/O)."""
        return GroupView(
            assigned=partition in self.partitions,
            assigned_generation=self.generation,
            current_generation=self._current_generation(),
            heartbeat_at=self.heartbeat_at,
        )

    def _models_of(self, partitions: Iterable[TopicPartition]) -> frozenset[str]:
        assert self.consumer is not None
        topic = self.kafka.requests_topic
        owned_parts = {tp.partition for tp in partitions if tp.topic == topic}
        count = len(self.consumer.partitions_for_topic(topic) or ())
        if not owned_parts or count == 0:
            return frozenset()
        return frozenset(m for m in self.models() if partition_for(m, count) in owned_parts)

    def refresh_owned(self) -> frozenset[str]:
        """Return models owned under the current assignment (after a policy reload added or removed some)."""
        if self.consumer is None:
            return frozenset()
        self.owned = self._models_of(self.consumer.assignment())
        return self.owned

    async def partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Hand the revoked partitions' models back before they move: the callback stops acting."""
        models = self._models_of(revoked) & self.owned
        self.assigned = False
        self._rebalances += 1
        log.info("partitions_revoking", partitions=len(revoked), models=len(models))
        topic = self.kafka.requests_topic
        gone = frozenset(tp.partition for tp in revoked if tp.topic == topic)
        self.partitions = self.partitions - gone  # fenced from here on, before anything else runs
        for tp in revoked:  # what was polled and not yet settled is the next owner's to read
            self._polled.pop(tp, None)
            self._moved.add((tp.topic, tp.partition))
        if self._on_revoked is not None and models:
            await self._on_revoked(models)
        self.owned = self.owned - models
        if self.partition_listener is not None and gone:
            await self.partition_listener.revoked(gone)
        for tp in revoked:
            self._positions.pop(tp, None)
            self._settled.pop(tp, None)
            self._committed.pop(tp, None)
        log.info("partitions_revoked", partitions=len(revoked), models=len(models))

    async def partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Take over the assigned partitions' models (the callback loads their checkpoints)."""
        self.assigned = False  # aiokafka already fetches for them: poll returns nothing until done
        self._rebalances += 1
        log.info("partitions_assigning", partitions=len(assigned))
        models = self._models_of(assigned)
        new = models - self.owned
        self.owned = models
        assert self.consumer is not None
        topic = self.kafka.requests_topic
        self._partition_count = len(self.consumer.partitions_for_topic(topic) or ())
        self.partitions = frozenset(tp.partition for tp in assigned if tp.topic == topic)
        self.generation = self._current_generation()
        self.heartbeat_at = time.monotonic()  # the group just answered this member's join
        if self.partition_listener is not None:
            await self.partition_listener.assigned(self.partitions)
        if self._on_assigned is not None:
            await self._on_assigned(new)
        self.assigned = True
        log.info("partitions_assigned", partitions=len(assigned), models=len(models))

    async def poll(self, *, wait_seconds: float) -> list[RawRecord]:
        """Return the next batch (possibly empty); broker errors are logged and yield an empty batch.

        The records stay unsettled, never committed, until :meth:`settle`. Nothing is returned while
        an assignment is being taken over (aiokafka returns records of new partitions before the
        ``on_assigned`` callback has loaded their models): a batch fetched across a rebalance is put
        back (the consumer seeks to its first record) and read again once the models are owned.
        """
        assert self.consumer is not None, "start() first"
        self._moved.clear()
        if not self.assigned:
            await asyncio.sleep(min(wait_seconds, 0.05))
            return []
        rebalances = self._rebalances
        try:
            batches = await self.consumer.getmany(
                timeout_ms=int(wait_seconds * 1000), max_records=self.max_records
            )
        except KafkaError as exc:
            log.warning("poll_failed", error=str(exc))
            await asyncio.sleep(min(wait_seconds, 0.5))
            return []
        if rebalances != self._rebalances or not self.assigned:
            self._put_back(batches)
            return []
        if batches:  # let the fetcher ask for the next records before this batch is worked on: its wake-up
            for _ in range(3):  # takes asyncio.wait's callback, then its task's step
                await asyncio.sleep(0)
        records: list[RawRecord] = []
        make = tuple.__new__  # RawRecord's own __new__ is a Python function: one call per record saved
        for tp, batch in batches.items():
            if batch:
                t, p = tp.topic, tp.partition
                records += [make(RawRecord, (t, p, r.offset, r.key, r.value or b"")) for r in batch]
                self._positions[tp] = self._polled[tp] = batch[-1].offset + 1
        return records

    def _put_back(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        """Seek each partition of ``batches`` still assigned back to its first record (no I/O)."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        for tp, batch in batches.items():
            if batch and tp in assigned:
                self.consumer.seek(tp, batch[0].offset)
        if batches:
            log.info("batch_put_back", partitions=len(batches), why="fetched across a rebalance")

    def still_assigned(self, records: list[RawRecord]) -> list[RawRecord]:
        """Return ``records`` without those of partitions revoked since they were polled (no I/O)."""
        moved = self._moved
        if not moved:
            return records
        return [r for r in records if (r.topic, r.partition) not in moved]

    def settle(self) -> None:
        """Mark every record polled (and still assigned) as accounted for: commit may cover it.

        The daemon calls it only once every record polled was counted or its dead letter acknowledged:
        until then, commits stay at the positions settled before.
        """
        self._settled.update(self._polled)
        self._polled.clear()

    async def commit(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109  # bounded: see module docstring
        """Commit the positions after every settled record; raise TimeoutError after ``timeout`` s."""
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        offsets = {
            tp: position
            for tp, position in self._settled.items()
            if tp in assigned and self._committed.get(tp) != position
        }
        if not offsets:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), timeout)
        except CommitFailedError as exc:
            log.warning("commit_failed", error=str(exc))
            return
        self._committed.update(offsets)

    def connected(self) -> bool:
        """Return True while the consumer holds a live connection to at least one broker; no I/O, cheap.

        For readiness: False before :meth:`start`, after :meth:`stop`, and within moments of the
        brokers becoming unreachable (aiokafka drops a connection as soon as its socket fails, and
        reconnects when a broker answers again). It reads aiokafka's connection table
        (``AIOKafkaClient._conns``, aiokafka 0.14, pinned in constraints.txt; ``tests/adapters/
        test_kafka.py`` checks it against a killed broker); were that table to disappear in a later
        aiokafka, this returns True while started rather than keep the daemon unready.
        """
        consumer = self.consumer
        if consumer is None:
            return False
        conns = getattr(getattr(consumer, "_client", None), "_conns", None)
        if not isinstance(conns, dict):
            return True
        return any(conn.connected() for conn in list(conns.values()))

    def lag(self) -> dict[tuple[str, int], int]:
        """Return messages behind the high-water mark per assigned (topic, partition), where known."""
        if self.consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                lags[(tp.topic, tp.partition)] = max(0, high - self._positions.get(tp, high))
        return lags

    async def stop(self) -> None:
        """Leave the group (revoking, so the callback checkpoints) and close; never raises."""
        if self.consumer is None:
            return
        try:
            await self.consumer.stop()
        except Exception as exc:  # shutting down: log and go on
            log.warning("consumer_stop_failed", error=str(exc))
        self.consumer = None


DEAD_LETTER_VALUE_BYTES = 65_536  # of the original kept in a dead letter (base64: ~87 KiB)
DEAD_LETTER_KEY_BYTES = 1024  # of the original key kept (and used as the letter's key)
_DETAIL_CHARS = 2000


def dead_letter_body(*, record: RawRecord, reason: str, detail: str) -> dict[str, object]:
    """Return the dead letter of ``record``: at most ~90 KiB as JSON, whatever the original's size."""
    value = record.value
    key = record.key
    return {
        "reason": reason,
        "detail": detail[:_DETAIL_CHARS],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": base64.b64encode(key[:DEAD_LETTER_KEY_BYTES]).decode() if key is not None else None,
        "key_truncated": key is not None and len(key) > DEAD_LETTER_KEY_BYTES,
        "value": base64.b64encode(value[:DEAD_LETTER_VALUE_BYTES]).decode(),
        "value_truncated": len(value) > DEAD_LETTER_VALUE_BYTES,
        "value_bytes": len(value),
        "value_sha256": hashlib.sha256(value).hexdigest(),
    }


class KafkaDecisionSink:
    """Producer for decisions and dead letters (and checkpoints, via :class:`KafkaCheckpointStore`)."""

    def __init__(self, *, kafka: KafkaSettings) -> None:
        """Create a stopped sink."""
        self.kafka = kafka
        self.producer: AIOKafkaProducer | None = None
        self._pending: list[tuple[tuple[str, int, int], asyncio.Future[Any]]] = []  # (origin, ack)
        # headers of each decision record, e.g. the publishing member and its generation (fencing)
        self.headers: Callable[[str], list[tuple[str, bytes]]] | None = None

    async def start(self) -> None:
        """Connect the producer; raise ConnectionError if Kafka cannot be reached."""
        self.producer = AIOKafkaProducer(**client_options(self.kafka), acks="all", linger_ms=5)
        try:
            await self.producer.start()
        except KafkaError as exc:
            await self.producer.stop()
            raise ConnectionError(f"cannot start the Kafka producer: {exc}") from exc

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        """Publish a decision keyed by model and wait for the broker; raise ConnectionError on failure."""
        assert self.producer is not None, "start() first"
        value = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        try:
            await self.producer.send_and_wait(
                self.kafka.decisions_topic,
                value=value,
                key=model.encode(),
                headers=self.headers(model) if self.headers is not None else None,
            )
        except KafkaError as exc:
            raise ConnectionError(f"decision for {model} not published: {exc}") from exc

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        """Queue a dead letter for ``record`` (:meth:`flush` waits); raise ConnectionError if not queued.

        The letter (JSON) names the reason and origin and carries the original in base64, cut to its
        first DEAD_LETTER_VALUE_BYTES (``value_truncated``), with the original's ``value_bytes`` and
        ``value_sha256``: a letter stays far below the producer's request size whatever the original's.
        """
        assert self.producer is not None, "start() first"
        letter = dead_letter_body(record=record, reason=reason, detail=detail)
        value = json.dumps(letter, separators=(",", ":")).encode()
        key = record.key[:DEAD_LETTER_KEY_BYTES] if record.key is not None else None
        topic = self.kafka.deadletter_topic
        try:
            future = await self.producer.send(topic, value=value, key=key)
        except KafkaError as exc:
            raise ConnectionError(f"dead letter not queued: {exc}") from exc
        self._pending.append(((record.topic, record.partition, record.offset), future))

    async def flush(self) -> None:
        """Wait until every queued dead letter is acknowledged.

        Raises :class:`~scaler.ports.DeadLetterError` naming the records whose letters failed.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        outcomes = zip((origin for origin, _ in pending), results, strict=True)
        failed = [(origin, r) for origin, r in outcomes if isinstance(r, BaseException)]
        if failed:
            raise DeadLetterError(
                f"{len(failed)} dead letters not delivered: {failed[0][1]!r}",
                frozenset(origin for origin, _ in failed),
            )

    async def stop(self) -> None:
        """Flush and close; never raises."""
        if self.producer is None:
            return
        try:
            await self.producer.stop()
        except Exception as exc:  # shutting down: log and go on
            log.warning("producer_stop_failed", error=str(exc))
        self.producer = None


class KafkaCheckpointStore:
    """Checkpoints per model on a compacted topic (key = model)."""

    def __init__(self, *, kafka: KafkaSettings, sink: KafkaDecisionSink, read_timeout: float = 10.0) -> None:
        """Create a store writing through ``sink``'s producer."""
        self.kafka = kafka
        self.sink = sink
        self.read_timeout = read_timeout

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        """Write each checkpoint and wait for the broker; raise ConnectionError on failure."""
        producer = self.sink.producer
        assert producer is not None, "start the sink first"
        topic = self.kafka.state_topic
        try:
            futures = [await producer.send(topic, value=v, key=m.encode()) for m, v in checkpoints.items()]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise ConnectionError(f"checkpoints not saved: {exc}") from exc

    async def load(self, models: frozenset[str]) -> dict[str, bytes]:
        """Return the newest checkpoint of each of ``models`` on the state topic (scanned to its end)."""
        return {model: data for model, (data, _) in (await self.load_stamped(models)).items()}

    async def load_stamped(self, models: frozenset[str]) -> dict[str, tuple[bytes, float]]:
        """Return model -> (newest checkpoint on the state topic, its record's unix timestamp)."""
        if not models:
            return {}
        consumer = AIOKafkaConsumer(**client_options(self.kafka), enable_auto_commit=False, group_id=None)
        await consumer.start()
        found: dict[str, tuple[bytes, float]] = {}
        try:
            topic = self.kafka.state_topic
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                return {}
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            deadline = asyncio.get_running_loop().time() + self.read_timeout
            done: set[TopicPartition] = set()
            while len(done) < len(parts) and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    for r in batch:
                        key = r.key.decode(errors="replace") if r.key else ""
                        if key in models and r.value is not None:
                            found[key] = (r.value, r.timestamp / 1000.0)
                for tp in parts:
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) >= high:
                        done.add(tp)
            if len(done) < len(parts):
                log.warning("checkpoint_scan_incomplete", partitions=len(parts), complete=len(done))
        finally:
            await consumer.stop()
        return found
