"""What a model policy implies: break-even utilisation, sizing fractile, replica throughput, lead times.

:func:`explain` is pure: it reads only the policy, so ``scaler policy explain`` and tests agree on
every figure. The economics follow DESIGN.md: a replica costs ``c_k`` per hour busy or not, the same
work on serverless ``c_s`` per busy hour, so a replica pays off above ``c_k / c_s`` utilisation and the
cost-optimal replica capacity is the ``1 - c_k / c_s`` quantile of demand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import yaml

from scaler.core import queueing
from scaler.core.policy import ModelPolicy, Schedule

TYPICAL_PROMPT_TOKENS = 1_000
TYPICAL_OUTPUT_TOKENS = 200
_BOUNDS = ("min_replicas", "max_replicas", "min_standby", "max_standby", "serverless_quota")


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The figures a policy implies, as sentences, plus its effective settings with defaults filled in."""

    model: str
    facts: list[str]
    warnings: list[str]
    effective_yaml: str

    def render(self) -> str:
        """Return the explanation as text: facts, warnings, then the effective policy as YAML."""
        out = [f"Model {self.model}", ""]
        out += [f"  - {fact}" for fact in self.facts]
        if self.warnings:
            out += ["", "Warnings:"] + [f"  ! {warning}" for warning in self.warnings]
        out += ["", "Effective policy (defaults filled in):", ""]
        out += ["  " + line for line in self.effective_yaml.rstrip("\n").split("\n")]
        return "\n".join(out) + "\n"


def requests_per_second(policy: ModelPolicy, *, prompt_tokens: int, output_tokens: int) -> float:
    """Return the requests/s one replica serves at full batch: 1 / (P / prefill + O / decode)."""
    seconds = float(queueing.request_work(policy, np.array([prompt_tokens]), np.array([output_tokens]))[0])
    return 1.0 / seconds if seconds > 0 else float("inf")


def explain(
    policy: ModelPolicy,
    *,
    prompt_tokens: int = TYPICAL_PROMPT_TOKENS,
    output_tokens: int = TYPICAL_OUTPUT_TOKENS,
    learned: Mapping[str, float] | None = None,
) -> Explanation:
    """Return the figures ``policy`` implies, with requests of ``prompt_tokens`` + ``output_tokens``.

    ``learned`` maps ``replica``/``serverless`` to the lead times a daemon learned (its ``/metrics``),
    shown beside the configured ones.
    """
    facts = _economics(policy) + _capacity(policy, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    facts += _lead_times(policy) + _learning(policy, learned) + _schedules(policy.schedules)
    effective = yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
    return Explanation(model=policy.name, facts=facts, warnings=_warnings(policy), effective_yaml=effective)


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4g}"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _economics(policy: ModelPolicy) -> list[str]:
    prices = policy.prices
    replica = _money(prices.replica_per_hour)
    busy_hour = prices.serverless_per_gpu_second * 3600.0
    ratio = policy.break_even_utilisation
    facts: list[str] = []
    if ratio >= 1.0:
        floor = policy.bounds.min_replicas
        above = f" above the min bound of {floor} replica{'s' if floor != 1 else ''}" if floor else ""
        facts.append(
            f"replicas never pay off: serverless at {_money(busy_hour)} per busy hour is cheaper than "
            f"a replica ({replica}/h) even at 100% utilisation, so everything goes serverless{above}"
        )
    else:
        facts.append(
            f"a replica pays off above {_pct(ratio)} utilisation "
            f"(replica {replica}/h vs serverless {_money(busy_hour)} per busy hour)"
        )
    optimal = 1.0 - ratio if ratio < 1.0 else None
    quantile = policy.forecast.quantile
    if quantile is not None:
        best = f"; cost-optimal fractile 1 - c_k/c_s is {optimal:.2f}" if optimal is not None else ""
        facts.append(f"replicas are sized to the {quantile:.2f} quantile of demand (forecast.quantile){best}")
    elif optimal is not None:
        facts.append(
            f"replicas are sized to the {optimal:.2f} quantile of forecast demand "
            f"(cost-optimal fractile 1 - c_k/c_s = 1 - {ratio:.2f}); serverless takes the rest"
        )
    provisioned = prices.serverless_provisioned_per_hour
    if busy_hour > 0:
        versus = (prices.replica_per_hour - provisioned) / busy_hour
        against = (
            f"a replica beats provisioned serverless above {_pct(versus)} utilisation"
            if 0 < versus < 1
            else "a replica never beats provisioned serverless"
            if versus >= 1
            else "provisioned serverless never beats a replica"
        )
        facts.append(
            f"one provisioned (pre-warmed) serverless instance costs {_money(provisioned)}/h on top of "
            f"busy time ({_pct(provisioned / busy_hour)} of a busy hour) and skips the "
            f"{policy.lead_times.serverless_cold_start_seconds:g} s serverless cold start; {against}"
        )
    return facts


