"""Helpers for integration tests against the tansu broker: per-test settings, producing, reading topics."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from scaler.adapters.actuator import Actuators
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.controller import Trigger
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, Observed
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import Clock, DecisionSink, Planner
from scaler.runtime import Runtime, RuntimeOptions
from scaler.settings import Settings
from scaler.sim.workload import Workload


def kafka_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Return settings with topics and group unique to one test, and short group timeouts."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": (bootstrap,),
        "kafka_group_id": f"g-{tag}",
        "kafka_requests_topic": f"req-{tag}",
        "kafka_metrics_topic": f"met-{tag}",
        "kafka_decisions_topic": f"dec-{tag}",
        "kafka_deadletter_topic": f"dlq-{tag}",
        "kafka_state_topic": f"state-{tag}",
        "kafka_topic_partitions": 4,
        "kafka_session_timeout_ms": 3000,
        "kafka_heartbeat_interval_ms": 500,
        "http_listen": "127.0.0.1:0",
        **overrides,
    }
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """Return SCALER_* variables that reproduce ``settings`` for a ``scaler run`` subprocess."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None or name == "kafka_sasl_password":
            continue
        if isinstance(value, tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env["SCALER_" + name.upper()] = text
    return env


async def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]]) -> list[int]:
    """Send (key, value) messages and wait for all; return the partitions they landed on."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k.encode()) for k, v in messages]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [m.partition for m in metadata]


async def read_topic(bootstrap: str, topic: str, *, at_least: int, seconds: float = 20.0) -> list[Any]:
    """Return the records of ``topic`` from the beginning once ``at_least`` arrived (or after ``seconds``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        parts: list[TopicPartition] = []
        while not parts and loop.time() < deadline:
            await consumer.topics()
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                await asyncio.sleep(0.2)
        if not parts:
            return records
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while len(records) < at_least and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def policy_yaml(models: list[str]) -> str:
    """Return a policy file for ``models`` with 1 s buckets and intervals (fast tests)."""
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            "    behavior: {interval_seconds: 1}",
            "    forecast: {bucket_seconds: 1, horizon_seconds: 30, seasonalities_seconds: [60]}",
        ]
    return "\n".join(lines) + "\n"


def request_event(model: str, ts: float, n: int) -> bytes:
    """Return the wire bytes of an arrival event."""
    return json.dumps(
        {
            "model": model,
            "ts": ts,
            "type": "arrival",
            "request_id": f"{model}-{n}",
            "prompt_tokens": 200,
            "output_tokens": 0,
        }
    ).encode()


def fake_plan(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner: one replica per 10 req/s of the forecast's mean (else of the last bucket)."""
    rate = float(forecast.rate_mean[0]) if forecast.valid else (observed.request_rate or 0.0)
    return Decision(
        at=now,
        replicas=min(policy.bounds.max_replicas, math.ceil(rate / 10)),
        standby=1,
        serverless_provisioned=2,
        spill_fraction=0.25,
        reason=f"rate {rate:.2f}/s",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={"kubernetes": 4.0},
        recent_targets=((now, 1),),
    )


class WallClock:
    """Unix time, for executors in tests that run in real time."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def make_runtime(
    policies: Mapping[str, ModelPolicy],
    *,
    sink: DecisionSink,
    planner: Planner = fake_plan,
    actuators: Actuators | None = None,
    metrics: DaemonMetrics | None = None,
    options: RuntimeOptions | None = None,
    clock: Clock | None = None,
) -> Runtime:
    """Return a runtime with the real forecaster and an executor publishing to ``sink``."""
    metrics = metrics or DaemonMetrics()
    return Runtime(
        policies=policies,
        executor=Executor(sink=sink, actuators=actuators, metrics=metrics, clock=clock or WallClock()),
        planner=planner,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=options or RuntimeOptions(),
    )


async def decide_now(
    runtime: Runtime, model: str, *, now: float, trigger: Trigger = "tick"
) -> Decision | None:
    """Decide for ``model`` at ``now`` and wait until the executor has published (and applied) it."""
    decision = runtime.decide(model, trigger=trigger, now=now)
    await runtime.executor.idle()
    return decision


def sample(metrics: DaemonMetrics, name: str, **labels: str) -> float:
    """Return the value of sample ``name`` with ``labels`` in the daemon's registry (0 when never set)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def step_stream(*, seed: int, duration: int = 1800) -> Workload:
    """Return Poisson arrivals around 8 req/s with a 5x step for two minutes at 15 min (uniform sizes)."""
    rng = np.random.default_rng(seed)
    seconds = np.arange(duration)
    rate = 8.0 + 2.0 * np.sin(seconds / 300.0) + np.where((seconds >= 900) & (seconds < 1020), 32.0, 0.0)
    counts = rng.poisson(rate)
    arrivals = np.sort(np.repeat(seconds, counts) + rng.uniform(0, 1, int(counts.sum())))
    n = arrivals.shape[0]
    return Workload(
        name="stream",
        arrivals=arrivals,
        prompt_tokens=rng.integers(50, 3000, n).astype(np.int64),
        output_tokens=rng.integers(10, 600, n).astype(np.int64),
        duration=float(duration),
    )
