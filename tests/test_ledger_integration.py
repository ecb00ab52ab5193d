"""The shadow ledger over a real tansu broker: request and replica metric events in, decisions carrying
predicted vs realized out, the counters on /metrics, and a restart that resumes the ledger's totals
from the checkpoint on the state topic while the new process's counters start again from zero."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Broker
from integration_fixtures import fake_plan, kafka_settings, policy_yaml, produce, read_topic, sample

from scaler.app import Daemon, build_kafka_daemon
from scaler.core.events import MetricEvent, RequestEvent, encode_metric, encode_request
from scaler.core.policy_file import load_policies
from scaler.settings import Settings

pytestmark = pytest.mark.integration

MODEL = "ledger-0"


def _daemon(settings: Settings) -> Daemon:
    return build_kafka_daemon(
        settings=settings, policies=load_policies(settings.policy_files), planner=fake_plan
    )


async def _until(condition: Callable[[], bool], *, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        await asyncio.sleep(0.05)


def _requests(now: float) -> list[tuple[str, bytes]]:
    """Eight requests with a 0.3 s first token, one at 5 s (the 2 s target missed), one rejected."""
    out = []
    for k in range(10):
        rid = f"q{k}"
        events = [RequestEvent(MODEL, now, "arrival", rid, 500, 0)]
        if k == 9:
            events.append(RequestEvent(MODEL, now + 0.1, "reject", rid, 500, 0))
        else:
            ttft = 5.0 if k == 8 else 0.3
            events.append(RequestEvent(MODEL, now + ttft, "first_token", rid, 500, 0, "kubernetes"))
            events.append(RequestEvent(MODEL, now + ttft + 1.0, "finish", rid, 500, 100, "kubernetes"))
        out += [(MODEL, encode_request(e)) for e in events]
    return out


def _replicas(now: float) -> list[tuple[str, bytes]]:
    """Two ready replicas reporting (no actuators: the ledger prices what the replica metrics say)."""
    return [(MODEL, encode_metric(MetricEvent(MODEL, now, f"pod-{k}", 0, 1, 0.1, True))) for k in range(2)]


async def _metrics(daemon: Daemon) -> str:
    assert daemon.http is not None
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{daemon.http.port}/metrics") as r:
        return await r.text()


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("{", 1)[1].split("}", 1)[0] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_ledger_over_kafka_publishes_exports_and_survives_a_restart(
    broker: Broker, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=1.0)

    async def run() -> tuple[list[Any], str, list[Any], str]:
        first = _daemon(settings)
        task = asyncio.create_task(first.run(install_signals=False))
        await _until(lambda: first.assigned and first.http is not None and first.http.port != 0)
        now = time.time()
        await produce(broker.bootstrap, settings.kafka_metrics_topic, _replicas(now))
        await produce(broker.bootstrap, settings.kafka_requests_topic, _requests(now))
        await _until(lambda: first.runtime.owned[MODEL].ledger.slo.missed == 2)
        await asyncio.sleep(2.5)  # a few more 1 s decisions, priced on the two replicas
        seen = await _metrics(first)
        first.request_stop(signal.SIGTERM)
        assert await task == 0
        before = await read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=3)

        second = _daemon(settings)
        task = asyncio.create_task(second.run(install_signals=False))
        await _until(lambda: second.assigned and second.http is not None and second.http.port != 0)
        ticks = {"model": MODEL, "trigger": "tick"}
        await _until(lambda: sample(second.metrics, "scaler_decisions_total", **ticks) >= 2)
        again = await _metrics(second)
        second.request_stop(signal.SIGTERM)
        assert await task == 0
        after = await read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=len(before) + 2)
        return before, seen, after[len(before) :], again

    before, seen, after, again = asyncio.run(run())
    blocks = [json.loads(r.value)["ledger"] for r in before]
    last = blocks[-1]
    assert last["total_slo"] == {"met": 8, "missed": 2, "unknown": 0, "estimated": 0}
    assert sum(b["realized_by_kind"]["replicas"] for b in blocks) > 0
    assert _sample(seen, "scaler_slo_requests_total", model=MODEL, outcome="met", source="measured") == 8.0
    assert _sample(seen, "scaler_slo_requests_total", model=MODEL, outcome="missed", source="measured") == 2.0
    assert (_sample(seen, "scaler_cost_dollars_total", model=MODEL, kind="replicas") or 0.0) > 0.0

    resumed = json.loads(after[0].value)["ledger"]
    assert resumed["total_slo"] == last["total_slo"]  # the totals continue from the checkpoint
    assert resumed["from"] == last["to"]  # and so does the interval: the first one spans the restart
    assert resumed["total_dollars"] >= last["total_dollars"]
    # the new process's counters count only what it measured itself: a counter reset for Prometheus
    assert _sample(again, "scaler_slo_requests_total", model=MODEL, outcome="met", source="measured") is None
