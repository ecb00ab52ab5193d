"""One controller everywhere: the simulator and the daemon decide the same on the same event stream.

The simulator records each decision with the cluster read-back it was made on. The same arrivals,
encoded as request events on the request topic (an ``arrival`` and a ``finish`` per request at its
arrival time: the simulator credits output tokens with the arrival), go through the daemon's
runtime: decode, ownership, the controller's ``due`` and ``decide`` at the end of each second, the
decision payload, the executor. With the recorded read-backs handed back at each decision, every
decision must be the same, in time, trigger, capacity, spill and reason.
"""

from __future__ import annotations

import asyncio

from integration_fixtures import WallClock, step_stream

from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.controller import ReadBack
from scaler.core.events import RequestEvent, encode_request
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.executor import Executor
from scaler.forecast.models import DemandForecaster
from scaler.ports import RawRecord
from scaler.runtime import Runtime, RuntimeOptions
from scaler.sim.engine import simulate
from scaler.sim.spillway import SpillwayController
from scaler.sim.workload import Workload

T0 = 1_750_000_000
DURATION = 1800


class ReplayedReadback(Executor):
    """The daemon's executor, handing each decision the read-back the simulator decided on."""

    def __init__(self, readbacks: list[ReadBack], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.readbacks = list(readbacks)

    def readback(self, model: str) -> ReadBack | None:
        return self.readbacks.pop(0)


def _records(workload: Workload, topic: str) -> list[list[RawRecord]]:
    """Return the request events of each second, as the daemon consumes them."""
    per_second: list[list[RawRecord]] = [[] for _ in range(DURATION)]
    offset = 0
    columns = (workload.arrivals.tolist(), workload.prompt_tokens.tolist(), workload.output_tokens.tolist())
    for ts, prompt, output in zip(*columns, strict=True):
        for kind in ("arrival", "finish"):
            event = RequestEvent("m", T0 + ts, kind, f"r{offset}", int(prompt), int(output))  # type: ignore[arg-type]
            per_second[int(ts)].append(RawRecord(topic, 0, offset, b"m", encode_request(event)))
            offset += 1
    return per_second


def test_the_simulator_and_the_daemon_make_the_same_decisions_on_one_event_stream() -> None:
    policy = ModelPolicy.model_validate(
        {
            "name": "m",
            "forecast": {"bucket_seconds": 10, "horizon_seconds": 900},
            "lead_times": {"cold_start_seconds": 120},
        }
    )
    workload = step_stream(seed=11, duration=DURATION)
    sim = SpillwayController(policy, workload, start_unix=T0, record=True)
    simulate(workload, sim, policy=policy, initial_replicas=2)
    recorded = sim.recorded
    assert recorded is not None
    assert any(r.step.trigger == "burst" for r in recorded), "the step should trigger a burst re-plan"

    metrics = DaemonMetrics()
    sink = MemorySink()
    options = RuntimeOptions()
    runtime = Runtime(
        policies={"m": policy},
        executor=ReplayedReadback(
            [r.readback for r in recorded], sink=sink, actuators=None, metrics=metrics, clock=WallClock()
        ),
        planner=plan,
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=options,
    )

    async def daemon() -> list[tuple[float, str]]:
        runtime.assign(frozenset({"m"}), checkpoints={}, now=float(T0))
        made = []
        for model, trigger in runtime.due(now=float(T0)):
            runtime.decide(model, trigger=trigger, now=float(T0))
            made.append((0.0, trigger))
        # the engine's last decision is before the workload's end (the second that ends it decides nothing)
        for s, batch in enumerate(_records(workload, options.requests_topic)[: DURATION - 1]):
            now = float(T0 + s + 1)
            assert runtime.ingest(batch, now=now) == []
            for model, trigger in runtime.due(now=now):
                runtime.decide(model, trigger=trigger, now=now)
                made.append((now - T0, trigger))
        await runtime.executor.idle()
        return made

    made = asyncio.run(daemon())
    published = [payload for _, payload in sink.decisions]
    assert len(published) == len(recorded) > DURATION / policy.behavior.interval_seconds
    for (at, trigger), payload, rec in zip(made, published, recorded, strict=True):
        decision = rec.step.decision
        assert (at, trigger) == (rec.at, rec.step.trigger)
        assert payload["desired"] == {
            "replicas": decision.replicas,
            "standby": decision.standby,
            "serverless_provisioned": decision.serverless_provisioned,
        }, f"at t+{at:.0f} s"
        assert payload["reason"] == decision.reason
        assert payload["bound_by"] == decision.bound_by
        assert payload["routing"]["serverless"] == round(decision.spill_fraction, 6)  # type: ignore[index]
