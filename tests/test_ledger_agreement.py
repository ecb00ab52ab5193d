"""The daemon's ledger and the simulator's bill agree on one recorded stream.

The simulator runs the daemon's controller on a workload and records each decision with the
read-back it was made on; its per-request cluster model says when each request started and where
(replica, serverless, dropped). That run, written as the request events a cluster reports (an
``arrival``; a ``first_token`` at slot start + ``P/Tp`` with its ``backend``; a ``finish`` with its
``backend``; a ``reject`` for a dropped request), goes through the daemon's runtime as in
``tests/test_one_controller.py``: decode, ownership, ``due`` and ``decide`` at the end of each second,
payload, executor, with the recorded read-backs handed back at each decision. Each request's events
are delivered in its arrival's second, as there (the simulator's controller credits output tokens
with the arrival), each with its own timestamp: the ledger reads TTFT from the timestamps.

The daemon ledger's cost and attainment must agree with the simulator's report within 1%: on the
published decisions (predicted vs realized per interval), in the Prometheus counters, and in total.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import numpy as np
import numpy.typing as npt
import pytest
from integration_fixtures import WallClock, step_stream
from prometheus_client.parser import text_string_to_metric_families

from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.controller import ReadBack
from scaler.control.ledger import Ledger
from scaler.core.accounting import hold_seconds
from scaler.core.events import RequestEvent, encode_request
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import RawRecord
from scaler.runtime import Runtime, RuntimeOptions
from scaler.sim import kernels
from scaler.sim.cluster import GIVE_UP_SECONDS, RequestCluster
from scaler.sim.engine import simulate
from scaler.sim.protocol import CapacityTarget
from scaler.sim.results import FloatArray, Summary
from scaler.sim.spillway import Recorded, SpillwayController
from scaler.sim.workload import Workload

T0 = 1_750_000_000
DURATION = 1800
WARM = 2
POLICY = ModelPolicy.model_validate(
    {
        "name": "m",
        "forecast": {"bucket_seconds": 10, "horizon_seconds": 900},
        "lead_times": {"cold_start_seconds": 120},
        "prices": {"serverless_per_million_tokens": 0.5},
    }
)


def _replay_cluster(workload: Workload, recorded: list[Recorded]) -> RequestCluster:
    """Return the simulated cluster after the recorded decisions, applied as the engine applied them."""
    cluster = RequestCluster(workload, policy=POLICY, initial_replicas=WARM)
    times = [r.at for r in recorded] + [float(DURATION)]
    for rec, until in zip(recorded, times[1:], strict=True):
        d = rec.step.decision
        target = CapacityTarget(
            replicas=d.replicas,
            standby=d.standby,
            serverless_provisioned=d.serverless_provisioned,
            serverless_enabled=POLICY.bounds.serverless_quota > 0,
        )
        cluster.apply(target, now=rec.at)
        cluster.advance(until=until)
    return cluster


def _events(workload: Workload, start: np.ndarray, kind: np.ndarray) -> list[list[RawRecord]]:
    """Return each second's request events: what a cluster that ran as simulated would have reported."""
    per_second: list[list[RawRecord]] = [[] for _ in range(DURATION)]
    prefill = workload.prompt_tokens / POLICY.replica.prefill_tokens_per_second
    offset = 0
    for i, at in enumerate(workload.arrivals.tolist()):
        rid, prompt, output = f"r{i}", int(workload.prompt_tokens[i]), int(workload.output_tokens[i])
        if kind[i] == kernels.DROPPED:
            steps = [("arrival", at, None), ("reject", at + GIVE_UP_SECONDS, None)]
        else:
            backend = "serverless" if kind[i] == kernels.SERVERLESS else "kubernetes"
            steps = [
                ("arrival", at, None),
                ("first_token", float(start[i] + prefill[i]), backend),
                ("finish", at, backend),  # at the arrival, as the simulator's controller credits output
            ]
        for step, ts, backend in steps:
            event = RequestEvent("m", T0 + ts, step, rid, prompt, output, backend)  # type: ignore[arg-type]
            per_second[int(at)].append(RawRecord("llm.requests", 0, offset, b"m", encode_request(event)))
            offset += 1
    return per_second


