"""Dead letters the broker will not take: a rejected record is never committed before its letter is.

A real ``scaler run`` talks to a real tansu broker through a proxy that knows the Kafka framing:
while armed, it closes every connection that sends a Produce request for the dead-letter topic
(the broker never sees it), as a dead-letter topic that is unavailable would. Everything else
(fetches, commits, the group) passes. A poison record read meanwhile must keep its offset
uncommitted until its dead letter is acknowledged: either the letter is retried once the topic
takes writes again, or a restarted daemon reads the record again and dead-letters it. Either way,
the poison record ends up with exactly one dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from conftest import Broker, free_port, tansu_binary, wait_for_tcp
from daemon_process import ScalerProcess, until
from integration_fixtures import kafka_settings, policy_yaml, read_topic, request_event

from scaler.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MODEL = "poison"
PRODUCE = 0  # the Kafka API key of a Produce request


class LetterRefusingProxy:
    """A TCP proxy before a broker; while ``refusing``, a Produce naming ``topic`` drops its connection."""

    def __init__(self, upstream_port: int, *, port: int) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.topic = b""
        self.refusing = False
        self.refused = 0  # Produce requests refused so far
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        with contextlib.suppress(RuntimeError):
            self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._requests(reader, up_writer, writer), self._pump(up_reader, writer))

    async def _requests(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        """Forward request frames (int32 size, then the body: int16 API key first), refusing some."""
        with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
            while True:
                size = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(size, "big"))
                if self.refusing and int.from_bytes(body[:2], "big") == PRODUCE and self.topic in body:
                    self.refused += 1
                    break  # the broker never sees it; the client sees its connection drop
                up.write(size + body)
                await up.drain()
        for w in (up, client):
            with contextlib.suppress(OSError, ConnectionError):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ConnectionError):
            writer.close()

    def start(self) -> LetterRefusingProxy:
        """Start serving in a thread of its own."""
        self._thread.start()
        self._ready.wait(5)
        return self

    def refuse(self, topic: str | None) -> None:
        """Refuse Produce requests for ``topic`` from now on (None: take them all again)."""
        self.topic = (topic or "").encode()
        self.refusing = topic is not None

    def stop(self) -> None:
        """Stop the proxy's loop and thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class ProxiedBroker(Broker):
    """A tansu broker (memory storage) that advertises a proxy: every client goes through it."""

    def __init__(self) -> None:
        super().__init__(binary=tansu_binary(), port=free_port())
        self.proxy = LetterRefusingProxy(self.port, port=free_port())

    @property
    def bootstrap(self) -> str:
        """Return the proxy's host:port."""
        return f"127.0.0.1:{self.proxy.port}"

    def start(self) -> None:
        """Start the proxy, then the broker advertising it, and wait until both accept connections."""
        self.proxy.start()
        super().start()
        wait_for_tcp(self.proxy.port)


@pytest.fixture
def proxied_broker() -> Iterator[ProxiedBroker]:
    """A tansu broker of this test alone, behind a proxy that can refuse dead letters."""
    broker = ProxiedBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        broker.proxy.stop()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=MODEL.encode()) for v in values]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in sent]


def _valid(n: int, start: int) -> list[bytes]:
    now = time.time()
    return [request_event(MODEL, now, start + k) for k in range(n)]


def _settings(broker: ProxiedBroker, tmp_path: Path) -> Settings:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    # a spool: checkpoints go through the same producer, and a final one must not hold the exit
    return kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_dir=tmp_path / "spool")


def _letters_of(broker: ProxiedBroker, settings: Settings, *, at_least: int) -> list[tuple[str, int, int]]:
    records = asyncio.run(read_topic(broker.bootstrap, settings.kafka_deadletter_topic, at_least=at_least))
    found = [json.loads(r.value) for r in records]
    return [(d["topic"], d["partition"], d["offset"]) for d in found]


def _consumed(daemon: ScalerProcess) -> float:
    return daemon.metric("scaler_events_consumed_total")


def _rejected(daemon: ScalerProcess) -> float:
    return daemon.metric("scaler_events_rejected_total")


def _poison_while_letters_are_refused(
    broker: ProxiedBroker, settings: Settings, daemon: ScalerProcess
) -> tuple[tuple[str, int, int], float]:
    """Start ``daemon``, let it consume 20 valid events, then refuse dead letters and produce a poison
    record and 10 valid events after it; return the poison's (topic, partition, offset) and the daemon's
    publish errors before the refusal."""
    topic = settings.kafka_requests_topic
    daemon.start()
    asyncio.run(_produce(broker.bootstrap, topic, _valid(20, 0)))
    until(lambda: _consumed(daemon) >= 20, seconds=30, what="the first valid events consumed")
    errors = daemon.metric("scaler_publish_errors_total")
    broker.proxy.refuse(settings.kafka_deadletter_topic)
    placed = asyncio.run(_produce(broker.bootstrap, topic, [b"{not json", *_valid(10, 20)]))
    return placed[0], errors


