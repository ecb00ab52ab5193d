"""vLLM bridge benchmark (prints figures; not a test).

1. Parse: one vLLM-sized exposition (gauges, the three counters per finished_reason, the latency
   histograms vLLM exports, 2 engines) into events and counter totals, per scrape.
2. Decode: one metric event on the daemon's hot path, without and with the four rate fields.
3. Ingest: ModelController.ingest_metric of an event without rates, and with rates covering 5 s
   (counted as demand: spread over 5 seconds of the bucket aggregator).
4. Scrape: one bridge cycle over N local prometheus_client servers (HTTP on loopback), with rates.

    .venv/bin/python bench/bridge.py [--targets 50] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.adapters.vllm import BridgeOptions, VllmBridge, read_scrape
from scaler.control.controller import ModelController
from scaler.core import events
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.forecast.models import DemandForecaster
from scaler.settings import Settings

MODEL = "llama-8b"


def vllm_registry(*, served: float) -> CollectorRegistry:
    """Return a registry shaped like one vLLM v1 server's /metrics (2 engines)."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        gauge = Gauge(name, name, labels, registry=registry)
        for engine in ("0", "1"):
            gauge.labels(MODEL, engine).set(0.5)
    success = Counter("vllm:request_success", "served", [*labels, "finished_reason"], registry=registry)
    for engine in ("0", "1"):
        for reason in ("stop", "length", "abort"):
            success.labels(MODEL, engine, reason).inc(served)
    for name in ("vllm:prompt_tokens", "vllm:generation_tokens", "vllm:num_preemptions"):
        counter = Counter(name, name, labels, registry=registry)
        for engine in ("0", "1"):
            counter.labels(MODEL, engine).inc(served * 100)
    buckets = [
        0.001,
        0.005,
        0.01,
        0.02,
        0.04,
        0.06,
        0.08,
        0.1,
        0.25,
        0.5,
        0.75,
        1,
        2.5,
        5,
        7.5,
        10,
        20,
        40,
        80,
    ]
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    ):
        histogram = Histogram(name, name, labels, buckets=buckets, registry=registry)
        for engine in ("0", "1"):
            histogram.labels(MODEL, engine).observe(0.3)
    return registry


def per_call(fn: object, repeat: int) -> float:
    """Return the median µs of ``fn()`` over 5 rounds of ``repeat`` calls."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()  # type: ignore[operator]
        rounds.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(rounds)


def _controller() -> ModelController:
    policy = ModelPolicy.model_validate({"name": MODEL})
    return ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=0.0
    )


async def scrape_cycles(targets: int) -> tuple[float, int]:
    """Return the median seconds of a bridge cycle over ``targets`` servers, and events per cycle."""
    servers = [
        start_http_server(0, addr="127.0.0.1", registry=vllm_registry(served=k))[0] for k in range(targets)
    ]
    bridge = VllmBridge(
        targets=[f"http://127.0.0.1:{s.server_port}/metrics" for s in servers],
        kafka=Settings().kafka,
        options=BridgeOptions(interval_seconds=1, timeout_seconds=5),
    )
    times, found = [], 0
    try:
        async with aiohttp.ClientSession() as session:
            for k in range(6):
                started = time.perf_counter()
                scraped = await bridge.scrape_once(session, now=1000.0 + k)
                times.append(time.perf_counter() - started)
                found = len(scraped)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    return statistics.median(times[1:]), found


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()

    text = generate_latest(vllm_registry(served=1234)).decode()
    parse_us = per_call(lambda: read_scrape(text, replica="r", now=1.0), max(args.repeat // 10, 20))
    print(f"parse one vLLM exposition ({len(text) / 1024:.1f} KiB, 2 engines): {parse_us:.0f} µs")

    plain = events.MetricEvent(
        model=MODEL, ts=1000.0, replica="vllm-0", waiting=1, running=4, kv_cache_usage=0.5, ready=True
    )
    rated = msgspec.structs.replace(
        plain, request_rate=12.5, prompt_token_rate=1250.0, output_token_rate=625.0, rate_seconds=5.0
    )
    known = {MODEL}
    for name, event in (("without rates", plain), ("with rates", rated)):
        raw = events.encode_metric(event)
        us = per_call(
            lambda raw=raw: events.decode_metric(raw, known_models=known, now=1000.0, max_skew=60),
            args.repeat,
        )
        print(f"decode one metric event {name} ({len(raw)} bytes): {us:.2f} µs")

    for name, event in (("without rates", plain), ("with rates over 5 s", rated)):
        ctl = _controller()
        state = {"ts": 100.0}

        def ingest(
            ctl: ModelController = ctl, event: events.MetricEvent = event, state: dict[str, float] = state
        ) -> None:
            state["ts"] += 0.001
            ctl.ingest_metric(msgspec.structs.replace(event, ts=state["ts"]), now=state["ts"])

        us = per_call(ingest, args.repeat)
        print(f"controller.ingest_metric {name}: {us:.2f} µs (includes one struct copy)")

    cycle, found = asyncio.run(scrape_cycles(args.targets))
    print(f"one bridge cycle over {args.targets} loopback targets: {cycle * 1000:.0f} ms, {found} events")


if __name__ == "__main__":
    main()