class RecordedReadback(Executor):
    """The daemon's executor handing out the read-backs the simulator saw, one per call, in order."""

    def __init__(self, readbacks: list[ReadBack], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.readbacks = list(readbacks)

    def readback(self, model: str) -> ReadBack | None:
        return self.readbacks.pop(0)


@dataclasses.dataclass(frozen=True)
class Run:
    """One simulated run: its report, its decisions, what each request saw, what ran at the end."""

    workload: Workload
    report: Summary
    recorded: list[Recorded]
    start: FloatArray
    kind: npt.NDArray[np.int64]
    final: ReadBack


@pytest.fixture(scope="module")
def run() -> Run:
    workload = step_stream(seed=5, duration=DURATION)
    sim = SpillwayController(POLICY, workload, start_unix=T0, record=True)
    report = simulate(workload, sim, policy=POLICY, initial_replicas=WARM).summary
    recorded = sim.recorded
    assert recorded is not None
    assert report.served_serverless > 0, "the step should spill to serverless"
    assert report.slo_attainment < 0.99, "and queue some past the TTFT target while replicas start"

    cluster = _replay_cluster(workload, recorded)
    end = cluster.observe(now=float(DURATION), interval=1.0)  # what runs at the end of the stream
    start, kind = cluster.served()
    replayed = cluster.finish(timeline_step=60.0)
    assert replayed.cost == report.cost, "the replay must be the simulated run"
    final = ReadBack(
        replicas_ready=end.replicas_ready,
        replicas_starting=end.replicas_starting,
        standby_ready=end.standby_ready,
        standby_starting=end.standby_starting,
        serverless_provisioned=end.serverless_provisioned,
    )
    return Run(workload=workload, report=report, recorded=recorded, start=start, kind=kind, final=final)


def test_the_daemon_ledger_agrees_with_the_simulators_bill_on_one_recorded_stream(run: Run) -> None:
    workload, report, recorded, final = run.workload, run.report, run.recorded, run.final
    start, kind = run.start, run.kind

    metrics = DaemonMetrics()
    sink = MemorySink()
    executor = RecordedReadback(
        [r.readback for r in recorded] + [final],
        sink=sink,
        actuators=None,
        metrics=metrics,
        clock=WallClock(),
    )
    runtime = Runtime(
        policies={"m": POLICY},
        executor=executor,
        planner=plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=RuntimeOptions(dry_run=True),
    )
    batches = _events(workload, start, kind)

    async def daemon() -> None:
        runtime.assign(frozenset({"m"}), checkpoints={}, now=float(T0))
        for model, trigger in runtime.due(now=float(T0)):
            runtime.decide(model, trigger=trigger, now=float(T0))
        for s, batch in enumerate(batches):
            now = float(T0 + s + 1)
            assert runtime.ingest(batch, now=now) == []
            if s < DURATION - 1:  # the engine's last decision is before the workload's end
                for model, trigger in runtime.due(now=now):
                    runtime.decide(model, trigger=trigger, now=now)
        runtime.account(now=float(T0 + DURATION))  # the books close at the stream's end, on what runs then
        await runtime.executor.idle()

    asyncio.run(daemon())
    assert executor.readbacks == [], "one read-back per decision, as the simulator decided"
    published = [payload for _, payload in sink.decisions]
    assert len(published) == len(recorded)
    assert [p["at"] for p in published] == [float(T0) + r.at for r in recorded]

    ledger = runtime.owned["m"].ledger
    cost = ledger.settled_cost(POLICY)
    slo = ledger.slo
    assert slo.unknown == 0
    assert slo.met + slo.missed == report.requests
    # the figures the README quotes
    cost_gap = cost.total / report.cost.total - 1.0
    attainment_gap = slo.attainment - report.slo_attainment
    replicas_gap = cost.replicas / report.cost.replicas - 1.0
    print(
        f"\nsimulator ${report.cost.total:.4f}, ledger ${cost.total:.4f} ({cost_gap:+.3%}); "
        f"replicas ${report.cost.replicas:.4f} vs ${cost.replicas:.4f} ({replicas_gap:+.3%}); "
        f"attainment {report.slo_attainment:.4%} vs {slo.attainment:.4%} ({attainment_gap:+.4%} points); "
        f"predicted ${ledger.predicted:.4f} ({ledger.predicted / cost.total:.1%} of realized); "
        f"by kind sim {report.cost.as_dict()} ledger {cost.as_dict()}"
    )
    assert abs(cost_gap) < 0.01
    assert abs(attainment_gap) < 0.01
    assert cost.serverless_busy == _close(report.cost.serverless_busy)
    assert cost.serverless_tokens == _close(report.cost.serverless_tokens)
    assert cost.serverless_provisioned == _close(report.cost.serverless_provisioned)

    # every decision after the first carries the previous one's prediction beside the realized cost
    blocks = [p["ledger"] for p in published]
    for before, payload in itertools.pairwise(published):
        chosen = before["cost_per_hour"].get("chosen")  # type: ignore[attr-defined]  # a held no-data one: none
        block = payload["ledger"]
        assert block["predicted_dollars"] == (  # type: ignore[index]
            None
            if chosen is None
            else pytest.approx(chosen * (payload["at"] - before["at"]) / 3600, abs=2e-6)  # type: ignore[operator]
        )
    assert sum(b["predicted_dollars"] is not None for b in blocks) > len(blocks) / 2  # type: ignore[index]
    realized = sum(b["realized_dollars"] for b in blocks)  # type: ignore[index]
    assert realized <= cost.total
    # each block is rounded to 1e-6 dollars: the sum of n of them is off by at most n / 2 millionths
    rounding = 5e-7 * (len(blocks) + 1)
    assert blocks[-1]["total_dollars"] == pytest.approx(realized, abs=rounding)  # type: ignore[index]

    # the Prometheus counters say the same
    assert _exported(metrics, "scaler_cost_dollars_total") == _close(cost.total)
    assert _exported(metrics, "scaler_cost_dollars_total", kind="serverless_busy") == _close(
        cost.serverless_busy
    )
    assert _exported(metrics, "scaler_slo_requests_total", outcome="met") == slo.met
    assert _exported(metrics, "scaler_slo_requests_total", outcome="missed") == slo.missed
    assert _exported(metrics, "scaler_predicted_cost_dollars_total") == _close(ledger.predicted)


def _close(value: float, rel: float = 1e-9) -> object:
    return pytest.approx(value, rel=rel, abs=1e-9)


def _exported(metrics: DaemonMetrics, name: str, **labels: str) -> float:
    """Return the sum of the samples of ``name`` on /metrics whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                assert sample.labels["model"] == "m"
                total += sample.value
    return total


def test_without_first_token_events_the_estimate_from_finish_times_gives_the_simulators_attainment(
    run: Run,
) -> None:
    """Arrivals and finishes only (finish at slot start + S): the estimate inverts the cluster model."""
    workload = run.workload
    prompt = workload.prompt_tokens.astype(np.float64)
    hold = hold_seconds(POLICY, prompt, workload.output_tokens.astype(np.float64))
    ledger = Ledger()
    for i, at in enumerate(workload.arrivals.tolist()):
        rid, p, o = f"r{i}", int(workload.prompt_tokens[i]), int(workload.output_tokens[i])
        ledger.add_request(RequestEvent("m", T0 + at, "arrival", rid, p, o), POLICY)
        if run.kind[i] == kernels.DROPPED:
            event = RequestEvent("m", T0 + at + GIVE_UP_SECONDS, "reject", rid, p, o)
        else:
            event = RequestEvent("m", T0 + float(run.start[i] + hold[i]), "finish", rid, p, o)
        ledger.add_request(event, POLICY)
    slo = ledger.slo
    assert slo.estimated == run.report.requests - run.report.dropped  # every served one, labelled estimated
    assert slo.unknown == 0
    gap = slo.attainment - run.report.slo_attainment
    print(
        f"\nestimated attainment {slo.attainment:.4%}, simulator {run.report.slo_attainment:.4%} ({gap:+.4%})"
    )
    assert abs(gap) < 0.01
