"""Scale benchmark: one process owning 10,000 models (prints figures; not a test).

The daemon's own :class:`~scaler.runtime.Runtime` and :class:`~scaler.executor.Executor` (default
policies, the real planner and forecaster, every decision logged at info as JSON to /dev/null and
published to an in-memory sink, metrics exported) are fed directly, without a broker: each tick of
``--tick`` virtual seconds ingests that tick's request events of every model (JSON records, as they
come off the wire, each model ``--rate`` events/s) and decides what is due, as ``Daemon._consume``
(ingest, then the fed models) and ``Daemon._tick`` (the models whose interval is up) do.

Virtual time runs as fast as the CPU allows. "CPU share" is CPU seconds used per virtual second:
the share of one core the process needs to keep up in real time (below 1: every model is decided
within its interval, with the rest to spare). Every model's gap between tick decisions is checked
against its interval.

Then, unless ``--breakdown 0``, runtimes of half ``--breakdown`` and of ``--breakdown`` models run 150
virtual seconds each under tracemalloc, and the bytes still allocated per model added are listed by
owner (the module that allocated them; the forecaster's arrays by attribute).

    .venv/bin/python bench/scale.py [--models 10000] [--seconds 300] [--rate 1] [--tick 0.25]
                                    [--breakdown 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import linecache
import os
import re
import statistics
import sys
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.adapters.metrics import DaemonMetrics
from scaler.app import SystemClock
from scaler.core import plan as scaler_plan
from scaler.core.policy import ModelPolicy
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import RawRecord
from scaler.runtime import Runtime, RuntimeOptions, settle_collector

T0 = 1_750_000_020.0  # a multiple of 60: virtual time starts on a bucket boundary
TOPIC = "llm.requests"


class RecordingSink:
    """Keeps, per model, the virtual times its tick decisions were published at."""

    def __init__(self) -> None:
        self.now = T0
        self.ticks: dict[str, list[float]] = {}
        self.published = 0

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        self.published += 1
        if payload.get("trigger") == "tick":
            self.ticks.setdefault(model, []).append(self.now)

    async def dead_letter(self, *, record: object, reason: str, detail: str) -> None:
        raise AssertionError(f"a bench event was rejected: {reason}: {detail}")

    async def flush(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def rss_mib() -> float:
    """Return this process's resident set size in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tick_records(
    names: list[bytes], *, start: float, tick: float, rate: float, n: int, finish_after: float = 0.0
) -> list[RawRecord]:
    """Return the request events of all models in ``[start, start + tick)``, ``rate`` arrivals a second each.

    Model k's arrivals fall at times k/len + j/rate, so each tick carries about len * rate * tick of them;
    with ``finish_after`` > 0 each arrival's finish event follows it that many seconds later.
    """
    records: list[RawRecord] = []
    count = len(names)
    period = 1.0 / rate
    kinds = [(b"arrival", 0.0)] + ([(b"finish", finish_after)] if finish_after > 0 else [])
    for k, name in enumerate(names):
        for kind, delay in kinds:
            first = (k / count) * period + delay
            # the events of this model inside the tick: first + j * period in [start - T0, start - T0 + tick)
            j = max(0, int(-(-(start - T0 - first) // period)))
            ts = T0 + first + j * period
            while ts < start + tick:
                value = (
                    b'{"model":"%b","ts":%.4f,"type":"%b","request_id":"r%d-%d","prompt_tokens":%d,"output_tokens":%d}'
                    % (name, ts, kind, k, j, 200 + k % 800, 0 if delay == 0.0 else 150)
                )
                records.append(RawRecord(TOPIC, 0, n, name, value))
                n += 1
                j += 1
                ts += period
    return records


def build(models: list[str]) -> tuple[Runtime, RecordingSink]:
    """Return a runtime (default policies, metrics, an executor publishing to a sink) and its sink."""
    sink = RecordingSink()
    metrics = DaemonMetrics()
    runtime = Runtime(
        policies={m: ModelPolicy(name=m) for m in models},
        executor=Executor(sink=sink, actuators=None, metrics=metrics, clock=SystemClock()),
        planner=scaler_plan.plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=RuntimeOptions(),
    )
    return runtime, sink


_ATTRIBUTE = re.compile(r"self\.(\w+)\s*(?::[^=]*)?=[^=]")  # a line assigning an attribute
_DELEGATE = ("numpy", "numba", "llvmlite")  # allocations made for their caller: counted to it


def _owner(traceback: tracemalloc.Traceback) -> str:
    """Return who made one allocation: a scaler module (``forecast.models:hist`` for an array) or a library.

    The innermost frame names it, unless that is numpy or numba: then the innermost frame outside them.
    """
    for frame in reversed(traceback):  # oldest to most recent: innermost last
        parts = Path(frame.filename).parts
        if "site-packages" in parts:
            library = parts[parts.index("site-packages") + 1].split(".")[0]
            if library in _DELEGATE:
                continue
            return library
        if "scaler" in parts:
            module = ".".join(parts[len(parts) - parts[::-1].index("scaler") :]).removesuffix(".py")
            assigned = _ATTRIBUTE.match(linecache.getline(frame.filename, frame.lineno).strip())
            return f"{module}:{assigned.group(1)}" if module == "forecast.models" and assigned else module
        return Path(frame.filename).name
    return "?"


async def _sample(models: int, *, tick: float, rate: float, finish_after: float) -> dict[str, int]:
    """Return the bytes still allocated, by owner, by a runtime of ``models`` after 150 virtual seconds."""
    names = [f"sample-{models}-{i:05d}" for i in range(models)]
    tracemalloc.start(16)
    runtime, sink = build(names)
    runtime.assign(frozenset(names), checkpoints={}, now=T0)
    encoded = [m.encode() for m in names]
    n = 0
    for step in range(round(150.0 / tick)):
        start = T0 + step * tick
        now = sink.now = start + tick
        records = tick_records(encoded, start=start, tick=tick, rate=rate, n=n, finish_after=finish_after)
        n += len(records)
        runtime.ingest(records, now=now)
        for model, trigger in runtime.due(now=now, fed=True) + runtime.due(now=now):
            runtime.decide(model, trigger=trigger, now=now)
        await runtime.executor.idle()
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    owners: dict[str, int] = {}
    for trace in snapshot.traces:
        owner = _owner(trace.traceback)
        owners[owner] = owners.get(owner, 0) + trace.size
    del runtime, sink
    return owners


async def breakdown(models: int, *, tick: float, rate: float, finish_after: float) -> None:
    """Print the bytes per model still allocated after 150 virtual seconds, by owner (tracemalloc).

    Per model: the growth from a runtime of ``models // 2`` to one of ``models``, divided by the
    models added, so what the process allocates once (caches, compiled code) is not counted.
    """
    half = await _sample(models // 2, tick=tick, rate=rate, finish_after=finish_after)
    full = await _sample(models, tick=tick, rate=rate, finish_after=finish_after)
    added = models - models // 2
    per = {k: (full.get(k, 0) - half.get(k, 0)) / added for k in full.keys() | half.keys()}
    print(f"per-model bytes by owner (tracemalloc, 150 virtual s): {sum(per.values()) / 1024:.1f} KiB")
    for owner, size in sorted(per.items(), key=lambda kv: -kv[1]):
        if abs(size) >= 100:
            print(f"  {owner:<36} {size / 1024:>7.2f} KiB")


async def run(args: argparse.Namespace) -> None:  # one timeline, read top to bottom
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    warm = DemandForecaster.from_policy(ModelPolicy(name="warm"))  # numba kernels loaded before timing
    for k in range(4):
        warm.observe(bucket_start=k * 60.0, requests=1, prompt_tokens=1, output_tokens=1)
    warm.forecast(now=240.0)
    settle_collector()  # as the daemon does when it starts consuming (scaler.app)
    before = rss_mib()
    models = [f"model-{i:05d}" for i in range(args.models)]
    runtime, sink = build(models)
    started = time.perf_counter()
    runtime.assign(frozenset(models), checkpoints={}, now=T0)
    assign_s = time.perf_counter() - started
    assigned = rss_mib()
    names = [m.encode() for m in models]
    ticks = round(args.seconds / args.tick)
    wall: list[float] = []
    tick_cpu: list[float] = []
    cpu_used = ingest_cpu = decide_cpu = 0.0
    decisions = events = bursts = 0
    n = 0
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} ticks"),
        TimeRemainingColumn(), transient=True, disable=not sys.stderr.isatty(),
    ) as progress:  # fmt: skip
        bar = progress.add_task(f"{args.models:,} models", total=ticks)
        for step in range(ticks):
            start = T0 + step * args.tick
            now = start + args.tick  # the tick's events have all arrived
            records = tick_records(
                names, start=start, tick=args.tick, rate=args.rate, n=n, finish_after=args.finish_after
            )
            n += len(records)
            sink.now = now
            t_wall, t_cpu = time.perf_counter(), time.process_time()
            assert runtime.ingest(records, now=now) == []
            t_ingested = time.process_time()
            due = runtime.due(now=now, fed=True) + runtime.due(now=now)  # as _consume, then _tick
            for model, trigger in due:
                runtime.decide(model, trigger=trigger, now=now)
            decide_cpu += time.process_time() - t_ingested
            ingest_cpu += t_ingested - t_cpu
            await runtime.executor.idle()  # the executor's tasks publish
            wall.append(time.perf_counter() - t_wall)
            tick_cpu.append(time.process_time() - t_cpu)
            cpu_used += tick_cpu[-1]
            decisions += len(due)
            bursts += sum(1 for _, trigger in due if trigger == "burst")
            events += len(records)
            progress.advance(bar)
    virtual = ticks * args.tick
    interval = ModelPolicy(name="x").behavior.interval_seconds
    gaps = [b - a for times in sink.ticks.values() for a, b in itertools.pairwise(times)]
    first = [times[0] - T0 for times in sink.ticks.values()]
    undecided = args.models - len(sink.ticks)
    wall.sort()
    tick_cpu.sort()
    p99 = wall[min(len(wall) - 1, round(0.99 * (len(wall) - 1)))]
    cpu_p99 = tick_cpu[min(len(tick_cpu) - 1, round(0.99 * (len(tick_cpu) - 1)))]
    print(f"# bench/scale.py  ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"models owned            {args.models:>10,}   (default policies: {interval:g} s interval)")
    print(f"virtual time            {virtual:>10,.0f} s, ticks of {args.tick:g} s; runtime fed directly")
    print(f"events ingested         {events:>10,}   ({events / virtual:,.0f}/s)")
    print(f"decisions               {decisions:>10,}   ({decisions / virtual:,.0f}/s; {bursts:,} bursts)")
    p50 = statistics.median(wall)
    p99_ms, max_ms = p99 * 1e3, wall[-1] * 1e3
    print(f"tick duration (wall)    p50 {p50 * 1e3:7.1f} ms   p99 {p99_ms:7.1f} ms   max {max_ms:7.1f} ms")
    cpu_p50, cpu_p99, cpu_max = statistics.median(tick_cpu) * 1e3, cpu_p99 * 1e3, tick_cpu[-1] * 1e3
    print(f"tick duration (CPU)     p50 {cpu_p50:7.1f} ms   p99 {cpu_p99:7.1f} ms   max {cpu_max:7.1f} ms")
    print(f"CPU share of one core   {cpu_used / virtual:>10.2f}   (< 1: keeps up in real time)")
    print(f"  ingest                {ingest_cpu / max(events, 1) * 1e6:>10.2f} us CPU per event")
    print(f"  decide, log, export   {decide_cpu / max(decisions, 1) * 1e6:>10.0f} us CPU per decision")
    print(f"  decisions per CPU-s   {decisions / max(decide_cpu, 1e-9):>10,.0f}")
    print(f"first tick decision     max {max(first):.2f} s after assignment; undecided: {undecided}")
    print(f"tick decisions' gaps   max {max(gaps):.2f} s (interval {interval:g} s + one tick)")
    print(f"assign                  {assign_s:>10.2f} s")
    grown = rss_mib() - before
    sample = runtime.owned[models[0]].forecaster
    arrays = {k: v.nbytes for k, v in vars(sample).items() if hasattr(v, "nbytes")}
    biggest = ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(arrays.items(), key=lambda kv: -kv[1])[:3])
    print(f"RSS                     {rss_mib():>10,.0f} MiB   (target < 1024)")
    print(f"  models' share         +{assigned - before:,.0f} MiB at assignment, +{grown:,.0f} MiB at end")
    print(f"  forecaster arrays     {sum(arrays.values()) / 1024:>10,.0f} KiB per model ({biggest} KiB)")
    if args.breakdown:
        await breakdown(args.breakdown, tick=args.tick, rate=args.rate, finish_after=args.finish_after)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0, help="virtual seconds to run")
    parser.add_argument("--rate", type=float, default=1.0, help="request events per second per model")
    parser.add_argument("--tick", type=float, default=0.25, help="virtual s a tick (burst_check_seconds)")
    parser.add_argument(
        "--finish-after",
        type=float,
        default=0.0,
        help="s from each arrival to its finish event (0: none; the ledger then holds every arrival 600 s)",
    )
    parser.add_argument(
        "--breakdown", type=int, default=200, help="models of the per-owner byte count (0: skip it)"
    )
    args = parser.parse_args()
    import structlog  # noqa: PLC0415

    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415

    scaler_logging.configure(level="info")  # every decision is logged, as in the daemon
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(open(os.devnull, "w")))  # noqa: SIM115
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
