"""The shadow ledger in the running daemon: the sandbox (the real daemon loop, the real planner, decisions
carried out on the simulator) publishes predicted vs realized with every decision, exports the
ledger counters on /metrics and writes the ledger into its final checkpoint."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from integration_fixtures import decide_now, make_runtime

from scaler.adapters.memory import MemorySink, MemoryStore
from scaler.app import build_sandbox_daemon, run_for
from scaler.control import checkpoint
from scaler.control.controller import ReadBack
from scaler.core.policy import ModelPolicy
from scaler.runtime import RuntimeOptions
from scaler.settings import Settings

VIRTUAL_SECONDS = 900.0


def test_the_daemon_publishes_predicted_vs_realized_exports_the_ledger_and_checkpoints_it() -> None:
    policy = ModelPolicy.model_validate(
        {
            "name": "alpha",
            "behavior": {"interval_seconds": 45},
            "forecast": {"bucket_seconds": 10, "horizon_seconds": 600, "seasonalities_seconds": [3600]},
        }
    )
    settings = Settings(http_listen="127.0.0.1:0", burst_check_seconds=0.01, actuate=True)
    daemon, _source, sink = build_sandbox_daemon(
        settings=settings, policies={"alpha": policy}, speed=300.0, base_rate=30.0
    )
    assert asyncio.run(run_for(daemon, virtual_seconds=VIRTUAL_SECONDS, install_signals=False)) == 0

    published = [p for m, p in sink.decisions if m == "alpha"]
    assert len(published) >= 5
    blocks = [p["ledger"] for p in published]
    assert all(isinstance(b, dict) for b in blocks)
    for before, after in itertools.pairwise(blocks):  # the intervals tile the run, the totals only grow
        assert after["from"] == before["to"]  # type: ignore[index]
        assert after["total_dollars"] == pytest.approx(
            before["total_dollars"] + after["realized_dollars"], abs=1e-5
        )  # type: ignore[index, operator]
    priced = [b for b in blocks[1:] if b["predicted_dollars"] is not None]  # type: ignore[index]
    assert priced, "the real planner prices its chosen mix: the next decision carries the prediction"
    assert sum(b["realized_by_kind"]["replicas"] for b in blocks) > 0  # type: ignore[index, misc]
    assert all(min(b["realized_by_kind"].values()) >= 0 for b in blocks)  # type: ignore[index]
    # the sandbox's events are arrivals only: no first token, no finish, so nothing is claimed met or missed
    assert all(b["slo"]["met"] == b["slo"]["missed"] == 0 for b in blocks)  # type: ignore[index]

    # the final checkpoint holds the ledger brought up to the shutdown
    store = daemon.store
    assert isinstance(store, MemoryStore)
    header, _ = checkpoint.decode(store.saved["alpha"])
    state = header["ledger"]
    final_cost = sum(state["cost"].values())
    last = blocks[-1]
    assert final_cost >= last["total_dollars"]  # type: ignore[operator]
    # bounded by the most capacity any decision asked for, over the whole run, at the policy's prices
    most = max(p["desired"]["replicas"] + p["desired"]["standby"] for p in published)  # type: ignore[index]
    assert state["cost"]["replicas"] + state["cost"]["standby"] <= (
        most * VIRTUAL_SECONDS * policy.prices.replica_per_hour / 3600.0 * 1.05
    )
    assert state["slo"]["met_measured"] == state["slo"]["missed_measured"] == 0

    # the counters on /metrics say what this process measured, up to the shutdown
    registry = daemon.metrics.registry
    exported = {
        kind: registry.get_sample_value("scaler_cost_dollars_total", {"model": "alpha", "kind": kind}) or 0.0
        for kind in state["cost"]
    }
    assert exported == pytest.approx(state["cost"], abs=1e-9)
    unknown = registry.get_sample_value(
        "scaler_slo_requests_total", {"model": "alpha", "outcome": "unknown", "source": "none"}
    )
    assert unknown == state["slo"]["unknown"]
    predicted = registry.get_sample_value("scaler_predicted_cost_dollars_total", {"model": "alpha"})
    assert predicted == pytest.approx(sum(b["predicted_dollars"] or 0.0 for b in blocks), abs=1e-5)  # type: ignore[index, misc]


def test_a_policy_reload_that_resets_the_forecaster_keeps_the_ledger() -> None:
    policy = ModelPolicy.model_validate({"name": "m", "forecast": {"bucket_seconds": 10}})
    runtime = make_runtime({"m": policy}, sink=MemorySink())
    now = 1_750_000_000.0
    back = ReadBack(replicas_ready=3, replicas_starting=0)

    async def run() -> None:
        runtime.assign(frozenset({"m"}), checkpoints={}, now=now)
        runtime.owned["m"].account(now=now, readback=back)
        runtime.owned["m"].account(now=now + 60, readback=back)
        changed = policy.model_copy(
            update={"forecast": policy.forecast.model_copy(update={"bucket_seconds": 30})}
        )
        runtime.set_policies({"m": changed}, now=now + 60)
        await runtime.executor.idle()

    asyncio.run(run())
    controller = runtime.owned["m"]
    assert controller.aggregator.bucket_seconds == 30  # a fresh controller: new buckets, new forecaster
    assert controller.ledger.cost.replicas == pytest.approx(3 * 60 * policy.prices.replica_per_hour / 3600)


def test_a_dry_run_without_actuators_exports_its_advised_serverless_as_unknown_not_as_cost() -> None:
    """The stand-in planner advises 2 provisioned serverless instances at every decision; nothing acts on
    them and nothing reads them back, so the bill has none and /metrics says how long it did not know."""
    policy = ModelPolicy.model_validate({"name": "m", "forecast": {"bucket_seconds": 10}})
    sink = MemorySink()
    runtime = make_runtime({"m": policy}, sink=sink, options=RuntimeOptions(dry_run=True))
    now = 1_750_000_000.0

    async def run() -> None:
        runtime.assign(frozenset({"m"}), checkpoints={}, now=now)
        for at in (now, now + 60):
            await decide_now(runtime, "m", now=at)
        runtime.account(now=now + 90)
        await runtime.executor.idle()

    asyncio.run(run())
    published = [p for m, p in sink.decisions if m == "m"]
    assert [p["desired"]["serverless_provisioned"] for p in published] == [2, 2]  # type: ignore[index]
    block = published[-1]["ledger"]
    assert block["realized_by_kind"]["serverless_provisioned"] == 0.0  # type: ignore[index]
    assert block["serverless_unobserved_seconds"] == 60.0  # type: ignore[index]
    registry = runtime.metrics.registry
    provisioned = registry.get_sample_value(
        "scaler_cost_dollars_total", {"model": "m", "kind": "serverless_provisioned"}
    )
    assert provisioned is None  # no series: nothing was billed
    unobserved = registry.get_sample_value(
        "scaler_ledger_unobserved_seconds_total", {"model": "m", "kind": "serverless_provisioned"}
    )
    assert unobserved == 90.0
