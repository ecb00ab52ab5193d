"""The vLLM bridge against real HTTP endpoints (prometheus_client exposing vLLM's metrics, both name
generations, and malformed ones), the real broker, and a daemon whose decisions follow what it scraped."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import Broker, free_port
from integration_fixtures import kafka_settings, policy_yaml, read_topic, settings_env
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from scaler.adapters.vllm import BridgeOptions, VllmBridge, counts
from scaler.app import build_kafka_daemon
from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import load_policies
from scaler.core.types import Decision, DemandForecast, Observed

pytestmark = pytest.mark.integration

MODEL = "llama-8b"


def _vllm(*, running: float, waiting: float, kv: float, old_names: bool) -> tuple[object, int]:
    """Serve one vLLM server's gauges with prometheus_client; return (server, port)."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    Gauge("vllm:num_requests_running", "Requests in the batch.", labels, registry=registry).labels(
        MODEL, "0"
    ).set(running)
    Gauge("vllm:num_requests_waiting", "Requests waiting.", labels, registry=registry).labels(MODEL, "0").set(
        waiting
    )
    kv_name = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
    Gauge(kv_name, "KV-cache usage, 0..1.", labels, registry=registry).labels(MODEL, "0").set(kv)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server, int(server.server_port)


class _Broken(http.server.BaseHTTPRequestHandler):
    """Malformed /metrics: garbage, a body over the cap, a slow answer, a NaN gauge."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        body = {
            "/garbage": b"<html><body>502 Bad Gateway</body></html>",
            "/huge": b"# padding\n" * 200_000,  # 2 MB
            "/slow": f'vllm:num_requests_running{{model_name="{MODEL}"}} 1\n'.encode(),
            "/nan": f'vllm:num_requests_running{{model_name="{MODEL}"}} NaN\n'.encode(),
        }.get(self.path, b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the bridge gave up on it
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the base class's name
        pass


class Endpoints(dict[str, str]):
    """Target URLs by name; :meth:`stop` takes one HTTP server down."""

    def __init__(self, urls: dict[str, str], servers: dict[str, object]) -> None:
        super().__init__(urls)
        self.servers = servers

    def stop(self, name: str) -> None:
        server = self.servers.pop(name)
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    new, new_port = _vllm(running=7, waiting=3, kv=0.42, old_names=False)
    old, old_port = _vllm(running=2, waiting=0, kv=0.9, old_names=True)
    broken = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    broken.daemon_threads = True
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{broken.server_port}"
    urls = {
        "new": f"http://127.0.0.1:{new_port}/metrics",
        "old": f"http://127.0.0.1:{old_port}/metrics",
        **{name: f"{base}/{name}" for name in ("garbage", "huge", "slow", "nan")},
    }
    found = Endpoints(urls, {"new": new, "old": old, "broken": broken})
    yield found
    for name in list(found.servers):
        found.stop(name)


def test_malformed_targets_are_counted_and_never_hold_up_the_others(
    endpoints: dict[str, str], tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    bridge = VllmBridge(
        targets=list(endpoints.values()),
        settings=kafka_settings("127.0.0.1:9"),
        options=BridgeOptions(interval_seconds=1, timeout_seconds=1.0, max_bytes=1024 * 1024),
        registry=registry,
    )

    async def run() -> tuple[list[object], float]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            events = await bridge.scrape_once(session, now=time.time())
            return list(events), time.monotonic() - started

    events, elapsed = asyncio.run(run())
    by_replica = {e.replica: e for e in events}  # type: ignore[attr-defined]
    new, old = (endpoints[k].split("/")[2] for k in ("new", "old"))
    assert sorted(by_replica) == sorted([new, old])
    assert (by_replica[new].running, by_replica[new].waiting, by_replica[new].kv_cache_usage) == (7, 3, 0.42)
    assert (by_replica[old].running, by_replica[old].kv_cache_usage) == (2, 0.9)
    assert counts(registry) == {
        (endpoints["garbage"], "not_exposition"): 1.0,
        (endpoints["huge"], "too_big"): 1.0,
        (endpoints["slow"], "timeout"): 1.0,
        (endpoints["nan"], "bad_value"): 1.0,
    }
    assert elapsed < 2.5  # the 3 s endpoint was cut at its 1 s timeout, concurrently with the rest
    print(f"one scrape of 6 targets (one 3 s slow, 1 s timeout): {elapsed:.2f} s")


def _ready_planner(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner that asks for one more replica than the bridge reports ready."""
    return Decision(
        at=now,
        replicas=observed.replicas_ready + 1,
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason=f"{observed.replicas_ready} ready",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={},
    )


