"""Event silence switches a model to load read from a real Prometheus and back; with no data it holds."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path

import pytest
from integration_fixtures import decide_now, make_runtime
from prometheus_client import Counter, Gauge
from prometheus_fixtures import prometheus
from structlog.testing import capture_logs

from scaler.adapters.http import HttpServer
from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.adapters.prometheus import PrometheusSignal, SignalQueries
from scaler.core.events import RequestEvent, encode_request
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, Observed
from scaler.ports import RawRecord
from scaler.runtime import refresh_fallback

REQ = "llm.requests"


def rate_planner(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner with the real one's contract: hold on an unusable forecast; 1 replica per req/s."""
    if not forecast.valid and previous is not None:
        return dataclasses.replace(previous, at=now, held=True, reason=f"held: {forecast.note}")
    rate = observed.request_rate or 0.0
    return Decision(
        at=now,
        replicas=max(1, math.ceil(rate)),
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason="planned",
        bound_by="cost",
        quantile=0.5,
        cost_per_hour={},
    )


def arrivals(model: str, *, now: float, count: int, offset: int) -> list[RawRecord]:
    return [
        RawRecord(
            REQ,
            0,
            offset + k,
            model.encode(),
            encode_request(
                RequestEvent(
                    model=model,
                    ts=now - 0.5,
                    type="arrival",
                    request_id=f"r{offset + k}",
                    prompt_tokens=10,
                    output_tokens=0,
                )
            ),
        )
        for k in range(count)
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_silence_switches_to_prometheus_and_back_and_holds_without_any_data(tmp_path: Path) -> None:
    metrics = DaemonMetrics()
    # what vLLM would export, served for Prometheus to scrape
    served = Counter("vllm:request_success", "vLLM requests.", ["model_name"], registry=metrics.registry)
    running = Gauge("vllm:num_requests_running", "Running.", ["model_name"], registry=metrics.registry)
    running.labels(model_name="llama").set(3)
    policies = {
        name: ModelPolicy.model_validate(
            {"name": name, "forecast": {"bucket_seconds": 1, "fallback_after_seconds": 2}}
        )
        for name in ("llama", "quiet")
    }
    runtime = make_runtime(
        policies, sink=MemorySink(), planner=rate_planner, metrics=metrics
    )
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    timeline: list[tuple[str, str, int, bool, str]] = []

    async def decide(label: str, model: str = "llama") -> None:
        decision = await decide_now(runtime, model, now=time.time())
        assert decision is not None
        timeline.append((label, model, decision.replicas, decision.held, decision.reason))

    async def run() -> None:
        await server.start()
        scrape = (
            "scrape_configs:\n"
            "  - job_name: vllm\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
        )
        try:
            with prometheus(tmp_path, config=scrape) as url:
                # a 5 s rate window (the default is 1m) so the test sees the rate within seconds
                queries = SignalQueries(
                    request_rate='sum(rate(vllm:request_success_total{model_name="{model}"}[5s]))'
                )
                reader = PrometheusSignal(url=url, queries=queries)
                runtime.assign(frozenset(policies), checkpoints={}, now=time.time())
                offset = 0
                for _ in range(3):  # events arrive: 2 requests a second
                    runtime.ingest(
                        arrivals("llama", now=time.time(), count=2, offset=offset), now=time.time()
                    )
                    runtime.ingest(
                        arrivals("quiet", now=time.time(), count=1, offset=offset + 2), now=time.time()
                    )
                    offset += 3
                    served.labels(model_name="llama").inc(20)
                    await asyncio.sleep(1.0)
                await decide("events")
                await decide("events", "quiet")
                deadline = time.monotonic() + 30
                while True:  # events stop; vLLM keeps serving 20 requests a second
                    served.labels(model_name="llama").inc(20)
                    await asyncio.sleep(1.0)
                    await refresh_fallback(reader, runtime, now=time.time())
                    signal = runtime.owned["llama"].signal
                    if signal is not None and (signal.request_rate or 0) >= 10:
                        break
                    assert time.monotonic() < deadline, "Prometheus never had a rate"
                await decide("silent")
                await decide("silent", "quiet")  # Prometheus has nothing of it either: hold
                gauge = metrics.exposition().decode()
                runtime.ingest(arrivals("llama", now=time.time(), count=2, offset=offset), now=time.time())
                await decide("resumed")
                timeline.append(("gauges", gauge, 0, False, metrics.exposition().decode()))
        finally:
            await server.stop()

    with capture_logs() as logs:
        asyncio.run(run())
    gauges = timeline.pop()
    (events, events_quiet, silent, silent_quiet, resumed) = timeline
    assert events[2] <= 2  # decided on the events' ~2 req/s
    assert events[3] is False
    assert "fallback" not in events[4]
    assert "fallback" not in events_quiet[4]
    assert silent[2] >= 10, timeline  # decided on Prometheus' ~20 req/s, not on silence
    assert "fallback: Prometheus, events silent" in silent[4]
    assert silent_quiet[3] is True  # no events, no Prometheus data: the last decision holds
    assert silent_quiet[2] == events_quiet[2]
    assert "fallback: no data" in silent_quiet[4]
    assert "fallback" not in resumed[4]
    assert 'scaler_fallback_active{model="llama"} 1.0' in gauges[1]
    assert 'scaler_fallback_active{model="llama"} 0.0' in gauges[4]
    names = [e["event"] for e in logs if e.get("model") == "llama"]
    assert "fallback_started" in names
    assert "fallback_ended" in names
    assert any(e["event"] == "holding_without_data" and e["model"] == "quiet" for e in logs)
