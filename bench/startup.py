"""Start-up benchmark: seconds from process start to the first forecast-based decision (prints figures).

Each run spawns a fresh Python process that imports what ``scaler run`` imports (the Kafka daemon's
wiring, aiokafka, the forecaster), builds the daemon's Runtime and Executor for one model with the
default policy, seeds its forecaster with two hours of history (as Prometheus seeding does) and
makes one decision. Timed from just before the spawn, in two states of numba's on-disk cache:

* cold: ``NUMBA_CACHE_DIR`` is a new, empty directory: every kernel compiles on its first call
  (a pod without the baked cache);
* warm: the directory a cold run filled (what the image bakes in at build time).

No broker: a real daemon adds its Kafka group join on top (see the README's image figures).

    .venv/bin/python bench/startup.py [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time, json
t0 = float(sys.argv[1])
import asyncio
import numpy as np
from scaler.app import SystemClock, build_kafka_daemon  # what `scaler run` imports
from scaler.adapters import kafka  # aiokafka
from scaler.adapters.metrics import DaemonMetrics
from scaler.core import plan
from scaler.core.policy import ModelPolicy
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.runtime import Runtime, RuntimeOptions
imported = time.time()

class Sink:
    async def publish(self, *, model, payload): pass
    async def dead_letter(self, *, record, reason, detail): pass
    async def flush(self): pass
    async def start(self): pass
    async def stop(self): pass

async def main():
    metrics = DaemonMetrics()
    policy = ModelPolicy(name="m")
    runtime = Runtime(
        policies={"m": policy},
        executor=Executor(sink=Sink(), actuators=None, metrics=metrics, clock=SystemClock()),
        planner=plan.plan, new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes, metrics=metrics, options=RuntimeOptions(),
    )
    now = time.time()
    bucket = policy.forecast.bucket_seconds
    start = (now // bucket - 120) * bucket
    requests = np.random.default_rng(0).poisson(30.0 * bucket, 120).astype(float)
    runtime.assign(frozenset({"m"}), checkpoints={}, now=now)
    runtime.seed("m", start=start, requests=requests, prompt_tokens=requests * 300,
                 output_tokens=requests * 80)
    runtime.decide("m", trigger="tick", now=now)
    await runtime.executor.idle()
    return runtime.owned["m"].forecaster.forecast(now=now).valid

valid = asyncio.run(main())
print(json.dumps({"imports": imported - t0, "decision": time.time() - t0, "forecast_based": valid}))
"""


def spawn(cache: Path) -> dict[str, float]:
    """Return seconds from spawn to imports done and to the first decision, with ``cache`` as numba's."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(started)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if not result.get("forecast_based"):
        raise SystemExit(f"the first decision was not forecast-based: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="spillway-startup-") as tmp:
        for k in range(args.runs):  # interleaved: cold fills a new cache, warm reads it
            cache = Path(tmp) / f"cache-{k}"
            cold.append(spawn(cache))
            warm.append(spawn(cache))
    load = os.getloadavg()[0]
    print(f"# bench/startup.py  ({os.cpu_count()} CPUs, load average {load:.1f}; {args.runs} runs)")
    print("process start ->          imports done          first forecast-based decision")
    for name, runs in (("cold numba cache", cold), ("warm numba cache", warm)):
        imports = sorted(r["imports"] for r in runs)
        decided = sorted(r["decision"] for r in runs)
        print(
            f"{name:<24} {statistics.median(imports):5.2f} s ({imports[0]:.2f}-{imports[-1]:.2f})"
            f"     {statistics.median(decided):5.2f} s ({decided[0]:.2f}-{decided[-1]:.2f})"
            f"   target < 2 s"
        )


if __name__ == "__main__":
    main()
