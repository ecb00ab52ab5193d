"""HTTP endpoints over a real socket: liveness, readiness with its reason, the metric names SREs alert on."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from scaler.adapters.http import HttpServer
from scaler.adapters.metrics import DaemonMetrics
from scaler.core.types import Decision

REQUIRED = (
    "scaler_events_consumed_total",
    "scaler_events_rejected_total",
    "scaler_decision_latency_seconds_bucket",
    "scaler_desired_replicas",
    "scaler_desired_standby",
    "scaler_desired_serverless_instances",
    "scaler_spill_fraction",
    "scaler_consumer_lag_messages",
    "scaler_decisions_total",
    "scaler_policy_reload_errors_total",
)


def _decision() -> Decision:
    return Decision(
        at=0.0,
        replicas=3,
        standby=1,
        serverless_provisioned=2,
        spill_fraction=0.125,
        reason="r",
        bound_by="none",
        quantile=0.5,
        cost_per_hour={},
    )


def test_endpoints_answer_on_loopback_with_readiness_reason_and_metrics() -> None:
    metrics = DaemonMetrics()
    why: list[str | None] = ["waiting for the consumer group assignment"]
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: why[0])

    async def run() -> list[tuple[int, str]]:
        await server.start()
        assert server.port != 0
        base = f"http://127.0.0.1:{server.port}"
        metrics.events_consumed.labels(topic="llm.requests").inc(7)
        metrics.events_rejected.labels(reason="not_json").inc()
        metrics.decision_latency.observe(0.003)
        metrics.record_decision(model="llama", decision=_decision(), trigger="tick")
        metrics.consumer_lag.labels(topic="llm.requests", partition="0").set(12)
        metrics.policy_reload_errors.inc(0)
        out = []
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("/healthz", "/readyz"):
                    async with http.get(base + path) as r:
                        out.append((r.status, await r.text()))
                why[0] = None
                for path in ("/readyz", "/metrics"):
                    async with http.get(base + path) as r:
                        out.append((r.status, await r.text()))
                        if path == "/metrics":
                            assert r.headers["Content-Type"].startswith("text/plain")
        finally:
            await server.stop()
        return out

    (health, not_ready, ready, exposition) = asyncio.run(run())
    assert health == (200, "ok\n")
    assert not_ready == (503, "not ready: waiting for the consumer group assignment\n")
    assert ready == (200, "ready\n")
    status, text = exposition
    assert status == 200
    for name in REQUIRED:
        assert name in text, name
    assert 'scaler_desired_replicas{model="llama"} 3.0' in text
    assert 'scaler_spill_fraction{model="llama"} 0.125' in text
    assert 'scaler_consumer_lag_messages{partition="0",topic="llm.requests"} 12.0' in text
    assert 'scaler_events_consumed_total{topic="llm.requests"} 7.0' in text


def test_a_model_that_moved_away_leaves_no_stale_gauges() -> None:
    metrics = DaemonMetrics()
    metrics.record_decision(model="llama", decision=_decision(), trigger="tick")
    metrics.forget_model("llama")
    metrics.forget_model("never-seen")
    gauges = [
        line
        for line in metrics.exposition().decode().splitlines()
        if line.startswith(("scaler_desired_", "scaler_spill_fraction"))
    ]
    assert gauges == []


def test_a_client_that_never_finishes_its_headers_is_cut_off_while_others_are_served() -> None:
    timeout = 1.0
    server = HttpServer(
        host="127.0.0.1", port=0, metrics=DaemonMetrics(), ready=lambda: None, header_timeout_seconds=timeout
    )

    async def slow_client(*, dribble: bool) -> float:
        """Send half a request line (then a byte at a time, if ``dribble``); return seconds until closed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /heal")
        await writer.drain()
        try:
            while loop.time() - started < 10 * timeout:
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                        return loop.time() - started
                if dribble and not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"t")
                        await writer.drain()
        finally:
            writer.close()
        return float("inf")

    async def run() -> tuple[float, float, list[int]]:
        await server.start()
        try:
            slow = asyncio.gather(slow_client(dribble=False), slow_client(dribble=True))
            statuses = []
            async with aiohttp.ClientSession() as http:
                for _ in range(5):
                    async with http.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                        statuses.append(r.status)
                    await asyncio.sleep(0.1)
            idle, dribbling = await slow
            return idle, dribbling, statuses
        finally:
            await server.stop()

    idle, dribbling, statuses = asyncio.run(run())
    print(f"slow clients disconnected after {idle:.2f} s (idle) and {dribbling:.2f} s (dribbling)")
    assert statuses == [200] * 5  # served while the slow clients hang on
    assert timeout * 0.9 <= idle <= timeout + 1.5
    assert timeout * 0.9 <= dribbling <= timeout + 1.5
