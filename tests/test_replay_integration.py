"""Replaying your own traffic against the real broker: from the topics and from an exported file.

A day-shaped stream (compressed into four hours of event time, produced in a second or two) of request
and replica metric events for two models goes onto the daemon's topics, keyed by model, with record
timestamps as a live producer stamps them. ``scaler simulate --from-kafka`` over a range inside it and
``scaler export`` + ``scaler simulate --trace-format events`` over the same range give equal results;
the daemon group's committed offsets are untouched.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from scaler import cli
from scaler.adapters.kafka import ensure_topics
from scaler.settings import Settings
from tests.conftest import Broker
from tests.integration_fixtures import kafka_settings, settings_env

pytestmark = pytest.mark.integration

DAY0 = 1_764_460_800.0  # 2025-11-30 00:00 UTC: history, far from the test's clock
SPAN = 4 * 3600.0  # one "day" of shape, compressed into four hours of event time
SINCE, UNTIL = DAY0 + 1800.0, DAY0 + 3.5 * 3600.0
PEAKS = {"small": 0.8, "big": 0.3}  # req/s at the peak of the day


Event = tuple[float, str, str, bytes]  # (ts, topic kind, key, value)


def day_of(model: str, *, peak: float, seed: int) -> tuple[list[Event], int]:
    """Return a day of events for ``model`` and how many of its arrivals fall in [SINCE, UNTIL]."""
    rng = np.random.default_rng(seed)
    out: list[Event] = []
    in_range = 0
    minutes = int(SPAN // 60)
    for m in range(minutes):
        rate = peak * (0.1 + 0.9 * math.sin(math.pi * m / minutes) ** 2)
        for n, t in enumerate(np.sort(rng.uniform(0.0, 60.0, rng.poisson(rate * 60)))):
            ts = DAY0 + m * 60 + float(t)
            rid = f"{model}-{m}-{n}"
            prompt, output = int(rng.integers(200, 2000)), int(rng.integers(20, 400))
            backend = "serverless" if rng.random() < 0.1 else "kubernetes"
            in_range += SINCE <= ts <= UNTIL
            for dt, kind, extra in (
                (0.0, "arrival", {}),
                (0.3, "first_token", {"backend": backend}),
                (4.0, "finish", {"backend": backend, "output_tokens": output}),
            ):
                event = {
                    "model": model,
                    "ts": ts + dt,
                    "type": kind,
                    "request_id": rid,
                    "prompt_tokens": prompt,
                    "output_tokens": 0,
                    **extra,
                }
                out.append((ts + dt, "req", model, json.dumps(event).encode()))
        for i in range(max(1, math.ceil(rate / 0.2))):
            for s in (0.0, 30.0):
                ts = DAY0 + m * 60 + s
                metric = {
                    "model": model,
                    "ts": ts,
                    "replica": f"{model}-{i}",
                    "waiting": 0,
                    "running": 2,
                    "kv_cache_usage": 0.25,
                    "ready": True,
                }
                out.append((ts, "met", model, json.dumps(metric).encode()))
    return out, in_range


async def produce_stream(settings: Settings, stream: list[Event]) -> None:
    await ensure_topics(settings.kafka)
    producer = AIOKafkaProducer(bootstrap_servers=list(settings.kafka_bootstrap_servers), linger_ms=20)
    await producer.start()
    topics = {"req": settings.kafka_requests_topic, "met": settings.kafka_metrics_topic}
    try:
        futures = [
            await producer.send(topics[kind], value=value, key=key.encode(), timestamp_ms=int(ts * 1000))
            for ts, kind, key, value in stream
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 60)
    finally:
        await producer.stop()


async def commit_some(settings: Settings) -> dict[TopicPartition, int]:
    """Commit offsets for the daemon's group (as a running daemon would); return what was committed."""
    topic = settings.kafka_requests_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(settings.kafka_bootstrap_servers),
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        wanted = {tp: 3 + tp.partition for tp in parts}
        await asyncio.wait_for(consumer.commit(wanted), 10)
    finally:
        await consumer.stop()
    return wanted


