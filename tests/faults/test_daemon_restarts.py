"""``scaler run`` killed (SIGKILL) and restarted, and forced rebalances of a group of two.

SIGKILL: the restarted daemon resumes every model from its checkpoint and reads only what the
killed one had not committed: with the traffic quiet at the kill, exactly the new records. Rebalances:
a second daemon joins, is killed (its session expires), joins again and leaves (SIGTERM) while events
flow. Throughout: no model is ticked by two daemons at once, no decision leaves the bounds, and every
model keeps being decided.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from conftest import Broker
from daemon_process import ScalerProcess, until
from fault_fixtures import Traffic, beyond_bounds, close_ticks, decisions, fault_policy, twice_decided
from integration_fixtures import kafka_settings

from scaler.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

MODELS = [f"r-{i}" for i in range(6)]
BOUNDS = dict.fromkeys(MODELS, (1, 4))


def _settings(broker: Broker, tmp_path: Path) -> Settings:
    policy = tmp_path / "policies.yaml"
    policy.write_text(fault_policy(MODELS))
    return kafka_settings(
        broker.bootstrap,
        policy_files=(policy,),
        checkpoint_interval_seconds=1.0,
        checkpoint_dir=tmp_path / "spool",
    )


def _consumed(daemon: ScalerProcess) -> float:
    return daemon.metric('scaler_events_consumed_total{topic="' + daemon.settings.kafka_requests_topic)


def test_a_sigkilled_daemon_restarts_where_it_stopped(broker: Broker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    topic = settings.kafka_requests_topic
    first = ScalerProcess(settings, log_path=tmp_path / "first.log").start()
    try:
        with Traffic(broker.bootstrap, topic, MODELS, rate=20) as before:
            time.sleep(3)
        until(lambda: _consumed(first) >= before.acked, seconds=60, what="consumed before the kill")
        time.sleep(2.0)  # a checkpoint interval and the last commit
        first.kill()
    finally:
        first.kill()
    second = ScalerProcess(settings, log_path=tmp_path / "second.log").start()
    try:
        with Traffic(broker.bootstrap, topic, MODELS, rate=20) as after:
            time.sleep(3)
        until(lambda: _consumed(second) >= after.acked, seconds=60, what="consumed after the restart")
        time.sleep(1.0)
        consumed = _consumed(second)
        resumed = set(second.events("models_assigned")[0]["resumed"])
        found = decisions(broker.bootstrap, settings.kafka_decisions_topic)
    finally:
        second.stop()
    print(
        f"SIGKILL + restart: {before.acked} events before, {after.acked} after, then read {consumed:.0f}"
    )
    assert consumed == after.acked  # nothing the killed daemon had committed is read again, nothing lost
    assert resumed == set(MODELS)  # every model from its checkpoint
    assert twice_decided(found) == []
    assert close_ticks(found) == []
    assert beyond_bounds(found, BOUNDS) == []


def test_forced_rebalances_never_let_two_daemons_decide_one_model(broker: Broker, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    topic = settings.kafka_requests_topic
    a = ScalerProcess(settings, log_path=tmp_path / "a.log").start()
    try:
        with Traffic(broker.bootstrap, topic, MODELS, rate=10):
            for round_ in range(2):
                b = ScalerProcess(settings, log_path=tmp_path / f"b{round_}.log").start()
                until(lambda b=b: b.metric("scaler_owned_models") > 0, seconds=60, what="b owns models")
                time.sleep(2)
                if round_ == 0:
                    b.kill()  # its session expires: a takes everything back
                else:
                    code, _ = b.sigterm()
                    assert code == 0
                until(lambda: a.metric("scaler_owned_models") == len(MODELS), seconds=60, what="a owns all")
            time.sleep(2)
        found = decisions(broker.bootstrap, settings.kafka_decisions_topic)
        assert a.alive()
    finally:
        a.stop()
    gaps: dict[str, float] = {}
    for model in MODELS:
        times = sorted(float(d["at"]) for d in found if d["model"] == model)
        gaps[model] = max(later - earlier for earlier, later in itertools.pairwise(times))
    print(f"2 forced rebalances: {len(found)} decisions, longest gap per model {max(gaps.values()):.1f} s")
    assert close_ticks(found) == []  # never two deciders for one model
    assert twice_decided(found) == []
    assert beyond_bounds(found, BOUNDS) == []
    assert max(gaps.values()) < 30  # every model kept being decided (a session timeout plus a rejoin)
