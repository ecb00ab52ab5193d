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
from scaler.core.policy import ModelPolicy, Schedule, cost_optimal_fractile

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
    learned: Mapping[str, Mapping[float | None, float]] | None = None,
) -> Explanation:
    """Return the figures ``policy`` implies, with requests of ``prompt_tokens`` + ``output_tokens``.

    ``learned`` maps ``replica``/``serverless`` to the lead times a daemon learned by quantile (its
    ``/metrics``; quantile None from a daemon that labels none), shown beside the configured ones.
    """
    size = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    per_token = policy.serverless_profile.per_token
    economics = _token_economics(policy, **size) if per_token else _economics(policy)
    facts = _backend(policy, **size) + economics + _capacity(policy, **size)
    facts += _lead_times(policy) + _learning(policy, learned) + _schedules(policy.schedules)
    facts += [_external_changes(policy)]
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
    optimal = cost_optimal_fractile(ratio)
    if policy.forecast.quantile is not None or optimal is not None:
        cost_optimal = f" (cost-optimal fractile 1 - c_k/c_s = 1 - {ratio:.2f}); serverless takes the rest"
        facts.append(_sized(policy, optimal, rest=cost_optimal))
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
            f"{policy.serverless_profile.cold_start_seconds:g} s serverless cold start; {against}"
        )
    return facts


def _backend(policy: ModelPolicy, *, prompt_tokens: int, output_tokens: int) -> list[str]:
    """Return how the policy's serverless backend behaves (its profile) as one sentence, two for a quota."""
    profile = policy.serverless_profile
    warm = "nothing kept warm" if profile.keep_warm_seconds == float("inf") else (
        f"an idle instance stays warm {profile.keep_warm_seconds:g} s"
    )
    facts = [
        f"serverless backend {profile.name}: {profile.cold_start_seconds:g} s cold start from zero, {warm}; "
        f"quota: {profile.quota_unit}; billed: {profile.price_unit}"
    ]
    tpm = policy.serverless_tokens_per_minute
    if tpm is not None:
        rate = tpm / 60.0 / max(prompt_tokens + output_tokens, 1)
        facts.append(
            f"spill-over stays within {tpm:,} tokens/min: {rate:,.1f} requests/s of {prompt_tokens:,} + "
            f"{output_tokens:,} tokens, sent by the decision's routing weights (spill_fraction)"
        )
    return facts


