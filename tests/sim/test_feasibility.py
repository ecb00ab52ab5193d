"""SLO feasibility: the attainable ceiling of a workload whose prompts are too long for the TTFT target."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.core.policy import ModelPolicy, Slo
from scaler.sim import synthetic
from scaler.sim.feasibility import feasibility
from scaler.sim.workload import RateWorkload, TokenSizes, Workload

LONG_PROMPTS = TokenSizes(mean_prompt=20_000.0, mean_output=200.0, sigma_prompt=0.8, sigma_output=0.5)


def test_long_prompts_set_a_ceiling_below_the_slo_and_say_so() -> None:
    policy = ModelPolicy(name="m")  # 12,000 prefill tokens/s against a 2 s TTFT target: 24,000 tokens fit
    workload = synthetic.synthetic("diurnal", seed=3, duration=1800.0, tokens=LONG_PROMPTS)
    fits = feasibility(workload, policy=policy)
    too_long = int(np.count_nonzero(workload.prompt_tokens > 24_000))
    assert fits.prefill_misses == too_long > 0
    assert fits.ceiling == pytest.approx(1 - too_long / workload.requests)
    assert not fits.meetable
    assert fits.judged_goal == pytest.approx(fits.ceiling - 0.005)
    line = fits.line(policy="m")
    assert "\n" not in line
    assert f"attainable ceiling {fits.ceiling:.2%}" in line
    assert "The SLO of policy m (99.00%) cannot be met on this workload" in line
    assert fits.cold_path_ceiling == 0.0  # 15 s of serverless cold start never fits 2 s


def test_short_prompts_leave_the_slo_meetable_and_the_cold_path_decides_bursts() -> None:
    workload = synthetic.synthetic("flash-crowd", seed=0, duration=900.0)
    fits = feasibility(workload, policy=ModelPolicy(name="m"))
    assert fits.meetable
    assert fits.ceiling > 0.999
    assert "cannot be met" not in fits.line(policy="m")
    fast = ModelPolicy.model_validate(
        {"name": "m", "lead_times": {"serverless_cold_start_seconds": 0.5}, "slo": {"ttft_seconds": 2.0}}
    )
    cold_fits = feasibility(workload, policy=fast)
    prefill = workload.prompt_tokens / 12_000.0
    assert cold_fits.cold_path_misses == int(np.count_nonzero(prefill + 0.5 > 2.0))


def test_a_queue_wait_slo_has_no_prefill_ceiling() -> None:
    workload = synthetic.synthetic("diurnal", seed=3, duration=900.0, tokens=LONG_PROMPTS)
    policy = ModelPolicy(name="m", slo=Slo(ttft_seconds=None, queue_wait_seconds=1.0))
    assert feasibility(workload, policy=policy).ceiling == 1.0


def test_a_rate_workload_fits_or_misses_as_a_whole() -> None:
    counts = np.full(60, 2.0)
    short = RateWorkload(name="r", counts=counts, mean_prompt_tokens=1000.0, mean_output_tokens=100.0)
    long = RateWorkload(name="r", counts=counts, mean_prompt_tokens=30_000.0, mean_output_tokens=100.0)
    policy = ModelPolicy(name="m")
    assert feasibility(short, policy=policy).ceiling == 1.0
    assert feasibility(long, policy=policy).ceiling == 0.0


def test_an_empty_workload_is_trivially_meetable() -> None:
    empty = Workload(
        name="e",
        arrivals=np.zeros(0),
        prompt_tokens=np.zeros(0, dtype=np.int64),
        output_tokens=np.zeros(0, dtype=np.int64),
        duration=10.0,
    )
    assert feasibility(empty, policy=ModelPolicy(name="m")).meetable
