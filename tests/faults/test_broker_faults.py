"""The broker killed (SIGKILL) under a running ``scaler run``, and restarted on durable or on empty storage.

Durable (tansu on S3, moto): traffic keeps coming through the outage; afterwards every record the
log holds was consumed exactly once (consumed = the log's size), and decisions resume. Empty
(memory storage: topics, records and offsets gone): the daemon stays up through the outage and the
empty restart, and consumes every record of the new log. Both: /healthz stays 200, /readyz says
503 while the broker is away, no model is decided twice for one time, no decision leaves the bounds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import Broker
from daemon_process import ScalerProcess, until
from fault_fixtures import (
    DurableBroker,
    Traffic,
    beyond_bounds,
    decisions,
    durable_broker,
    fault_policy,
    twice_decided,
)
from integration_fixtures import kafka_settings, read_topic

from scaler.adapters import kafka
from scaler.adapters.checkpoint_spool import spool_path

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

MODELS = ["m-a", "m-b", "m-c"]
BOUNDS = dict.fromkeys(MODELS, (1, 4))
OUTAGE_SECONDS = 8.0
_ = durable_broker  # the fixture, imported for pytest


def _start(broker: Broker, tmp_path: Path) -> ScalerProcess:
    policy = tmp_path / "policies.yaml"
    policy.write_text(fault_policy(MODELS))
    settings = kafka_settings(
        broker.bootstrap,
        policy_files=(policy,),
        checkpoint_interval_seconds=1.0,
        checkpoint_dir=tmp_path / "spool",
    )
    return ScalerProcess(settings, log_path=tmp_path / "daemon.log").start()


def _outage(daemon: ScalerProcess, broker: Broker) -> tuple[set[int], set[int]]:
    """Kill the broker for OUTAGE_SECONDS; return the /healthz and /readyz statuses seen meanwhile."""
    broker.kill()
    health, ready = set(), set()
    started = time.monotonic()
    while time.monotonic() - started < OUTAGE_SECONDS:
        health.add(daemon.status("/healthz"))
        ready.add(daemon.status("/readyz"))
        assert daemon.alive(), daemon.log_path.read_text()[-3000:]
        time.sleep(0.5)
    return health, ready


def _settled(daemon: ScalerProcess, expected: int) -> None:
    until(
        lambda: (
            daemon.metric('scaler_events_consumed_total{topic="' + daemon.settings.kafka_requests_topic)
            >= expected
        ),
        seconds=60,
        what=f"{expected} records consumed",
    )
    time.sleep(1.0)  # and nothing more arrives: a record read twice would show here


def test_a_broker_killed_on_durable_storage_loses_nothing(
    durable_broker: DurableBroker, tmp_path: Path
) -> None:
    daemon = _start(durable_broker, tmp_path)
    topic = daemon.settings.kafka_requests_topic
    try:
        with Traffic(durable_broker.bootstrap, topic, MODELS, rate=20) as first:
            time.sleep(3)
        _settled(daemon, first.acked)
        # tansu's S3 engine can lose the last writes it acknowledged before a SIGKILL: quiet first
        time.sleep(2.0)
        health, ready = _outage(daemon, durable_broker)
        restarted = time.time()
        durable_broker.start()
        with Traffic(durable_broker.bootstrap, topic, MODELS, rate=20) as second:
            until(lambda: second.acked > 0, seconds=60, what="producing again")
            time.sleep(3)
        acked = first.acked + second.acked
        _settled(daemon, acked)
        consumed = daemon.metric('scaler_events_consumed_total{topic="' + topic)
        until(lambda: daemon.status("/readyz") == 200, seconds=30, what="ready again")
        found = decisions(durable_broker.bootstrap, daemon.settings.kafka_decisions_topic)
        assert daemon.alive()
    finally:
        daemon.stop()
    print(
        f"durable broker killed {OUTAGE_SECONDS:.0f} s: acked {first.acked} + {second.acked}, "
        f"consumed {consumed:.0f}, decisions {len(found)}"
    )
    assert consumed == acked  # every acknowledged event, each once (the group's offsets survived)
    assert health == {200}
    assert 503 in ready
    assert {d["model"] for d in found if d["at"] > restarted} == set(MODELS)  # deciding again, every model
    assert twice_decided(found) == []
    assert beyond_bounds(found, BOUNDS) == []


def test_a_broker_restarted_empty_is_survived(own_broker: Broker, tmp_path: Path) -> None:
    daemon = _start(own_broker, tmp_path)
    topic = daemon.settings.kafka_requests_topic
    try:
        with Traffic(own_broker.bootstrap, topic, MODELS, rate=20) as first:
            time.sleep(3)
        before = first.acked
        _settled(daemon, before)
        joins = len(daemon.events("partitions_assigned"))
        health, ready = _outage(daemon, own_broker)
        restarted = time.time()
        own_broker.start()  # memory storage: no topics, no records, no group offsets
        asyncio.run(kafka.ensure_topics(daemon.settings.kafka))  # as an operator re-creating them would
        until(lambda: len(daemon.events("partitions_assigned")) > joins, seconds=60, what="rejoined")
        with Traffic(own_broker.bootstrap, topic, MODELS, rate=20) as second:
            until(lambda: second.acked > 2 * before, seconds=60, what="the new log past the old one")
        until(lambda: _consumed(daemon) > before, seconds=60, what="consuming the new log")
        time.sleep(2.0)
        consumed = _consumed(daemon)
        until(
            lambda: (
                {d["model"] for d in decisions(own_broker.bootstrap, daemon.settings.kafka_decisions_topic)}
                == set(MODELS)
            ),
            seconds=30,
            what="decisions for every model on the new log",
        )
        found = decisions(own_broker.bootstrap, daemon.settings.kafka_decisions_topic)
        assert daemon.alive()
        stopped_at = time.time()
        code, seconds = daemon.sigterm(timeout=30)
    finally:
        daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    assert not daemon.events("shutdown_timed_out")
    final = _final_checkpoints(own_broker, daemon, since=stopped_at)
    assert final == set(MODELS), f"final checkpoints of {sorted(final)} only"
    skipped = before + second.acked - consumed
    print(
        f"empty restart: {before} records before, {second.acked} after, consumed {consumed:.0f}: "
        f"{skipped:.0f} of the new log skipped, {len(twice_decided(found))} decisions out of order; "
        f"SIGTERM: exit {code} in {seconds:.1f} s, final checkpoints of {len(final)} models"
    )
    # The old log's positions, committed as the partitions were revoked (tansu 0.6 takes a commit
    # of the dead broker's group generation), skip the new log's first records: bounded by the old
    # log's length, never more (see README, Reliability).
    assert 0 <= skipped <= before
    assert health == {200}
    assert 503 in ready
    assert {d["model"] for d in found if d["at"] > restarted} == set(MODELS)  # deciding again, every model
    assert beyond_bounds(found, BOUNDS) == []


def _final_checkpoints(broker: Broker, daemon: ScalerProcess, *, since: float) -> set[str]:
    """Return the models with a checkpoint written at or after ``since``: on the state topic, or spooled."""
    settings = daemon.settings
    records = asyncio.run(read_topic(broker.bootstrap, settings.kafka_state_topic, at_least=10**9, seconds=3))
    found = {r.key.decode() for r in records if r.timestamp / 1000 >= since - 0.001}
    assert settings.checkpoint_dir is not None
    paths = {m: spool_path(settings.checkpoint_dir, m) for m in MODELS}
    return found | {m for m, p in paths.items() if p.is_file() and p.stat().st_mtime >= since - 0.001}


def _consumed(daemon: ScalerProcess) -> float:
    return daemon.metric('scaler_events_consumed_total{topic="' + daemon.settings.kafka_requests_topic)
