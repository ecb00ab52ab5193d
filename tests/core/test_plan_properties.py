"""Planner properties over random valid policies, forecasts and observations: bounds always hold."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.schedule import effective_bounds
from scaler.core.types import Decision, DemandForecast, Observed, Unavailable


@st.composite
def policies(draw: st.DrawFn) -> ModelPolicy:
    min_r = draw(st.integers(0, 10))
    max_r = draw(st.integers(min_r, 40))
    min_s = draw(st.integers(0, 3))
    quota = draw(st.integers(0 if max_r > 0 else 1, 30))
    schedules = []
    if draw(st.booleans()):
        fields = ["min_replicas", "max_replicas", "min_standby", "max_standby", "serverless_quota"]
        overrides = draw(st.dictionaries(st.sampled_from(fields), st.integers(0, 20), min_size=1))
        start, end = draw(st.sampled_from([("00:00", "24:00"), ("22:00", "06:00"), ("09:00", "17:00")]))
        schedules.append({"name": "s", "start": start, "end": end, "timezone": "Europe/Berlin", **overrides})
    raw: dict[str, Any] = {
        "name": "m",
        "slo": {
            "ttft_seconds": draw(st.floats(0.2, 10.0)),
            "queue_wait_seconds": draw(st.none() | st.floats(0.01, 5.0)),
            "attainment": draw(st.floats(0.5, 0.999)),
        },
        "replica": {
            "prefill_tokens_per_second": draw(st.floats(1000.0, 50_000.0)),
            "decode_tokens_per_second": draw(st.floats(200.0, 10_000.0)),
            "max_concurrency": draw(st.integers(1, 256)),
        },
        "lead_times": {
            "cold_start_seconds": draw(st.floats(0.0, 1200.0)),
            "standby_promotion_seconds": draw(st.floats(0.0, 120.0)),
            "serverless_cold_start_seconds": draw(st.floats(0.0, 120.0)),
        },
        "prices": {
            "replica_per_hour": draw(st.floats(0.0, 10.0)),
            "serverless_per_gpu_second": draw(st.floats(0.0, 0.01)),
            "serverless_per_million_tokens": draw(st.floats(0.0, 1.0)),
            "serverless_provisioned_per_hour": draw(st.floats(0.0, 5.0)),
        },
        "bounds": {
            "min_replicas": min_r, "max_replicas": max_r, "min_standby": min_s,
            "max_standby": draw(st.integers(min_s, 5)), "serverless_quota": quota,
        },
        "behavior": {
            "interval_seconds": draw(st.floats(1.0, 60.0)),
            "max_step_up": draw(st.integers(1, 10)),
            "max_step_down": draw(st.integers(1, 10)),
            "scale_down_delay_seconds": draw(st.floats(0.0, 1800.0)),
            "stabilization_seconds": draw(st.floats(0.0, 600.0)),
        },
        "forecast": {
            "bucket_seconds": draw(st.integers(10, 300)),
            "quantile": draw(st.none() | st.floats(0.01, 0.99)),
        },
        "schedules": schedules,
    }
    return ModelPolicy.model_validate(raw)


@st.composite
def forecasts(draw: st.DrawFn, *, now: float) -> DemandForecast:
    if draw(st.integers(0, 9)) == 0:
        return DemandForecast.unusable(start=now, note="gap")
    k = draw(st.integers(1, 9))
    h = draw(st.integers(1, 40))
    levels = np.array(sorted(draw(st.sets(st.floats(0.01, 0.99), min_size=k, max_size=k))))
    values = draw(st.lists(st.floats(0.0, 200.0), min_size=k * h, max_size=k * h))
    quantiles = np.sort(np.array(values).reshape(k, h), axis=0)
    bucket = float(draw(st.integers(10, 300)))
    return DemandForecast(
        start=now - draw(st.floats(0.0, bucket)),
        bucket_seconds=bucket,
        levels=levels,
        rate_mean=quantiles.mean(axis=0),
        rate_quantiles=quantiles,
        mean_prompt_tokens=draw(st.floats(0.0, 4000.0)),
        mean_output_tokens=draw(st.floats(0.0, 1000.0)),
    )


observations = st.builds(
    Observed,
    replicas_ready=st.integers(0, 50),
    replicas_starting=st.integers(0, 10),
    standby_ready=st.integers(0, 5),
    standby_starting=st.integers(0, 5),
    serverless_provisioned=st.integers(0, 40),
    request_rate=st.none() | st.floats(0.0, 300.0),
    unavailable=st.sampled_from(
        [Unavailable.NONE, Unavailable.KUBERNETES, Unavailable.SERVERLESS, ~Unavailable.NONE]
    ),
)


def assert_within_bounds(p: ModelPolicy, d: Decision, *, now: float) -> None:
    bounds, _ = effective_bounds(p, now=now)
    assert bounds.min_replicas <= d.replicas <= bounds.max_replicas
    assert bounds.min_standby <= d.standby <= bounds.max_standby
    assert 0 <= d.serverless_provisioned <= bounds.serverless_quota
    assert 0.0 <= d.spill_fraction <= 1.0
    assert d.reason.strip()
    assert d.bound_by.strip()
    assert 0.0 <= d.quantile <= 1.0  # 1.0: replicas are free, so size them for the peak


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), p=policies(), now=st.floats(1.7e9, 1.9e9), obs=observations)
def test_every_output_is_within_the_bounds_in_force(
    data: st.DataObject, p: ModelPolicy, now: float, obs: Observed
) -> None:
    first = plan(policy=p, forecast=data.draw(forecasts(now=now)), observed=obs, previous=None, now=now)
    assert_within_bounds(p, first, now=now)
    later = now + data.draw(st.floats(1.0, 40_000.0))
    second = plan(policy=p, forecast=data.draw(forecasts(now=later)), observed=obs, previous=first, now=later)
    assert_within_bounds(p, second, now=later)
    if not second.held and Unavailable.KUBERNETES not in obs.unavailable:
        # Step limits hold unless the bounds in force forced a bigger move.
        bounds, _ = effective_bounds(p, now=later)
        stepped = min(max(second.replicas, first.replicas - p.behavior.max_step_down),
                      first.replicas + p.behavior.max_step_up)
        assert second.replicas == stepped or second.replicas in (bounds.min_replicas, bounds.max_replicas)
