"""Fixtures of the fault suite: a tansu broker on durable storage, and the checks every fault test makes.

Durable storage is tansu's S3 engine on a real moto server (both started by PID on loopback, both
stopped by PID): killing and restarting the broker keeps topics, records and the group's offsets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaProducer
from conftest import Broker, free_port, tansu_binary, wait_for_tcp
from integration_fixtures import read_topic, request_event

from tests.adapters.actuator_fixtures import Process, start_moto

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any key
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class DurableBroker(Broker):
    """A tansu broker whose storage is a bucket on a moto S3 server: a restart loses nothing."""

    def __init__(self, *, moto: Process, port: int) -> None:
        super().__init__(binary=tansu_binary(), port=port)
        self.moto = moto

    def start(self) -> None:
        """Start the broker on the bucket and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, **AWS_ENV, "AWS_ENDPOINT": self.moto.url, "AWS_ALLOW_HTTP": "true"}
        self.process = subprocess.Popen(  # fixed binary, fixed arguments
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "s3://tansu/",
                "--silent",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_tcp(self.port)


@pytest.fixture
def durable_broker() -> Iterator[DurableBroker]:
    """A tansu broker on S3 storage (moto) of this test alone."""
    moto = start_moto(free_port())
    try:
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", **_keys())
        s3.create_bucket(Bucket="tansu")
        broker = DurableBroker(moto=moto, port=free_port())
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        moto.stop()


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def decisions(bootstrap: str, topic: str, *, seconds: float = 3.0) -> list[dict[str, Any]]:
    """Return every decision on ``topic``, in log order per partition (a model's decisions are in order)."""
    records = asyncio.run(read_topic(bootstrap, topic, at_least=10**9, seconds=seconds))
    records.sort(key=lambda r: (r.partition, r.offset))
    return [json.loads(r.value) for r in records]


def twice_decided(found: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Return (model, at) of each decision that repeats or goes back in time for its model.

    One decider per model publishes its decisions at strictly increasing times; a second decider
    for the same model (a zombie after a restart or a rebalance) shows up as a repeat or a step back.
    A record identical to the model's previous one is the producer's retry of a send a broker crash
    cut short (at-least-once: tansu has no idempotent producer), not a second decision: left out.
    """
    last: dict[str, float] = {}
    previous: dict[str, dict[str, Any]] = {}
    bad = []
    for d in found:
        model, at = d["model"], float(d["at"])
        if previous.get(model) == d:
            continue
        if model in last and at <= last[model]:
            bad.append((model, at))
        last[model] = max(at, last.get(model, at))
        previous[model] = d
    return bad


def beyond_bounds(found: list[dict[str, Any]], bounds: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Return the decisions whose desired replicas fall outside their model's (min, max)."""
    return [
        d for d in found if not bounds[d["model"]][0] <= d["desired"]["replicas"] <= bounds[d["model"]][1]
    ]


def per_model(found: list[dict[str, Any]]) -> dict[str, int]:
    """Return how many decisions each model has."""
    return dict(collections.Counter(d["model"] for d in found))


def fault_policy(models: list[str], *, max_replicas: int = 4) -> str:
    """Return a policy file for ``models``: 1 s intervals and buckets, 1..max_replicas replicas."""
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            "    replica: {max_concurrency: 2}",
            f"    bounds: {{min_replicas: 1, max_replicas: {max_replicas}, max_standby: 1}}",
            "    behavior: {interval_seconds: 1}",
            "    forecast: {bucket_seconds: 1, horizon_seconds: 30, seasonalities_seconds: [60]}",
        ]
    return "\n".join(lines) + "\n"


class Traffic:
    """Valid arrival events for ``models`` at ``rate`` per second each, from a thread of its own.

    Sends that fail (the broker is down) are counted and dropped; ``acked`` counts what the broker
    acknowledged.
    """

    def __init__(self, bootstrap: str, topic: str, models: list[str], *, rate: float) -> None:
        self.bootstrap, self.topic, self.models, self.rate = bootstrap, topic, models, rate
        self.acked = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Traffic:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a dead broker is the point here
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        n = 0
        producer: AIOKafkaProducer | None = None
        while not self._stop.is_set():
            try:
                if producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap, linger_ms=5, request_timeout_ms=3000
                    )
                    await asyncio.wait_for(producer.start(), 5)
                now = time.time()
                batch = [
                    (m, request_event(m, now, n + k))
                    for m in self.models
                    for k in range(max(1, int(self.rate / 10)))
                ]
                futures = [await producer.send(self.topic, value=v, key=m.encode()) for m, v in batch]
                await asyncio.wait_for(asyncio.gather(*futures), 5)
                self.acked += len(batch)
                n += len(batch)
            except Exception:  # the broker is down or slow: count it, start over
                self.failed += 1
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), 5)
                producer = None
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.1)
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


def close_ticks(found: list[dict[str, Any]], *, min_gap: float = 0.5) -> list[tuple[str, float, float]]:
    """Return (model, at, gap) of each tick decision less than ``min_gap`` s after its model's last tick.

    One decider ticks a model once per interval (1 s in these policies); two deciders for one
    model (both believing they own it) tick it twice per interval.
    """
    last: dict[str, float] = {}
    bad = []
    for d in sorted(found, key=lambda d: float(d["at"])):
        if d.get("trigger") != "tick":
            continue
        model, at = d["model"], float(d["at"])
        if model in last and at - last[model] < min_gap:
            bad.append((model, at, round(at - last[model], 3)))
        last[model] = at
    return bad
