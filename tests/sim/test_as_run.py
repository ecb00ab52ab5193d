"""The "as run" row: what the recorded cluster had, priced per second, and the SLO its events show."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaler.core.policy import ModelPolicy
from scaler.sim import as_run
from scaler.sim.events_trace import ModelReplay, ReplicaSamples
from scaler.sim.workload import Workload

POLICY = ModelPolicy(name="m")  # $4.00 per replica-hour, $0.0021 per busy serverless GPU-second, TTFT 2 s


def samples(rows: list[tuple[str, float, bool]]) -> ReplicaSamples:
    rows = sorted(rows, key=lambda row: row[1])
    return ReplicaSamples(
        replica=tuple(r for r, _, _ in rows),
        t=np.array([t for _, t, _ in rows], dtype=np.float64),
        ready=np.array([up for _, _, up in rows], dtype=np.bool_),
    )


def replay(
    replicas: ReplicaSamples | None,
    *,
    duration: float = 3600.0,
    n: int = 10,
    serverless: int = 0,
    ttft: list[float] | None = None,
    rejected: int = 0,
) -> ModelReplay:
    workload = Workload(
        name="events:m",
        arrivals=np.linspace(0.0, duration - 1, n),
        prompt_tokens=np.full(n, 1200, dtype=np.int64),
        output_tokens=np.full(n, 250, dtype=np.int64),
        duration=duration,
    )
    flags = np.zeros(n, dtype=np.bool_)
    flags[:serverless] = True
    rej = np.zeros(n, dtype=np.bool_)
    rej[n - rejected :] = True
    return ModelReplay(
        workload=workload,
        serverless=flags,
        ttft=np.array(ttft if ttft is not None else [math.nan] * n, dtype=np.float64),
        rejected=rej,
        replicas=replicas,
    )


def test_replicas_count_from_their_first_report_until_stale_starting_ones_too() -> None:
    rows = [("r1", float(t), True) for t in range(0, 3600, 10)]  # the whole hour
    rows += [("r2", float(t), t >= 2100) for t in range(1800, 3600, 10)]  # starts at 30 min, ready at 35
    rows += [("r3", 100.0, True)]  # reported once: counts 60 s after, then gone
    present, ready = as_run.replica_seconds(samples(rows), duration=3600.0, stale_seconds=60.0)
    assert present[[0, 100, 160, 161, 1799, 1800]].tolist() == [1, 2, 2, 1, 1, 2]
    assert ready[[1800, 2099, 2100]].tolist() == [1, 1, 2]
    assert present.sum() == 3600 + 1800 + 61


@pytest.mark.parametrize(
    ("rows", "dollars"),
    [
        ([("r1", float(t), True) for t in range(0, 3600, 30)], 4.00),  # one replica, one hour
        ([(r, float(t), True) for r in ("a", "b") for t in range(0, 1800, 30)], 2 * 4.00 * 1831 / 3600),
        ([("r1", 0.0, False)], 4.00 * 61 / 3600),  # a starting replica is billed too
    ],
)
def test_replica_cost_is_replica_seconds_times_the_price(
    rows: list[tuple[str, float, bool]], dollars: float
) -> None:
    row = as_run.as_run_summary(replay(samples(rows)), policy=POLICY)
    assert row is not None
    assert row.policy == "as run"
    assert row.cost.replicas == pytest.approx(dollars)
    assert row.cost.total == pytest.approx(dollars)


def test_requests_served_serverless_are_priced_as_the_cluster_model_prices_them() -> None:
    # a request of 1,200 prompt + 250 output tokens holds a slot for 64 * (0.1 + 0.1) = 12.8 s: 0.2 GPU-s
    row = as_run.as_run_summary(replay(samples([("r1", 0.0, True)]), serverless=4), policy=POLICY)
    assert row is not None
    assert row.cost.serverless_busy == pytest.approx(4 * 0.2 * 0.0021)
    assert (row.served_serverless, row.served_kubernetes) == (4, 6)
    assert row.serverless_share == pytest.approx(0.4)


def test_slo_is_read_from_first_token_times_and_rejects_are_misses() -> None:
    ttft = [0.5, 1.0, 1.5, 3.0, math.nan, 0.2, 0.2, 0.2, 0.2, math.nan]  # last one is rejected
    row = as_run.as_run_summary(replay(samples([("r1", 0.0, True)]), ttft=ttft, rejected=1), policy=POLICY)
    assert row is not None
    assert row.slo_attainment == pytest.approx(7 / 9)  # 9 judged: 8 with a first token + 1 reject
    assert row.dropped == 1
    assert row.ttft_p50 == pytest.approx(0.35)
    assert math.isnan(row.wait_p50)


def test_without_replica_events_there_is_no_row() -> None:
    assert as_run.as_run_summary(replay(None), policy=POLICY) is None


def test_without_first_token_events_attainment_is_unknown_not_perfect() -> None:
    row = as_run.as_run_summary(replay(samples([("r1", 0.0, True)])), policy=POLICY)
    assert row is not None
    assert math.isnan(row.slo_attainment)