def _capacity(policy: ModelPolicy, *, prompt_tokens: int, output_tokens: int) -> list[str]:
    rate = requests_per_second(policy, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    replica = policy.replica
    facts = [
        f"one replica serves about {rate:,.1f} requests/s ({rate * 3600:,.0f}/h) of "
        f"{prompt_tokens:,} prompt + {output_tokens:,} output tokens "
        f"(prefill {replica.prefill_tokens_per_second:,.0f} tok/s, "
        f"decode {replica.decode_tokens_per_second:,.0f} tok/s, up to {replica.max_concurrency} at once)"
    ]
    prices = policy.prices
    if rate > 0 and rate != float("inf"):
        per_request_serverless = prices.serverless_per_gpu_second / rate + (
            prices.serverless_per_million_tokens * (prompt_tokens + output_tokens) / 1e6
        )
        per_request_replica = prices.replica_per_hour / (rate * 3600.0)
        facts.append(
            f"per 1,000 such requests: {_money(per_request_replica * 1000)} on a fully busy replica, "
            f"{_money(per_request_serverless * 1000)} on serverless"
        )
    return facts


def _lead_times(policy: ModelPolicy) -> list[str]:
    lead = policy.lead_times
    bounds = policy.bounds
    standby = policy.prices.standby
    replica = policy.prices.replica_per_hour
    horizon = policy.forecast.horizon_seconds
    cold = lead.cold_start_seconds
    standby_cost = (
        f"{bounds.min_standby}-{bounds.max_standby} standby replicas cost "
        f"{_money(standby * bounds.min_standby)}-{_money(standby * bounds.max_standby)}/h"
        if bounds.max_standby > 0
        else "this policy keeps none (max_standby 0)"
    )
    pays = (
        "cheaper than a replica, so the planner keeps standby for what replicas and serverless cannot "
        "cover within a cold start"
        if standby < replica
        else "no cheaper than a replica, so the planner keeps only min_standby: a serving replica is as "
        "warm and takes traffic"
    )
    floor = (
        f"the floor of {bounds.min_replicas} costs {_money(replica * bounds.min_replicas)}/h with no traffic"
        if bounds.min_replicas > 0
        else "with no traffic no replica runs"
    )
    return [
        f"a cold replica takes {cold / 60:.1f} min to serve, so the forecast must see at least "
        f"{cold / 60:.1f} min ahead (forecast.horizon_seconds = {horizon}, {horizon / 60:.1f} min)",
        f"a warm standby (a Ready pod of the serving workload kept out of the Service by its label) costs "
        f"{_money(standby)}/h each and serves in {lead.standby_promotion_seconds:g} s instead of {cold:g} s, "
        f"{pays}; {standby_cost}",
        f"bounds: {bounds.min_replicas}-{bounds.max_replicas} replicas, at most {bounds.serverless_quota} "
        f"serverless instances; {floor}",
    ]


def _learning(policy: ModelPolicy, learned: Mapping[str, float] | None) -> list[str]:
    lead = policy.lead_times
    if not lead.learn:
        return ["lead times are not learned (lead_times.learn false): the configured values are used"]
    (low, high), (s_low, s_high) = lead.bounds("replica"), lead.bounds("serverless")
    facts = [
        f"lead times are learned: after {lead.min_observations} observed starts the planner leads by their "
        f"{lead.quantile * 100:.4g}th percentile (pods' creation -> Ready, replicas' ready transitions), "
        f"within [{low:g} s, {high:g} s] for a replica and [{s_low:g} s, {s_high:g} s] for serverless; the "
        "configured values are the prior, and a pod that does not become Ready only raises them"
    ]
    if learned is not None:
        parts = []
        for kind, what in (("replica", "replica cold start"), ("serverless", "serverless warm-up")):
            configured = lead.configured(kind)  # type: ignore[arg-type]
            value = learned.get(kind)
            parts.append(
                f"{what} {value:g} s learned (configured {configured:g} s)"
                if value is not None
                else f"{what} {configured:g} s configured (nothing learned yet)"
            )
        facts.append("the daemon uses now: " + "; ".join(parts))
    return facts


def _schedules(schedules: list[Schedule]) -> list[str]:
    if not schedules:
        return ["no schedules: the bounds above hold at all times"]
    facts: list[str] = []
    for schedule in schedules:
        days = ",".join(schedule.days)
        changes = ", ".join(
            f"{name} {getattr(schedule, name)}" for name in _BOUNDS if getattr(schedule, name) is not None
        )
        overnight = " (crosses midnight)" if schedule.minutes()[1] < schedule.minutes()[0] else ""
        facts.append(
            f"schedule {schedule.name!r}: {days} {schedule.start}-{schedule.end}{overnight} "
            f"{schedule.timezone}: {changes}"
        )
    return facts


def _warnings(policy: ModelPolicy) -> list[str]:
    warnings: list[str] = []
    lead = policy.lead_times
    forecast = policy.forecast
    if forecast.horizon_seconds < lead.cold_start_seconds:
        warnings.append(
            f"forecast.horizon_seconds ({forecast.horizon_seconds}) is shorter than "
            f"lead_times.cold_start_seconds ({lead.cold_start_seconds:g}): replicas would be ordered "
            "too late for the load they are meant to serve"
        )
    if forecast.bucket_seconds > forecast.horizon_seconds:
        warnings.append(
            f"forecast.bucket_seconds ({forecast.bucket_seconds}) is longer than the horizon "
            f"({forecast.horizon_seconds}): the forecast has less than one bucket"
        )
    if policy.bounds.max_replicas == 0 and policy.bounds.serverless_quota > 0:
        warnings.append("bounds.max_replicas is 0: every request goes to serverless")
    if policy.bounds.serverless_quota == 0:
        warnings.append("bounds.serverless_quota is 0: no burst capacity, bursts queue until replicas start")
    if policy.behavior.scale_down_delay_seconds < lead.cold_start_seconds:
        warnings.append(
            f"behavior.scale_down_delay_seconds ({policy.behavior.scale_down_delay_seconds:g}) is shorter "
            f"than the cold start ({lead.cold_start_seconds:g} s): replicas may be removed and re-ordered "
            "within one start"
        )
    return warnings
