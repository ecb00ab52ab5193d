"""The cluster model with each serverless backend's profile: Bedrock per token within its quota."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.cli import main
from scaler.core.policy import ModelPolicy
from scaler.sim import kernels
from scaler.sim.engine import simulate
from scaler.sim.spillway import SpillwayController
from tests.sim.test_cluster import fixed, run_cluster, starts_and_kinds, workload
from tests.sim.test_spillway_controller import DURATION, STEP_AT, _step_workload

IN_PRICE, OUT_PRICE = 0.5, 2.0  # $ per million input / output tokens


def bedrock_policy(tokens_per_minute: int, **sections: object) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "name": "m",
            "slo": {"ttft_seconds": 2.0, "attainment": 0.9},
            "replica": {
                "prefill_tokens_per_second": 1000.0,
                "decode_tokens_per_second": 100.0,
                "max_concurrency": 1,
            },
            "prices": {
                "replica_per_hour": 3.6,
                "serverless_per_million_input_tokens": IN_PRICE,
                "serverless_per_million_output_tokens": OUT_PRICE,
            },
            "targets": {
                "serverless": {
                    "backend": "bedrock",
                    "model_id": "meta.llama3-1-8b-instruct-v1:0",
                    "tokens_per_minute": tokens_per_minute,
                }
            },
            **sections,
        }
    )


def test_bedrock_serves_on_arrival_within_each_minutes_tokens_and_throttles_the_rest() -> None:
    # requests of 1,000 + 100 tokens; the quota admits 5 per minute; no replica to fall back on
    policy = bedrock_policy(5 * 1100)
    arrivals = [float(t) for t in range(1, 11)] + [61.0, 62.0]
    cluster = run_cluster(
        workload(arrivals, duration=300.0), fixed(0, serverless=True, provisioned=3), policy
    )
    start, kind = starts_and_kinds(cluster)
    assert list(kind[:5]) == [kernels.SERVERLESS] * 5
    assert start[:5] == pytest.approx(arrivals[:5])  # no cold start
    assert list(kind[5:10]) == [kernels.DROPPED] * 5  # throttled, no replica: given up after 60 s
    assert list(kind[10:]) == [kernels.SERVERLESS] * 2  # the next minute has its own tokens
    assert cluster._n_prov == 0  # nothing provisioned, whatever was asked


def test_bedrock_is_billed_per_input_and_output_token_and_nothing_else() -> None:
    policy = bedrock_policy(10**9)
    result = simulate(
        workload([1.0, 2.0, 3.0], duration=600.0), fixed(0, serverless=True, provisioned=2), policy=policy
    )
    cost = result.summary.cost
    assert cost.serverless_tokens == pytest.approx(3 * (1000 * IN_PRICE + 100 * OUT_PRICE) / 1e6)
    assert cost.serverless_busy == 0.0
    assert cost.serverless_provisioned == 0.0
    assert result.summary.served_serverless == 3
    assert result.summary.ttft_p99 == pytest.approx(1.0)  # the prefill alone: no cold start


def test_a_throttled_request_waits_for_a_replica_instead() -> None:
    policy = bedrock_policy(1100, bounds={"min_replicas": 1})
    cluster = run_cluster(workload([1.0, 1.5], duration=120.0), fixed(1, serverless=True), policy)
    _, kind = starts_and_kinds(cluster)
    assert sorted(kind.tolist()) == sorted([kernels.KUBERNETES, kernels.SERVERLESS])


@pytest.mark.parametrize("tokens_per_minute", [60 * 3 * 1200, 60 * 40 * 1200])
def test_the_daemons_controller_spills_to_bedrock_within_its_quota(tokens_per_minute: int) -> None:
    """A 2 -> 30 req/s step: what Bedrock served never exceeds its tokens per minute, billed per token."""
    w = _step_workload()
    pol = ModelPolicy.model_validate(
        {
            "name": "m",
            "lead_times": {"cold_start_seconds": 300},
            "forecast": {"horizon_seconds": 1800},
            "prices": {
                "serverless_per_million_input_tokens": 0.22,
                "serverless_per_million_output_tokens": 0.22,
            },
            "targets": {
                "serverless": {
                    "backend": "bedrock",
                    "model_id": "meta.llama3-1-8b-instruct-v1:0",
                    "tokens_per_minute": tokens_per_minute,
                }
            },
        }
    )
    result = simulate(w, SpillwayController(pol, w), policy=pol)
    summary = result.summary
    assert summary.served_serverless > 0  # the step spills at once
    minutes = int(DURATION // 60)
    assert summary.served_serverless * 1200 <= tokens_per_minute * minutes
    assert summary.cost.serverless_tokens == pytest.approx(summary.served_serverless * 1200 * 0.22 / 1e6)
    assert summary.cost.serverless_busy == 0.0
    assert summary.cost.serverless_provisioned == 0.0
    assert np.all(result.timeline.serverless_instances == 0.0)  # no instances on a per-token backend
    if tokens_per_minute >= 60 * 30 * 1200:  # room for the whole step: Bedrock absorbs it at once
        assert summary.slo_attainment >= 0.99
    else:  # a quota for 3 of the 28 extra req/s: replicas take over the rest once started
        assert result.timeline.replicas_ready[-1] >= 5
        assert summary.dropped > 0
    step = int(STEP_AT // result.timeline.step)
    assert result.timeline.slo_misses[:step].sum() == 0  # before the step nothing is missed


def test_the_fluid_model_refuses_a_per_token_backend_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    args = [
        "simulate",
        "--policy",
        str(root / "policies" / "bedrock-spill.yaml"),
        "--fluid",
        "--duration",
        "600",
    ]
    assert main([*args, "--baselines", "none", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: backend bedrock bills per token and the fluid model (--fluid, per-second counts) has "
        "serverless instances only: run the per-request model"
    )


def test_bedrock_policy_simulates_per_request_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bedrock.json"
    root = Path(__file__).resolve().parents[2]
    args = ["simulate", "--policy", str(root / "policies" / "bedrock-spill.yaml"), "--duration", "1200"]
    assert main([*args, "--seed", "1", "--baselines", "none", "--no-progress", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    spillway = next(p for p in doc["policies"] if p["policy"] == "spillway")
    assert spillway["cost"]["serverless_busy"] == 0.0
    assert spillway["cost"]["serverless_provisioned"] == 0.0
    assert spillway["cost"]["serverless_tokens"] > 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrivals=st.lists(st.floats(min_value=0.0, max_value=299.0), min_size=1, max_size=200),
    prompt=st.integers(min_value=1, max_value=4000),
    output=st.integers(min_value=1, max_value=1000),
    tokens_per_minute=st.integers(min_value=1, max_value=200_000),
    replicas=st.integers(min_value=0, max_value=2),
)
def test_bedrock_never_serves_more_tokens_in_a_minute_than_its_quota(
    arrivals: list[float], prompt: int, output: int, tokens_per_minute: int, replicas: int
) -> None:
    policy = bedrock_policy(tokens_per_minute, bounds={"min_replicas": replicas})
    w = workload(sorted(arrivals), duration=300.0, prompt=prompt, output=output)
    cluster = run_cluster(w, fixed(replicas, serverless=True), policy)
    _, kind = starts_and_kinds(cluster)
    on_bedrock = np.asarray(sorted(arrivals))[kind == kernels.SERVERLESS]
    per_minute = np.bincount((on_bedrock // 60).astype(np.int64), minlength=6) * (prompt + output)
    assert np.all(per_minute <= tokens_per_minute)
    assert np.all(kind != kernels.PENDING)  # every request ends served or dropped
