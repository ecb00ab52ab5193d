"""Hostile input against a real ``scaler run`` process and the real tansu broker: a 900 KB event ends as a
dead letter that arrives, and the issue's alert flood leaves every decision small enough to publish."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from conftest import Broker, free_port, wait_for_tcp
from integration_fixtures import kafka_settings, policy_yaml, produce, read_topic, request_event, settings_env

from scaler.adapters import kafka
from scaler.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "flood-test-token"  # test token
MODEL = "llama"


class Scaler:
    """A ``scaler run`` subprocess on the shared broker, with its settings and HTTP base URL."""

    def __init__(self, *, settings: Settings, process: subprocess.Popen[bytes], port: int) -> None:
        self.settings = settings
        self.process = process
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def daemon(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scaler]:
    """Start ``scaler run`` (dry run, alerts token set) and wait until it is ready; stop it by its PID."""
    policy = tmp_path_factory.mktemp("hostile") / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    port = free_port()
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), http_listen=f"127.0.0.1:{port}")
    env = {**os.environ, **settings_env(settings), "SCALER_DRY_RUN": "true", "SCALER_ALERTS_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_tcp(port, timeout=60)
        asyncio.run(_ready(f"http://127.0.0.1:{port}"))
        yield Scaler(settings=settings, process=process, port=port)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


async def _ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("scaler run never became ready")


def test_a_900_kb_event_is_dead_lettered_with_its_size_and_hash(broker: Broker, daemon: Scaler) -> None:
    original = b'{"model": "llama", "pad": "' + b"x" * 900_000 + b'"}'
    topic = daemon.settings.kafka_requests_topic

    async def run() -> list[object]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=2_000_000)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value=original, key=MODEL.encode())
        finally:
            await producer.stop()
        return await read_topic(
            broker.bootstrap, daemon.settings.kafka_deadletter_topic, at_least=1, seconds=30
        )

    letters = asyncio.run(run())
    assert letters, "no dead letter arrived"
    letter = json.loads(letters[0].value)  # type: ignore[attr-defined]
    assert letter["reason"] == "too_large"
    assert letter["topic"] == topic
    assert letter["value_bytes"] == len(original)
    assert letter["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert letter["value_truncated"] is True
    assert base64.b64decode(letter["value"]) == original[: kafka.DEAD_LETTER_VALUE_BYTES]
    assert daemon.process.poll() is None  # still running


def _flood_post(post: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": f"Flood{post}-{i}-" + "N" * 900,
                "spillway_action": "boost",
                "model": MODEL,
            },
            "annotations": {},
            "startsAt": "2026-12-01T20:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"flood-{post}-{i}",
        }
        for i in range(220)
    ]
    return json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()


def test_the_issues_alert_flood_leaves_decisions_small_and_published(broker: Broker, daemon: Scaler) -> None:
    posts = [_flood_post(post) for post in range(8)]
    assert all(200_000 < len(body) < 262_144 for body in posts)  # each under the 256 KiB body limit
    settings = daemon.settings

    async def run() -> tuple[list[int], list[int], list[object], str]:
        statuses, active = [], []
        async with aiohttp.ClientSession() as http:
            for body in posts:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with http.post(f"{daemon.base}/alerts", data=body, headers=headers) as r:
                    statuses.append(r.status)
                    active.append(len((await r.json())["active"]))
            flooded_at = time.time()
            await produce(
                broker.bootstrap,
                settings.kafka_requests_topic,
                [(MODEL, request_event(MODEL, flooded_at, 1))],
            )
            deadline = time.monotonic() + 30
            after: list[object] = []
            while time.monotonic() < deadline and not after:
                records = await read_topic(
                    broker.bootstrap, settings.kafka_decisions_topic, at_least=10**9, seconds=1
                )
                after = [r for r in records if "[overrides:" in json.loads(r.value)["reason"]]  # type: ignore[attr-defined]
            async with http.get(f"{daemon.base}/metrics") as r:
                exposition = await r.text()
        return statuses, active, after, exposition

    statuses, active, flooded, exposition = asyncio.run(run())
    assert statuses == [200] * 8
    assert max(active) == 16  # the per-model cap; the issue had 1,760 overrides in force
    assert flooded, "no decision naming the overrides was published"
    sizes = [len(r.value) for r in flooded]  # type: ignore[attr-defined]
    print(f"decisions published under the flood: {len(sizes)}, largest {max(sizes)} bytes")
    assert max(sizes) < 4096  # the issue's decisions were 1.8 MB, over the producer's 1 MB limit
    reason = json.loads(flooded[-1].value)["reason"]  # type: ignore[attr-defined]
    assert reason.endswith(" more]")
    assert 'scaler_alert_overrides_refused_total{reason="max_overrides_per_model"} 1744.0' in exposition
    assert daemon.process.poll() is None
