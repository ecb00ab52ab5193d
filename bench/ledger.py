"""What the shadow ledger costs the daemon (prints figures; not a test).

All times are CPU time of this process (the machine may be shared).

1. ``Runtime.ingest`` in process on request events of 16 models (each request an arrival, a first
   token and a finish), with the ledger as shipped and with ``Ledger.add_request`` made a no-op:
   events/s and the difference per event.
2. ``Ledger.add_request`` alone, per event.
3. Memory of the open-request books: bytes per request awaiting its first token.
4. A decision's ledger work: ``close_interval`` (pricing, expiry, interval totals).

    .venv/bin/python bench/ledger.py [--requests 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.app import SystemClock
from scaler.control.ledger import Ledger
from scaler.core.events import RequestEvent, decode_request, encode_request
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import RawRecord
from scaler.runtime import Runtime, RuntimeOptions

MODELS = [f"m{i:02d}" for i in range(16)]
POLICIES = {m: ModelPolicy.model_validate({"name": m}) for m in MODELS}


def _events(requests: int, start: float) -> list[RequestEvent]:
    """Return an arrival, a first token and a finish per request, all in the bucket from ``start``."""
    out = []
    for i in range(requests):
        model = MODELS[i % len(MODELS)]
        ts = start + 1.0 + i * 1e-6
        rid = f"req-{i}"
        out.append(RequestEvent(model, ts, "arrival", rid, 1000, 0))
        out.append(RequestEvent(model, ts + 0.3, "first_token", rid, 1000, 0, "kubernetes"))
        out.append(
            RequestEvent(model, ts + 0.9, "finish", rid, 1000, 200, "serverless" if i % 5 == 0 else None)
        )
    return out


def _runtime(now: float) -> Runtime:
    metrics = DaemonMetrics()
    executor = Executor(sink=MemorySink(), actuators=None, metrics=metrics, clock=SystemClock())
    runtime = Runtime(
        policies=POLICIES,
        executor=executor,
        planner=plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=RuntimeOptions(),
    )
    runtime.assign(frozenset(MODELS), checkpoints={}, now=now)  # counting starts at the bucket from ``now``
    return runtime


def _ingest_seconds(records: list[list[RawRecord]], start: float) -> float:
    """Return the seconds a fresh runtime takes to ingest ``records`` (every one aggregated)."""
    runtime = _runtime(start)
    started = time.process_time()
    for batch in records:
        runtime.ingest(batch, now=start + 2.0)
    elapsed = time.process_time() - started
    dropped = runtime.metrics.registry.get_sample_value(
        "scaler_events_dropped_total", {"why": "late_or_early"}
    )
    assert not dropped, f"{dropped} events dropped: the benchmark would measure the wrong path"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bucket = POLICIES[MODELS[0]].forecast.bucket_seconds
    start = math.floor(time.time() / bucket) * bucket  # a bucket boundary: the runtime counts from here
    now = start + 2.0
    events = _events(args.requests, start)
    raw = [RawRecord("llm.requests", 0, i, e.model.encode(), encode_request(e)) for i, e in enumerate(events)]
    batches = [raw[i : i + 500] for i in range(0, len(raw), 500)]
    size = f"{args.requests:,} requests = {len(raw):,} events, 16 models"
    print(f"# bench/ledger.py  ({size}, best of {args.repeats})")

    asyncio.set_event_loop(asyncio.new_event_loop())
    original = Ledger.add_request
    on: list[float] = []
    off: list[float] = []
    for _ in range(args.repeats):  # in pairs, so a change in the machine's load hits both alike
        on.append(_ingest_seconds(batches, start) / len(raw))
        Ledger.add_request = lambda self, event, policy: None  # type: ignore[method-assign]
        try:
            off.append(_ingest_seconds(batches, start) / len(raw))
        finally:
            Ledger.add_request = original  # type: ignore[method-assign]
    paired = statistics.median(a - b for a, b in zip(on, off, strict=True))
    print(f"Runtime.ingest, ledger on    {1 / min(on):>12,.0f} events/s (best), {min(on) * 1e6:.2f} µs/event")
    print(
        f"Runtime.ingest, ledger off   {1 / min(off):>12,.0f} events/s (best), {min(off) * 1e6:.2f} µs/event"
    )
    print(f"ledger cost per event        {paired * 1e6:>12.2f} µs (median of {args.repeats} pairs)")

    policy = POLICIES[MODELS[0]]
    times = []
    for _ in range(args.repeats):
        ledger = Ledger()
        started = time.process_time()
        for event in events:
            ledger.add_request(event, policy)
        times.append((time.process_time() - started) / len(events))
    median = statistics.median(times) * 1e6
    print(f"Ledger.add_request alone     {min(times) * 1e6:>12.2f} µs/event (median {median:.2f})")

    ledger = Ledger()
    arrivals = [encode_request(e) for e in events if e.type == "arrival"][:100_000]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for data in arrivals:  # each event decoded and dropped, as in the daemon: what stays is the ledger's
        ledger.add_request(decode_request(data, known_models=POLICIES, now=now, max_skew=60.0), policy)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    each = (after - before) / len(arrivals)
    print(f"open requests: {len(arrivals):,} awaiting a first token hold {each:.0f} B each")

    capacity = Observed(
        replicas_ready=4, replicas_starting=1, standby_ready=1, standby_starting=0, serverless_provisioned=2
    )
    ledger = Ledger()
    rounds, best = 2_000, math.inf
    for r in range(args.repeats):
        started = time.process_time()
        for k in range(rounds):
            at = now + (r * rounds + k) * 10.0
            ledger.close_interval(now=at, policy=policy, capacity=capacity, predicted_per_hour=10.0)
        best = min(best, (time.process_time() - started) / rounds)
    print(f"close_interval at a decision {best * 1e6:>12.2f} µs")


if __name__ == "__main__":
    main()
