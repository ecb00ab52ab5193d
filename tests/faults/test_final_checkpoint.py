"""SIGTERM with the broker down: ``scaler run`` exits in time and its final checkpoints are not lost.

A real ``scaler run`` on its own tansu broker decides for two models; the broker is killed, then the
daemon gets SIGTERM. It must exit 0 within the shutdown bound, with each model's final checkpoint in
``checkpoint_dir`` (the state topic could not take it). The broker comes back empty (memory storage:
the state topic is gone) and a new daemon resumes both models from the spool.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import Broker
from daemon_process import ScalerProcess, until
from integration_fixtures import kafka_settings, policy_yaml, produce, read_topic, request_event

from scaler.adapters.checkpoint_spool import spool_path

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MODELS = ["alpha", "beta"]


def test_sigterm_with_the_broker_down_spools_the_final_checkpoint_and_a_restart_resumes(
    own_broker: Broker, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml(MODELS))
    spool = tmp_path / "checkpoints"
    settings = kafka_settings(
        own_broker.bootstrap,
        policy_files=(policy,),
        checkpoint_dir=spool,
        checkpoint_interval_seconds=3600.0,  # no periodic checkpoint: only the final one can resume
    )
    first = ScalerProcess(settings, log_path=tmp_path / "first.log")
    try:
        first.start()
        now = time.time()
        events = [(m, request_event(m, now, k)) for m in MODELS for k in range(20)]
        asyncio.run(produce(own_broker.bootstrap, settings.kafka_requests_topic, events))
        decided = asyncio.run(
            read_topic(own_broker.bootstrap, settings.kafka_decisions_topic, at_least=2 * len(MODELS))
        )
        assert {r.key.decode() for r in decided} == set(MODELS)
        own_broker.kill()
        code, seconds = first.sigterm(timeout=30)
    finally:
        first.kill()
    assert code == 0, first.log_path.read_text()[-3000:]
    assert seconds < 15, f"shutdown took {seconds:.1f} s with the broker down"
    assert all(spool_path(spool, m).is_file() for m in MODELS), sorted(p.name for p in spool.iterdir())
    assert first.events("checkpoint_spooled"), "no checkpoint_spooled line in the log"
    assert not first.events("shutdown_timed_out")
    print(f"SIGTERM with the broker down: exit {code} after {seconds:.1f} s, {len(MODELS)} spooled")

    own_broker.start()  # memory storage: an empty broker, the state topic is gone
    second = ScalerProcess(settings, log_path=tmp_path / "second.log")
    try:
        second.start()
        until(lambda: bool(second.events("models_assigned")), seconds=30, what="models assigned")
        assigned = second.events("models_assigned")[-1]
        from_spool = {line["model"] for line in second.events("checkpoint_from_spool")}
        loaded = {line["model"] for line in second.events("checkpoint_loaded")}
    finally:
        second.stop()
    assert set(assigned["resumed"]) == set(MODELS)
    assert from_spool == set(MODELS)
    assert loaded == set(MODELS)  # restored (not rejected) from the spooled bytes
