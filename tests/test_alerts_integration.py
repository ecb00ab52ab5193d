"""An alert rule firing in a real Prometheus reaches the daemon's POST /alerts through a real Alertmanager,
changes the next decision, and its resolution lifts the override."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from integration_fixtures import decide_now, make_runtime
from prometheus_client import Gauge
from prometheus_fixtures import alertmanager, prometheus

from scaler.adapters.alerts import AlertReceiver
from scaler.adapters.http import HttpServer
from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, Observed

TOKEN = "am-token-for-tests"  # test token


def one_replica(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner: one replica."""
    return Decision(
        at=now,
        replicas=1,
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason="planned",
        bound_by="cost",
        quantile=0.5,
        cost_per_hour={},
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_firing_rule_boosts_the_next_decision_and_its_resolution_lifts_it(tmp_path: Path) -> None:
    metrics = DaemonMetrics()
    pressure = Gauge("spillway_test_pressure", "Test condition.", registry=metrics.registry)
    policy = ModelPolicy.model_validate({"name": "llama", "bounds": {"max_replicas": 8}})
    runtime = make_runtime(
        {"llama": policy}, sink=MemorySink(), planner=one_replica, metrics=metrics
    )
    runtime.assign(frozenset({"llama"}), checkpoints={}, now=time.time())
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    AlertReceiver(token=TOKEN, book=runtime.overrides, clock=time.time, registry=metrics.registry).install(
        server.app
    )
    rules = tmp_path / "test.rules.yaml"
    rules.write_text(
        "groups:\n"
        "  - name: test\n"
        "    rules:\n"
        "      - alert: LlamaNeedsHeadroom\n"
        "        expr: spillway_test_pressure > 0\n"
        "        for: 1s\n"
        "        labels: {spillway_action: boost, model: llama, spillway_min_replicas: '4'}\n"
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    timeline: list[tuple[str, int, str]] = []

    async def decide(label: str) -> None:
        decision = await decide_now(runtime, "llama", now=time.time())
        assert decision is not None
        timeline.append((label, decision.replicas, decision.bound_by))

    async def until(condition: str, check: Callable[[], object], *, within: float = 40.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            await asyncio.sleep(0.2)

    async def run() -> None:
        await server.start()
        try:
            webhook = f"http://127.0.0.1:{server.port}/alerts"
            with alertmanager(tmp_path, webhook_url=webhook, token_file=token_file) as am:
                scrape = (
                    "alerting:\n"
                    "  alertmanagers:\n"
                    f"    - static_configs: [{{targets: ['{am.removeprefix('http://')}']}}]\n"
                    "scrape_configs:\n"
                    "  - job_name: spillway\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
                )
                with prometheus(tmp_path, config=scrape, rules=[rules]):
                    await decide("before")
                    pressure.set(1)
                    await until("the boost", lambda: runtime.overrides.active(now=time.time(), model="llama"))
                    await decide("firing")
                    pressure.set(0)
                    await until("the resolution", lambda: not runtime.overrides.active(now=time.time()))
                    await decide("resolved")
        finally:
            await server.stop()

    asyncio.run(run())
    assert timeline == [("before", 1, "cost"), ("firing", 4, "override-boost"), ("resolved", 1, "cost")]