def _token_economics(policy: ModelPolicy, *, prompt_tokens: int, output_tokens: int) -> list[str]:
    """Return the break-even of a replica against a per-token backend, for requests of this size."""
    rate = requests_per_second(policy, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    work = 1.0 / rate if rate > 0 else 0.0
    size = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    ratio = policy.break_even_for(**size, work_seconds=work)
    per_input, per_output = policy.serverless_token_prices
    busy_hour = policy.serverless_request_price(**size, work_seconds=work) * rate * 3600.0
    prices = f"{_money(per_input)}/M input, {_money(per_output)}/M output tokens"
    optimal = cost_optimal_fractile(ratio)
    if optimal is None:
        return [
            f"replicas never pay off: {prices} is {_money(busy_hour)} per busy replica-hour of such "
            f"requests, below a replica's {_money(policy.prices.replica_per_hour)}/h"
        ]
    return [
        f"a replica pays off above {_pct(ratio)} utilisation (replica "
        f"{_money(policy.prices.replica_per_hour)}/h vs {prices} = {_money(busy_hour)} per busy hour of "
        "such requests)",
        _sized(policy, optimal, rest="; the rest spills per token"),
    ]


def _sized(policy: ModelPolicy, optimal: float | None, *, rest: str) -> str:
    """Return the sentence naming the quantile replicas are sized to: ``forecast.quantile`` when set (the
    planner's override), else the cost-optimal ``optimal`` followed by ``rest``."""
    quantile = policy.forecast.quantile
    if quantile is not None:
        best = f"; cost-optimal fractile 1 - c_k/c_s is {optimal:.2f}" if optimal is not None else ""
        return f"replicas are sized to the {quantile:.2f} quantile of demand (forecast.quantile){best}"
    assert optimal is not None
    return f"replicas are sized to the {optimal:.2f} quantile of forecast demand{rest}"


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
        per_request_serverless = policy.serverless_request_price(
            prompt_tokens=prompt_tokens, output_tokens=output_tokens, work_seconds=1.0 / rate
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
    promotion = policy.standby_promotion_seconds
    kube = policy.targets.kubernetes if policy.targets is not None else None
    mechanism = (
        "a second workload: promotion scales the serving workload up, whose new pods start cold"
        if kube is not None and kube.standby_name is not None
        else "a Ready pod of the serving workload kept out of the Service by its label"
    )
    pays = (
        "promoted no faster than a replica starts, so the planner keeps only min_standby"
        if promotion >= cold
        else "cheaper than a replica, so the planner keeps standby for what replicas and serverless cannot "
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
    tpm = policy.serverless_tokens_per_minute
    serverless = (
        f"at most {bounds.serverless_quota} serverless instances"
        if tpm is None
        else f"serverless within {tpm:,} tokens/min"
    )
    return [
        f"a cold replica takes {cold / 60:.1f} min to serve, so the forecast must see at least "
        f"{cold / 60:.1f} min ahead (forecast.horizon_seconds = {horizon}, {horizon / 60:.1f} min)",
        f"a warm standby ({mechanism}) costs {_money(standby)}/h each and serves in "
        f"{promotion:g} s instead of {cold:g} s, {pays}; {standby_cost}",
        f"bounds: {bounds.min_replicas}-{bounds.max_replicas} replicas, {serverless}; {floor}",
    ]


def _external_changes(policy: ModelPolicy) -> str:
    behavior = policy.behavior
    if behavior.external_changes == "correct":
        return (
            "a replica count set outside Spillway (kubectl scale) is overwritten at the next decision "
            "(behavior.external_changes: correct)"
        )
    return (
        f"a replica count set outside Spillway (kubectl scale) is kept as a floor for "
        f"{behavior.scale_down_delay_seconds:g} s (the scale-down delay), then Spillway resumes; "
        'annotate a target spillway.io/paused: "true" to stop Spillway writing it at all'
    )


def _learning(policy: ModelPolicy, learned: Mapping[str, Mapping[float | None, float]] | None) -> list[str]:
    lead = policy.lead_times_in_force
    if not lead.learn:
        return ["lead times are not learned (lead_times.learn false): the configured values are used"]
    (low, high), (s_low, s_high) = lead.bounds("replica"), lead.bounds("serverless")
    cover, typical = (f"p{q * 100:.4g}" for q in (lead.quantile, lead.typical_quantile))
    fastest = " (the fastest seen)" if lead.typical_quantile == 0.0 else ""
    facts = [
        f"lead times are learned: after {lead.min_observations} observed starts (pods' creation -> Ready, "
        f"replicas' ready transitions) the planner starts a new replica's lifetime at their "
        f"{typical}{fastest} (lead_times.lifetime_quantile, the typical lead) and covers the cold start "
        "with standby and "
        f"serverless up to their {cover} (lead_times.quantile, the coverage lead), within "
        f"[{low:g} s, {high:g} s] for a replica and [{s_low:g} s, {s_high:g} s] for serverless; the "
        "configured values are the prior of both, and a pod that does not become Ready only raises them"
    ]
    if learned is not None:
        parts = []
        for kind, what in (("replica", "replica cold start"), ("serverless", "serverless warm-up")):
            configured = lead.configured(kind)  # type: ignore[arg-type]
            values = learned.get(kind, {})
            coverage = values.get(lead.quantile, values.get(None))
            seen = values.get(lead.typical_quantile)
            if coverage is None:
                parts.append(f"{what} {configured:g} s configured (nothing learned yet)")
                continue
            also = f", typical {seen:g} s ({typical})" if seen is not None and seen != coverage else ""
            parts.append(f"{what} {coverage:g} s learned ({cover}{also}; configured {configured:g} s)")
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