def test_the_bridge_feeds_the_daemon_and_its_decisions_follow_the_scrapes(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=5.0)
    log = tmp_path / "bridge.log"
    bridge_port = free_port()
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaler",
            "bridge",
            "vllm",
            "--targets",
            ",".join(endpoints.values()),
            "--bootstrap-servers",
            broker.bootstrap,
            "--interval",
            "1",
            "--timeout",
            "1",
            "--max-bytes",
            str(1024 * 1024),
            "--listen",
            f"127.0.0.1:{bridge_port}",
        ],
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )

    async def run() -> tuple[list[int], int, int, list[object], str]:
        daemon = build_kafka_daemon(
            settings=settings, policies=load_policies((policy,)), planner=_ready_planner
        )
        task = asyncio.create_task(daemon.run(install_signals=False))
        replicas: list[int] = []
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and (not replicas or replicas[-1] != 3):  # 2 ready + 1
            records = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=seen + 1, seconds=5
            )
            seen = len(records)
            replicas = [json.loads(r.value)["desired"]["replicas"] for r in records]
        endpoints_down = time.monotonic()
        endpoints.stop("new")  # one vLLM server goes away: the bridge reports it not ready
        while time.monotonic() - endpoints_down < 30 and replicas[-1] != 2:
            records = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=seen + 1, seconds=5
            )
            seen = len(records)
            replicas = [json.loads(r.value)["desired"]["replicas"] for r in records]
        metrics = await read_topic(broker.bootstrap, settings.kafka_metrics_topic, at_least=4)
        consumed = int(daemon.metrics.events_consumed.labels(topic=settings.kafka_metrics_topic)._value.get())
        rejected = sum(
            int(s.value)
            for m in daemon.metrics.registry.collect()
            for s in m.samples
            if s.name == "scaler_events_rejected_total"
        )
        daemon.request_stop(signal.SIGTERM)
        await task
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bridge_port}/metrics") as r:
            exposition = await r.text()
        return replicas, consumed, rejected, metrics, exposition

    try:
        replicas, consumed, rejected, metric_records, exposition = asyncio.run(run())
    finally:
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert bridge.returncode == 0, log.read_text()[-3000:]
    assert 3 in replicas, replicas  # both vLLM servers ready
    assert replicas[-1] == 2, replicas  # one went away: the daemon saw it not ready
    assert consumed >= 4
    assert rejected == 0
    events = [json.loads(r.value) for r in metric_records]  # type: ignore[attr-defined]
    assert {e["model"] for e in events} == {MODEL}
    kv = {e["replica"]: e["kv_cache_usage"] for e in events if e["ready"]}
    assert kv[endpoints["new"].split("/")[2]] == 0.42  # vllm:kv_cache_usage_perc
    assert kv[endpoints["old"].split("/")[2]] == 0.9  # vllm:gpu_cache_usage_perc
    failed = {(e["target"], e["reason"]) for e in lines if e["event"] == "scrape_failed"}
    for name, reason in (
        ("garbage", "not_exposition"),
        ("huge", "too_big"),
        ("slow", "timeout"),
        ("nan", "bad_value"),
    ):
        assert (endpoints[name], reason) in failed
    assert (endpoints["new"], "unreachable") in failed
    counted = f'scaler_bridge_scrape_errors_total{{reason="too_big",target="{endpoints["huge"]}"}}'
    assert any(line.startswith(counted) and float(line.split()[-1]) >= 1 for line in exposition.splitlines())
    assert lines[-1]["event"] == "stopped"
    assert not math.isnan(sum(kv.values()))
