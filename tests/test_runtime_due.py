"""The runtime's due(): many models assigned at once are spread out, and each is decided on its interval."""

from __future__ import annotations

import asyncio
from collections import Counter

from integration_fixtures import make_runtime
from test_daemon_loop import RecordingSink, _policies

from scaler.runtime import FIRST_TICKS_AT_ONCE

T0 = 1_750_000_200.0


def test_a_thousand_models_are_each_decided_once_per_interval_and_no_tick_takes_them_all() -> None:
    names = [f"m{i:04d}" for i in range(1000)]
    sink = RecordingSink()
    rt = make_runtime(_policies(*names, interval=10.0), sink=sink)
    rt.assign(frozenset(names), checkpoints={}, now=T0)
    per_tick: list[int] = []

    async def run() -> None:
        for tick in range(161):  # 40 s in ticks of 0.25 s
            now = T0 + tick * 0.25
            due = rt.due(now=now)
            per_tick.append(len(due))
            for model, trigger in due:
                rt.decide(model, trigger=trigger, now=now)
        await rt.executor.idle()

    asyncio.run(run())
    assert max(per_tick) <= FIRST_TICKS_AT_ONCE
    decided = Counter(model for model, _ in sink.decisions)
    assert set(decided) == set(names)
    assert set(decided.values()) <= {4, 5}  # 40 s at one decision per 10 s, whatever the phase
    assert sum(per_tick[:40]) == 1000  # every model's first decision within its first interval