async def committed(settings: Settings, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=list(settings.kafka_bootstrap_servers))
    await admin.start()
    try:
        listing = admin.list_consumer_group_offsets(settings.kafka_group_id, partitions=parts)
        offsets = await asyncio.wait_for(listing, 10)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


def test_a_replay_from_the_topics_equals_one_from_an_exported_file_and_moves_no_offsets(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = kafka_settings(broker.bootstrap)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)  # the daemon's group id too: a replay that used it would show
    stream: list[Event] = []
    expected: dict[str, int] = {}
    for seed, (model, peak) in enumerate(PEAKS.items()):
        events, in_range = day_of(model, peak=peak, seed=seed)
        stream += events
        expected[model] = in_range
    stream.sort(key=lambda e: e[0])
    stream.insert(len(stream) // 2, (DAY0 + 7200.0, "req", "small", b'{"model": "small", "ts": 17'))
    asyncio.run(produce_stream(settings, stream))
    before = asyncio.run(commit_some(settings))
    policy = tmp_path / "policy.yaml"
    # idle: a model of the policy file with no events at all, named rather than skipped silently
    policy.write_text("models:\n  - name: small\n  - name: big\n  - name: idle\n", encoding="utf-8")
    kafka = [
        "--bootstrap-servers",
        broker.bootstrap,
        "--topic",
        settings.kafka_requests_topic,
        "--metrics-topic",
        settings.kafka_metrics_topic,
    ]
    window = ["--since", "2025-11-30T00:30:00Z", "--until", str(UNTIL)]
    common = ["--policy", str(policy), "--baselines", "hpa", "--no-progress", *window]
    capsys.readouterr()

    assert (
        cli.main(["simulate", "--from-kafka", *kafka, *common, "--json", str(tmp_path / "kafka.json")]) == 0
    )
    out, err = capsys.readouterr()
    assert (
        f"{settings.kafka_requests_topic}[" in err
    )  # the truncated record, named by topic[partition]@offset
    assert "not_json" in err
    assert out.count("as run") == 2  # a table per model, each with the recorded cluster's row
    assert "for idle: not simulated" in err
    assert '"event": "replay_models_without_events"' in err

    exported = tmp_path / "range.jsonl"
    assert cli.main(["export", *kafka, *window, "--out", str(exported)]) == 0
    assert "1 bad left out" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "simulate",
                "--trace",
                str(exported),
                "--trace-format",
                "events",
                *common,
                "--json",
                str(tmp_path / "file.json"),
            ]
        )
        == 0
    )
    assert "for idle: not simulated" in capsys.readouterr().err

    from_kafka = json.loads((tmp_path / "kafka.json").read_text())
    from_file = json.loads((tmp_path / "file.json").read_text())
    assert set(from_kafka["models"]) == {"small", "big"}
    for model, doc in from_kafka["models"].items():
        assert doc["policies"][0]["requests"] == expected[model]  # every arrival in range, none outside
        assert [row["policy"] for row in doc["policies"]] == ["spillway", "hpa"]
        assert doc["as_run"]["cost"]["replicas"] > 0
    assert from_kafka == from_file
    assert asyncio.run(committed(settings, list(before))) == before

    later = ["--since", str(DAY0 + 86400), "--until", str(DAY0 + 2 * 86400)]  # after the stream: nothing
    nothing = tmp_path / "nothing.jsonl"
    assert cli.main(["export", *kafka, *later, "--out", str(nothing)]) == 1
    assert "error: no events from" in capsys.readouterr().err
    assert not nothing.exists()
    assert cli.main(["simulate", "--from-kafka", *kafka, *later, "--policy", str(policy)]) == 1
    assert "no arrival events of small, big, idle from 2025-12-01T00:00:00Z" in capsys.readouterr().err


def test_a_topic_that_does_not_exist_is_a_one_line_error(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    window = ["--since", "2025-11-30T00:30:00Z", "--until", str(UNTIL)]
    missing = [
        "--bootstrap-servers",
        broker.bootstrap,
        "--topic",
        "no.such.topic",
        "--metrics-topic",
        "none.either",
    ]
    assert cli.main(["export", *missing, *window, "--out", str(tmp_path / "x.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert "topic 'no.such.topic' does not exist" in err
    assert "Traceback" not in err
