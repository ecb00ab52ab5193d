"""The executor's publishing: each model's decisions reach the sink in the order they were made."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from scaler.adapters.memory import MemorySink
from scaler.adapters.metrics import DaemonMetrics
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision
from scaler.executor import Executor
from tests.integration_fixtures import WallClock, sample


class OutageSink(MemorySink):
    """A sink whose first ``stuck`` sends hang until the broker comes back; one of them then fails."""

    def __init__(self, *, stuck: int) -> None:
        super().__init__()
        self.back = asyncio.Event()
        self.stuck = stuck
        self.calls = 0

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        self.calls += 1
        call = self.calls
        if call <= self.stuck:
            await self.back.wait()
            await asyncio.sleep(0.001 * (self.stuck - call))  # the oldest send comes back last
            if call == 2:
                raise ConnectionError("request timed out")
        await super().publish(model=model, payload=payload)


DECISION = Decision(
    at=0.0,
    replicas=2,
    standby=0,
    serverless_provisioned=0,
    spill_fraction=0.0,
    reason="test",
    bound_by="none",
    quantile=0.9,
    cost_per_hour={},
    recent_targets=(),
)


def test_decisions_made_during_an_outage_are_published_in_the_order_they_were_made() -> None:
    metrics = DaemonMetrics()

    async def run() -> OutageSink:
        sink = OutageSink(stuck=4)
        executor = Executor(sink=sink, actuators=None, metrics=metrics, clock=WallClock())
        for n in range(6):
            for model in ("chat", "code"):
                executor.submit(policy=ModelPolicy(name=model), decision=DECISION, payload={"n": n})
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        sink.back.set()
        await executor.idle()
        return sink

    sink = asyncio.run(run())
    for model in ("chat", "code"):
        seen = [payload["n"] for m, payload in sink.decisions if m == model]
        assert seen == sorted(seen), f"{model}: {seen}"
    assert len(sink.decisions) == 11  # the one that failed is counted, not retried out of order
    assert sample(metrics, "scaler_publish_errors_total") == 1
    # 12 made, 11 acknowledged: the failed one leaves scaler_decisions_published_total flat
    published = {m: sample(metrics, "scaler_decisions_published_total", model=m) for m in ("chat", "code")}
    assert sum(published.values()) == 11
    assert published == {m: sum(1 for d, _ in sink.decisions if d == m) for m in ("chat", "code")}
