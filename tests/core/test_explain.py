"""explain(): the figures an SRE reads off a policy, computed from its prices, capacity and lead times."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.explain import explain, requests_per_second
from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import parse_policy_text


def policy(**sections: Any) -> ModelPolicy:
    return ModelPolicy.model_validate({"name": "m", **sections})


def text_of(p: ModelPolicy) -> str:
    return "\n".join(explain(p).facts)


@pytest.mark.parametrize(
    ("replica_per_hour", "per_gpu_second", "percent", "busy_hour"),
    [
        (4.00, 0.0021, "53%", "$7.56"),
        (2.50, 0.0021, "33%", "$7.56"),
        (2.00, 0.0010, "56%", "$3.60"),
        (1.00, 0.0050, "6%", "$18.00"),
        (6.00, 0.0020, "83%", "$7.20"),
    ],
)
def test_break_even_utilisation_is_stated_from_the_prices(
    replica_per_hour: float, per_gpu_second: float, percent: str, busy_hour: str
) -> None:
    p = policy(prices={"replica_per_hour": replica_per_hour, "serverless_per_gpu_second": per_gpu_second})
    expected = (
        f"a replica pays off above {percent} utilisation "
        f"(replica ${replica_per_hour:.2f}/h vs serverless {busy_hour} per busy hour)"
    )
    assert expected in explain(p).facts


@pytest.mark.parametrize(("replica_per_hour", "quantile"), [(4.00, "0.47"), (2.50, "0.67"), (6.00, "0.21")])
def test_replicas_are_sized_to_the_cost_optimal_fractile(replica_per_hour: float, quantile: str) -> None:
    p = policy(prices={"replica_per_hour": replica_per_hour})
    assert f"replicas are sized to the {quantile} quantile of forecast demand" in text_of(p)
    assert p.sizing_quantile == pytest.approx(1 - replica_per_hour / 7.56)


def test_a_pinned_quantile_is_used_and_the_optimal_one_still_shown() -> None:
    p = policy(forecast={"quantile": 0.9})
    assert p.sizing_quantile == 0.9
    assert "sized to the 0.90 quantile of demand (forecast.quantile); cost-optimal fractile" in text_of(p)
    assert "1 - c_k/c_s is 0.47" in text_of(p)


@pytest.mark.parametrize(
    ("min_replicas", "tail"), [(0, "everything goes serverless"), (2, "above the min bound of 2")]
)
def test_when_serverless_is_cheaper_even_at_full_use_replicas_never_pay(min_replicas: int, tail: str) -> None:
    p = policy(prices={"replica_per_hour": 9.0}, bounds={"min_replicas": min_replicas})
    facts = text_of(p)
    assert "replicas never pay off" in facts
    assert "$7.56 per busy hour is cheaper than a replica ($9.00/h) even at 100% utilisation" in facts
    assert tail in facts
    assert "pays off above" not in facts
    assert p.sizing_quantile is None


@pytest.mark.parametrize(
    ("prefill", "decode", "prompt", "output", "rate"),
    [
        (12_000, 2_500, 1_000, 200, "6.1"),  # 1 / (1000/12000 + 200/2500) = 6.12
        (8_000, 1_800, 1_000, 200, "4.2"),  # 1 / (0.125 + 0.111) = 4.24
        (10_000, 1_000, 2_000, 28, "4.4"),  # 1 / (0.2 + 0.028) = 4.39
    ],
)
def test_replica_throughput_at_typical_request_sizes(
    prefill: float, decode: float, prompt: int, output: int, rate: str
) -> None:
    p = policy(replica={"prefill_tokens_per_second": prefill, "decode_tokens_per_second": decode})
    computed = requests_per_second(p, prompt_tokens=prompt, output_tokens=output)
    assert computed == pytest.approx(1 / (prompt / prefill + output / decode))
    facts = explain(p, prompt_tokens=prompt, output_tokens=output).facts
    assert any(f.startswith(f"one replica serves about {rate} requests/s") for f in facts), facts


def test_warm_standby_and_floor_costs_per_hour() -> None:
    bounds = {"min_replicas": 2, "min_standby": 1, "max_standby": 3}
    p = policy(prices={"replica_per_hour": 3.0}, bounds=bounds)
    facts = text_of(p)
    assert "kept out of the Service by its label) costs $3.00/h each" in facts
    assert "no cheaper than a replica, so the planner keeps only min_standby" in facts
    assert "1-3 standby replicas cost $3.00-$9.00/h" in facts
    assert "the floor of 2 costs $6.00/h with no traffic" in facts
    cheap = text_of(policy(prices={"replica_per_hour": 3.0, "standby_per_hour": 1.0}, bounds=bounds))
    assert "costs $1.00/h each" in cheap
    assert "cheaper than a replica, so the planner keeps standby" in cheap
    workload = {"kubernetes": {"namespace": "llm", "name": "chat", "standby_name": "chat-standby"}}
    second = text_of(
        policy(prices={"replica_per_hour": 3.0, "standby_per_hour": 1.0}, bounds=bounds, targets=workload)
    )
    assert "a second workload: promotion scales the serving workload up" in second
    assert "serves in 300 s instead of 300 s, promoted no faster than a replica starts" in second


def test_learned_lead_times_are_shown_beside_the_configured_ones() -> None:
    p = policy(lead_times={"cold_start_seconds": 200})
    facts = text_of(p)
    assert "the planner starts a new replica's lifetime at their p0 (the fastest seen)" in facts
    assert "covers the cold start with standby and serverless up to their p90" in facts
    assert "within [50 s, 800 s] for a replica" in facts
    shown = "\n".join(explain(p, learned={"replica": {0.9: 142.0, 0.0: 101.0}}).facts)
    assert "replica cold start 142 s learned (p90, typical 101 s (p0); configured 200 s)" in shown
    assert "serverless warm-up 15 s configured (nothing learned yet)" in shown
    old_daemon = "\n".join(explain(p, learned={"replica": {None: 142.0}}).facts)  # no quantile label
    assert "replica cold start 142 s learned (p90; configured 200 s)" in old_daemon
    off = text_of(policy(lead_times={"learn": False}))
    assert "lead times are not learned (lead_times.learn false)" in off


def test_cold_start_sets_the_minimum_horizon_and_a_short_horizon_warns() -> None:
    p = policy(lead_times={"cold_start_seconds": 600}, forecast={"horizon_seconds": 300})
    explanation = explain(p)
    expected = "a cold replica takes 10.0 min to serve, so the forecast must see at least 10.0 min ahead"
    assert expected in text_of(p)
    assert any(
        w.startswith("forecast.horizon_seconds (300) is shorter than lead_times.cold_start_seconds (600)")
        for w in explanation.warnings
    )
    assert "Warnings:" in explanation.render()


def test_defaults_raise_no_warnings() -> None:
    assert explain(policy()).warnings == []


def test_provisioned_serverless_break_even_against_a_replica() -> None:
    # replica $4.00/h vs provisioned $1.00/h + $7.56 per busy hour: equal at (4 - 1) / 7.56 = 40%
    assert "a replica beats provisioned serverless above 40% utilisation" in text_of(policy())
    p = policy(prices={"serverless_provisioned_per_hour": 5.0})
    assert "provisioned serverless never beats a replica" in text_of(p)


def test_schedules_are_listed_with_days_times_zone_and_overrides() -> None:
    schedule = {
        "name": "night", "days": ["sat", "sun"], "start": "22:00", "end": "06:00",
        "timezone": "America/New_York", "max_replicas": 2,
    }
    facts = text_of(policy(schedules=[schedule]))
    expected = "schedule 'night': sat,sun 22:00-06:00 (crosses midnight) America/New_York: max_replicas 2"
    assert expected in facts
    assert "no schedules" in text_of(policy())


def test_effective_yaml_has_defaults_filled_in_and_reads_back_as_the_same_policy() -> None:
    p = policy(prices={"replica_per_hour": 3.0}, schedules=[{"name": "d", "start": "08:00", "end": "09:00",
                                                             "min_replicas": 1}])
    effective = explain(p).effective_yaml
    assert "cold_start_seconds: 300.0" in effective
    indented = "\n".join("    " + line for line in effective.splitlines())
    again = parse_policy_text("models:\n  -\n" + indented + "\n", source="effective.yaml")
    assert again.models[0] == p


@settings(max_examples=100, deadline=None)
@given(
    replica=st.floats(min_value=0.0, max_value=100.0),
    per_second=st.floats(min_value=0.0, max_value=0.1),
    provisioned=st.floats(min_value=0.0, max_value=100.0),
)
def test_any_prices_explain_without_error_and_state_one_verdict(
    replica: float, per_second: float, provisioned: float
) -> None:
    p = policy(
        prices={
            "replica_per_hour": replica,
            "serverless_per_gpu_second": per_second,
            "serverless_provisioned_per_hour": provisioned,
        }
    )
    facts = text_of(p)
    assert ("pays off above" in facts) != ("never pay off" in facts)
    assert explain(p).render().startswith("Model m\n")


def test_how_out_of_band_scaling_is_handled_is_stated() -> None:
    respect = text_of(policy(behavior={"scale_down_delay_seconds": 900}))
    assert "kept as a floor for 900 s (the scale-down delay)" in respect
    assert "spillway.io/paused" in respect
    correct = text_of(policy(behavior={"external_changes": "correct"}))
    assert "overwritten at the next decision (behavior.external_changes: correct)" in correct


def test_a_per_token_backend_names_the_quantile_the_planner_uses() -> None:
    bedrock = {
        "prices": {"serverless_per_million_input_tokens": 0.22, "serverless_per_million_output_tokens": 0.22},
        "targets": {"serverless": {"backend": "bedrock", "model_id": "m", "tokens_per_minute": 300000}},
    }
    assert "replicas are sized to the 0.31 quantile of forecast demand; the rest spills per token" in text_of(
        policy(**bedrock)
    )
    overridden = text_of(policy(**bedrock, forecast={"quantile": 0.8}))
    assert "replicas are sized to the 0.80 quantile of demand (forecast.quantile)" in overridden
    assert "0.31 quantile" not in overridden
