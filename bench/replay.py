"""Replay reader benchmark: how fast an events file becomes workloads, and how fast a sparse file is refused.

Writes a temporary JSON-lines file of request events (arrival, first_token, finish per request, for two
models) and replica metric events, then times :func:`scaler.sim.events_trace.load_events` over it
(median of the runs, with the fastest and slowest) and prints events/s, by wall clock and per CPU
second (the second is the figure to compare on a shared machine). Then creates a sparse file of
``--sparse-gb`` GB (all NUL bytes, no disk used) and times its refusal.

    .venv/bin/python bench/replay.py [--requests 200000] [--runs 3] [--sparse-gb 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.sim import events_trace
from scaler.sim.traces import TraceError

T0 = 1_764_460_800.0
MODELS = ("small", "big")


def write_events(path: Path, *, requests: int, seed: int = 0) -> int:
    """Write ``requests`` requests (3 events each) spread over a day, plus replica metrics; return lines."""
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0.0, 86400.0, requests))
    lines = 0
    with path.open("w", encoding="utf-8") as out:
        for i, t in enumerate(arrivals):
            model = MODELS[i % 2]
            base = {"model": model, "request_id": f"r{i}", "prompt_tokens": int(rng.integers(100, 2000))}
            for dt, kind, output in ((0.0, "arrival", 0), (0.3, "first_token", 0), (3.0, "finish", 200)):
                event = {**base, "ts": T0 + t + dt, "type": kind, "output_tokens": output}
                out.write(json.dumps(event) + "\n")
                lines += 1
        for s in range(0, 86400, 30):
            for model in MODELS:
                for r in range(4):
                    metric = {
                        "model": model,
                        "ts": T0 + s,
                        "replica": f"{model}-{r}",
                        "waiting": 0,
                        "running": 3,
                        "kv_cache_usage": 0.2,
                        "ready": True,
                    }
                    out.write(json.dumps(metric) + "\n")
                    lines += 1
    return lines


def main() -> None:
    """Parse flags, run both measurements and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sparse-gb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        lines = write_events(path, requests=args.requests)
        size = path.stat().st_size
        times, cpu = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            replay = events_trace.load_events(path, known_models=MODELS)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        median, median_cpu = statistics.median(times), statistics.median(cpu)
        arrivals = sum(m.workload.requests for m in replay.models.values())
        print(f"events file: {lines:,} lines, {size / 2**20:.0f} MiB, {arrivals:,} arrivals, 2 models")
        print(
            f"load_events: median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}) over "
            f"{args.runs} runs = {lines / median:,.0f} events/s, {size / 2**20 / median:.0f} MiB/s"
        )
        print(f"load_events CPU: median {median_cpu:.2f} s = {lines / median_cpu:,.0f} events per CPU-second")
        sparse = Path(tmp) / "sparse.jsonl"
        with sparse.open("wb") as f:
            f.truncate(int(args.sparse_gb * 2**30))
        start = time.perf_counter()
        try:
            events_trace.load_events(sparse, known_models=MODELS)
        except TraceError as exc:
            elapsed = time.perf_counter() - start
            print(f"sparse {args.sparse_gb:g} GB file refused in {elapsed * 1000:.1f} ms: {exc}")
        else:
            print("sparse file NOT refused")


if __name__ == "__main__":
    main()
