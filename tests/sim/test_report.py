"""The report: a row per policy with the oracle last, JSON that round-trips every figure, a real PNG."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from scaler.core.accounting import CostBreakdown
from scaler.sim import report
from scaler.sim.results import SimResult, Summary, Timeline


def _summary(policy: str, *, cost: float, attainment: float = 0.995, dropped: int = 0) -> Summary:
    return Summary(
        policy=policy,
        workload="tiny",
        cost=CostBreakdown(
            replicas=cost * 0.6,
            standby=cost * 0.1,
            serverless_busy=cost * 0.3,
            serverless_provisioned=0.0,
            serverless_tokens=0.0,
        ),
        requests=1000,
        served_kubernetes=700,
        served_serverless=300 - dropped,
        dropped=dropped,
        slo_attainment=attainment,
        wait_p50=0.0,
        wait_p95=0.25,
        wait_p99=1.5,
        ttft_p50=0.1,
        ttft_p95=0.4,
        ttft_p99=math.nan,
        idle_replica_hours=2.5,
        scaling_actions=12,
    )


def _result(summary: Summary, *, n: int = 120, level: float = 3.0) -> SimResult:
    t = np.arange(n, dtype=np.float64) * 60.0
    wave = level + np.sin(t / 600.0)
    return SimResult(
        summary=summary,
        timeline=Timeline(
            step=60.0,
            t=t,
            arrival_rate=wave * 5,
            replicas_ready=np.floor(wave),
            replicas_starting=np.zeros(n),
            standby_ready=np.ones(n),
            serverless_instances=np.maximum(wave - np.floor(wave), 0),
            slo_misses=(np.arange(n) % 17 == 0).astype(np.float64),
        ),
    )


def _text(table: object) -> str:
    console = Console(width=250, record=True)
    console.print(table)
    return console.export_text()


def test_table_has_a_row_per_policy_and_the_oracle_last_with_cost_ratios() -> None:
    rows = [_summary("spillway", cost=110.0), _summary("hpa", cost=200.0, attainment=0.9, dropped=7)]
    oracle = _summary("oracle", cost=100.0, attainment=0.99)
    text = _text(report.render_table(rows, oracle=oracle))
    lines = [line for line in text.splitlines() if line.strip("│ ").startswith(("spillway", "hpa", "oracle"))]
    assert [line.strip("│ ").split()[0] for line in lines] == ["spillway", "hpa", "oracle"]
    assert "1.10" in lines[0]
    assert "2.00" in lines[1]
    assert "7 dropped" in lines[1]
    assert "90.00%" in lines[1]
    assert "$110.00" in lines[0]


def test_the_as_run_row_comes_first_and_shows_what_a_recording_cannot_know_as_a_dash() -> None:
    recorded = dataclasses.replace(
        _summary("as run", cost=300.0),
        slo_attainment=math.nan,
        wait_p50=math.nan,
        idle_replica_hours=math.nan,
    )
    rows = [_summary("spillway", cost=110.0)]
    text = _text(report.render_table(rows, oracle=_summary("oracle", cost=100.0), as_run=recorded))
    lines = [
        line.strip("│ ")
        for line in text.splitlines()
        if line.strip("│ ").startswith(("as run", "spill", "orac"))
    ]
    assert [line.split("│")[0].strip() for line in lines] == ["as run", "spillway", "oracle"]
    cells = [cell.strip() for cell in lines[0].split("│")]
    assert cells[1:4] == ["$300.00", "3.00", "-"]  # cost, x oracle, SLO met unknown
    assert cells[7] == "-"  # idle replica-hours unknown
    doc = json.loads(report.to_json(rows, oracle=None, as_run=recorded))
    assert doc["as_run"]["policy"] == "as run"
    assert doc["as_run"]["slo_attainment"] is None


def test_table_without_an_oracle_shows_no_ratio() -> None:
    text = _text(report.render_table([_summary("hpa", cost=10.0)], oracle=None))
    row = next(line for line in text.splitlines() if "hpa" in line)
    assert " - " in row


def test_json_round_trips_every_figure_and_writes_nan_as_null() -> None:
    rows = [_summary("spillway", cost=110.0), _summary("hpa", cost=200.0)]
    oracle = _summary("oracle", cost=100.0)
    doc = json.loads(report.to_json(rows, oracle=oracle))
    assert [p["policy"] for p in doc["policies"]] == ["spillway", "hpa"]
    assert doc["oracle"]["policy"] == "oracle"
    first = doc["policies"][0]
    expected = rows[0].as_dict()
    for key in ("requests", "served_serverless", "slo_attainment", "wait_p99", "idle_replica_hours"):
        assert first[key] == expected[key]
    assert first["cost"]["total"] == pytest.approx(110.0)
    assert first["cost_vs_oracle"] == pytest.approx(1.1)
    assert first["serverless_share"] == pytest.approx(0.3)
    assert first["ttft_p99"] is None


def test_plot_writes_a_png(tmp_path: Path) -> None:
    results = [_result(_summary("spillway", cost=1.0)), _result(_summary("hpa", cost=2.0), level=5.0)]
    out = tmp_path / "sim.png"
    report.plot(results, path=out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # three panels with lines, not an empty canvas


def test_plot_refuses_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no results"):
        report.plot([], path=tmp_path / "x.png")