def test_a_restart_while_dead_letters_are_refused_reads_the_poison_again(
    proxied_broker: ProxiedBroker, tmp_path: Path
) -> None:
    settings = _settings(proxied_broker, tmp_path)
    first = ScalerProcess(settings, log_path=tmp_path / "first.log")
    try:
        poison, _ = _poison_while_letters_are_refused(proxied_broker, settings, first)
        until(lambda: _consumed(first) >= 31, seconds=30, what="the poison batch read")
        until(lambda: proxied_broker.proxy.refused > 0, seconds=30, what="its dead letter refused")
        first_counts = (_consumed(first), _rejected(first))
        code, _ = first.sigterm(timeout=30)
    finally:
        first.kill()
    assert code == 0, first.log_path.read_text()[-3000:]
    assert first_counts == (31, 1)  # consumed = 30 valid + 1 rejected
    proxied_broker.proxy.refuse(None)  # the dead-letter topic takes writes again

    second = ScalerProcess(settings, log_path=tmp_path / "second.log")
    try:
        second.start()
        # the poison's offset was never committed: the second daemon reads it again
        until(lambda: _rejected(second) >= 1, seconds=30, what="the poison read again and rejected")
        letters = _letters_of(proxied_broker, settings, at_least=2)
        second_counts = (_consumed(second), _rejected(second))
        code, _ = second.sigterm(timeout=30)
    finally:
        second.kill()
    print(
        f"restart while letters refused: first consumed {first_counts[0]:.0f} (rejected "
        f"{first_counts[1]:.0f}), second re-read {second_counts[0]:.0f} (rejected {second_counts[1]:.0f}), "
        f"dead letters {len(letters)}"
    )
    assert code == 0
    assert letters == [poison]  # exactly one dead letter, for the poison record
    assert second_counts[1] == 1  # consumed = valid + rejected: the re-read valid ones count again
    assert second_counts[0] >= 1


@pytest.mark.slow
def test_a_dead_letter_refused_until_it_fails_is_retried_and_nothing_is_committed_before(
    proxied_broker: ProxiedBroker, tmp_path: Path
) -> None:
    settings = _settings(proxied_broker, tmp_path)
    topic = settings.kafka_requests_topic
    first = ScalerProcess(settings, log_path=tmp_path / "first.log")
    try:
        poison, errors_before = _poison_while_letters_are_refused(proxied_broker, settings, first)
        # the producer gives up on the letter after its request timeout (aiokafka: 40 s)
        until(
            lambda: bool(first.events("dead_letter_not_delivered")),
            seconds=90,
            what="the failed delivery logged",
        )
        failed = first.events("dead_letter_not_delivered")[0]
        errors = first.metric("scaler_publish_errors_total") - errors_before
        proxied_broker.proxy.refuse(None)
        asyncio.run(_produce(proxied_broker.bootstrap, topic, _valid(10, 30)))
        until(lambda: _consumed(first) >= 41, seconds=30, what="the records after the outage read")
        letters = _letters_of(proxied_broker, settings, at_least=1)
        counts = (_consumed(first), _rejected(first))
        code, _ = first.sigterm(timeout=30)
    finally:
        first.kill()
    assert code == 0, first.log_path.read_text()[-3000:]
    assert (failed["topic"], failed["partition"], failed["offset"]) == poison  # named where it came from
    assert errors >= 1  # counted in scaler_publish_errors_total
    assert letters == [poison]  # retried once the topic took writes: one letter
    assert counts == (41, 1)  # consumed = 40 valid + 1 rejected

    second = ScalerProcess(settings, log_path=tmp_path / "second.log")
    try:
        second.start()
        time.sleep(3.0)  # the group's committed offsets are past everything: nothing to read again
        again = (_consumed(second), _rejected(second))
        code, _ = second.sigterm(timeout=30)
    finally:
        second.kill()
    after = _letters_of(proxied_broker, settings, at_least=2)
    print(
        f"letter refused until it failed: {errors:.0f} publish errors, consumed {counts[0]:.0f} "
        f"(rejected {counts[1]:.0f}), letters {len(letters)}, after a restart {again[0]:.0f} re-read"
    )
    assert code == 0
    assert again == (0, 0)
    assert after == [poison]
