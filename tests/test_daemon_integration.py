"""The whole daemon against a real tansu broker: events in, decisions and dead letters out, restarts,
rebalances between two daemons, a broker restart, and SIGTERM on a real ``scaler run`` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from conftest import Broker, free_port, wait_for_tcp
from integration_fixtures import (
    fake_plan,
    kafka_settings,
    policy_yaml,
    produce,
    read_topic,
    request_event,
    sample,
    settings_env,
)

from scaler.adapters import kafka
from scaler.app import Daemon, build_kafka_daemon
from scaler.core.policy_file import load_policies
from scaler.settings import Settings

pytestmark = pytest.mark.integration

GRACE_SECONDS = 30  # terminationGracePeriodSeconds in helm/spillway/templates/deployment.yaml
MODELS = [f"model-{i}" for i in range(6)]


def _daemon(settings: Settings) -> Daemon:
    return build_kafka_daemon(
        settings=settings, policies=load_policies(settings.policy_files), planner=fake_plan
    )


def _settings(broker: Broker, tmp_path: Path, **overrides: object) -> Settings:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml(MODELS))
    return kafka_settings(
        broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=1.0, **overrides
    )


async def _until(condition: Callable[[], bool], *, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        await asyncio.sleep(0.05)


def _events(models: list[str], *, per_model: int, start: int = 0) -> list[tuple[str, bytes]]:
    now = time.time()
    return [(m, request_event(m, now, start + k)) for m in models for k in range(per_model)]


def test_events_in_decisions_and_dead_letters_out(broker: Broker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)

    async def run() -> tuple[int, list[object], list[object], int, int, str]:
        daemon = _daemon(settings)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await _until(lambda: daemon.http is not None and daemon.http.port != 0)
        assert daemon.http is not None
        base = f"http://127.0.0.1:{daemon.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as r:
                not_ready = r.status
            await _until(lambda: daemon.assigned)
            bad = [("model-0", b"{broken"), ("model-1", request_event("no-such-model", time.time(), 0))]
            await produce(broker.bootstrap, settings.kafka_requests_topic, _events(MODELS, per_model=5) + bad)
            decisions = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=len(MODELS)
            )
            letters = await read_topic(broker.bootstrap, settings.kafka_deadletter_topic, at_least=2)
            async with http.get(f"{base}/readyz") as r:
                ready = r.status
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
        daemon.request_stop(signal.SIGTERM)
        return await task, decisions, letters, not_ready, ready, metrics

    code, decisions, letters, not_ready, ready, metrics = asyncio.run(run())
    assert code == 0
    assert not_ready == 503
    assert ready == 200
    assert {r.key.decode() for r in decisions} == set(MODELS)  # type: ignore[attr-defined]
    payload = json.loads(decisions[0].value)  # type: ignore[attr-defined]
    assert payload["routing"] == {"kubernetes": 0.75, "serverless": 0.25}
    assert set(payload["desired"]) == {"replicas", "standby", "serverless_provisioned"}
    reasons = sorted(json.loads(r.value)["reason"] for r in letters)  # type: ignore[attr-defined]
    assert reasons == ["not_json", "unknown_model"]
    topic = settings.kafka_requests_topic
    assert f'scaler_events_consumed_total{{topic="{topic}"}} 32.0' in metrics
    assert 'scaler_events_rejected_total{reason="not_json"} 1.0' in metrics
    assert "scaler_decision_latency_seconds_bucket" in metrics
    lags = [line for line in metrics.splitlines() if line.startswith("scaler_consumer_lag_messages{")]
    assert any(f'topic="{topic}"' in line for line in lags)
    assert all(float(line.rsplit(" ", 1)[1]) >= 0 for line in lags)


@pytest.mark.slow
def test_a_restart_resumes_from_committed_offsets_and_checkpoints(broker: Broker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)

    async def run() -> tuple[float, float, int]:
        first = _daemon(settings)
        task = asyncio.create_task(first.run(install_signals=False))
        await _until(lambda: first.assigned)
        await produce(broker.bootstrap, settings.kafka_requests_topic, _events(MODELS, per_model=10))
        await read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=len(MODELS))
        await _until(lambda: all(s.previous is not None for s in first.runtime.owned.values()))
        first.request_stop(signal.SIGTERM)
        assert await task == 0

        second = _daemon(settings)
        task = asyncio.create_task(second.run(install_signals=False))
        await _until(lambda: second.assigned)
        resumed = sum(s.previous is not None for s in second.runtime.owned.values())
        await asyncio.sleep(1.0)
        def consumed() -> float:
            return sample(second.metrics, "scaler_events_consumed_total", topic=settings.kafka_requests_topic)

        before = consumed()
        await produce(
            broker.bootstrap, settings.kafka_requests_topic, _events(MODELS[:1], per_model=3, start=100)
        )
        await _until(lambda: consumed() >= 3)
        second.request_stop(signal.SIGTERM)
        assert await task == 0
        return before, consumed(), resumed

    before, after, resumed = asyncio.run(run())
    assert before == 0  # nothing consumed and committed by the first daemon is read again
    assert after == 3
    assert resumed == len(MODELS)  # every model resumed from its checkpoint (previous decision kept)


@pytest.mark.slow
def test_two_daemons_split_the_models_and_never_both_own_one(broker: Broker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    overlaps: list[set[str]] = []

    async def run() -> tuple[set[str], set[str], set[str]]:
        a, b = _daemon(settings), _daemon(settings)
        stop_watch = asyncio.Event()

        async def watch() -> None:
            while not stop_watch.is_set():
                both = set(a.runtime.owned) & set(b.runtime.owned)
                if both:
                    overlaps.append(both)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        task_a = asyncio.create_task(a.run(install_signals=False))
        await _until(lambda: len(a.runtime.owned) == len(MODELS))
        task_b = asyncio.create_task(b.run(install_signals=False))
        await _until(lambda: bool(a.runtime.owned) and bool(b.runtime.owned) and a.assigned and b.assigned)
        split_a, split_b = set(a.runtime.owned), set(b.runtime.owned)
        b.request_stop(signal.SIGTERM)
        assert await task_b == 0
        await _until(lambda: len(a.runtime.owned) == len(MODELS) and a.assigned)
        final_a = set(a.runtime.owned)
        a.request_stop(signal.SIGTERM)
        assert await task_a == 0
        stop_watch.set()
        await watcher
        return split_a, split_b, final_a

    split_a, split_b, final_a = asyncio.run(run())
    assert overlaps == []
    assert split_a | split_b == set(MODELS)
    assert split_a.isdisjoint(split_b)
    assert final_a == set(MODELS)  # the survivor takes the models back


@pytest.mark.slow
def test_a_broker_kill_and_restart_is_survived(own_broker: Broker, tmp_path: Path) -> None:
    settings = _settings(own_broker, tmp_path)

    async def run() -> tuple[bool, int, int]:
        daemon = _daemon(settings)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await _until(lambda: daemon.assigned)
        await produce(own_broker.bootstrap, settings.kafka_requests_topic, _events(MODELS, per_model=2))
        await read_topic(own_broker.bootstrap, settings.kafka_decisions_topic, at_least=len(MODELS))
        own_broker.kill()
        await asyncio.sleep(2.0)
        alive = not task.done()
        own_broker.start()  # memory storage: the topics are gone and must be made again
        await kafka.ensure_topics(settings.kafka)
        def consumed() -> float:
            return sample(daemon.metrics, "scaler_events_consumed_total", topic=settings.kafka_requests_topic)

        before = consumed()
        deadline = time.monotonic() + 40
        while consumed() <= before and time.monotonic() < deadline and not task.done():
            await produce(
                own_broker.bootstrap, settings.kafka_requests_topic, _events(MODELS[:1], per_model=1)
            )
            await asyncio.sleep(1.0)
        after = consumed()
        daemon.request_stop(signal.SIGTERM)
        code = await task
        return alive, code, int(after - before)

    alive, code, new_events = asyncio.run(run())
    assert alive
    assert code == 0
    assert new_events >= 1  # consuming again after the broker came back


def test_sigterm_stops_a_real_scaler_run_cleanly(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(broker, tmp_path, http_listen=f"127.0.0.1:{port}")
    env = {**os.environ, **settings_env(settings), "SCALER_DRY_RUN": "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_tcp(port, timeout=30)
        asyncio.run(_wait_ready(port))
        asyncio.run(produce(broker.bootstrap, settings.kafka_requests_topic, _events(MODELS, per_model=3)))
        decisions = asyncio.run(
            read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=len(MODELS))
        )
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=GRACE_SECONDS)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    assert elapsed < GRACE_SECONDS  # the kubelet would SIGKILL it after the chart's grace period
    assert {r.key.decode() for r in decisions} == set(MODELS)  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in lines]
    assert "shutdown_requested" in events
    assert events[-1] == "stopped"
    decided = [entry for entry in lines if entry["event"] == "decision"]
    assert decided
    assert all(entry["model"] in MODELS and "policy" not in entry for entry in decided)  # one key, not two


async def _wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("scaler run never became ready")
