"""The planner: from a demand forecast, the observed state and the policy, the cheapest capacity mix.

:func:`plan` is pure (time is ``now=``). Steps, in order:

1. No usable forecast: hold the previous decision (or the observed state), never scale to zero.
2. Rate quantiles become instance needs through the Erlang C sizing table (:mod:`scaler.core.queueing`);
   over a window of buckets, demand is the mixture of the buckets' distributions (:mod:`scaler.core.sizing`).
3. Replicas (newsvendor): the n-th replica pays off when its expected busy share over its lifetime
   ``[now + typical, now + typical + max(scale_down_delay, bucket)]``,
   ``E[clip(rate * s - (n - 1), 0, 1)]`` under the mixture, is at least ``c_k / c_s`` (with instant
   spill-over to serverless a replica needs no queueing headroom; for a steady distribution this is
   the ``q* = 1 - c_k/c_s`` quantile of demand in instance units). A deadband of 10% of demand
   either side keeps the running count when demand sits on the break-even (no flapping).
   ``forecast.quantile`` instead sizes replicas at that quantile of the SLO-sized instance need.
   Serverless never dearer than a busy replica: n* = min bound.
   Without serverless (unavailable, or quota 0) replicas cover the SLO quantile (``slo.attainment``);
   with it, replicas are at least the fewest that keep the requests expected beyond replicas plus the
   serverless quota within the SLO's miss allowance. A trickle is
   left to serverless: when even one replica's expected busy share over its lifetime,
   ``E[min(rate * s, 1)]``, is under the break-even ``c_k / c_s``, the fractile asks for no replica
   (a rate of 0.01 req/s "needs one instance" with high probability, but keeps it 0.2% busy).
4. Provisioned serverless: on-demand serverless starts cold. When that cold start is longer than the
   SLO wait budget W, requests landing on a cold instance miss the SLO, so the instances needed over
   the next serverless cold start with probability >= 1 - attainment (the SLO-quantile need minus
   replicas ready now, and ready standby if it is promoted faster than serverless starts) are kept
   warm, up to the quota. That need is sized at the forecast rate times the observed within-bucket
   burst factor (``Observed.burst_factor``, :mod:`scaler.core.burstiness`; 1 for steady or Poisson
   arrivals). When the cold start fits in W, provisioning only adds cost: none.
   Provisioning falls only past a deadband (a quarter of what is provisioned) to avoid churn.
   ``spill_fraction`` is the share of the current rate above what ready replicas sustain. The cold
   start is the backend's profile (:mod:`scaler.backends`); a per-token backend (Bedrock) is
   never provisioned and its spill share is capped at the rate its ``tokens_per_minute`` admits,
   counted as that many instances (rounded down) wherever the quota sizes replicas and standby; its
   per-token prices set ``c_s`` at the forecast's request size.
   Two replica lead times (:class:`scaler.core.policy.LeadTimes`): the lifetime begins at the
   *typical* cold start (``typical_cold_start_seconds``: the learned ``lifetime_quantile``, by
   default the fastest start seen), where a new replica's cost begins; the cold-start coverage below
   spans the *coverage* lead (``cold_start_seconds``, the learned p90), so what serves while replicas
   start covers the slow ones. A standby promoted no faster than a replica starts (a second standby
   workload: :attr:`scaler.core.policy.ModelPolicy.standby_promotion_seconds`) never pays either.
5. Warm standby covers what neither replicas nor serverless can within a replica cold start, where
   it pays: only when ``prices.standby_per_hour`` is below ``replica_per_hour``. A standby priced as
   a replica (the default: a Ready pod out of the Service holds its GPU) is dominated by a serving
   replica, so up to ``max_standby`` of that gap is served by replicas instead (``bound_by``
   ``cold_start``) and standby stays at ``min_standby``.
6. Behaviour: max of recent unclamped targets (stabilisation and scale-down delay), step limits,
   then the schedule-effective bounds clamp every output.
7. Explanation: one reason line, the binding term, the fractile and the $/h of the alternatives.

``bound_by`` (:data:`scaler.core.types.BoundBy`) is one of: ``fractile``, ``break_even``, ``quota``,
``slo`` (quota 0), ``serverless-unavailable``, ``kubernetes-unavailable``, ``cold_start``, ``stabilization``,
``scale_down_delay``, ``step_up``, ``step_down``, ``min_replicas``, ``max_replicas``, ``schedule:<name>``,
``no-data``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaler.core import queueing, schedule, sizing
from scaler.core.policy import Bounds, ModelPolicy
from scaler.core.profile import requests_per_second_within
from scaler.core.types import BoundBy, Decision, DemandForecast, Observed, Reason, Unavailable, by_schedule

TOLERANCE = 0.1  # demand deadband for adding or letting go of a replica (HPA's tolerance is 10% too)


@dataclasses.dataclass(frozen=True, slots=True)
class _Needs:
    """Instance needs read off the forecast for one decision."""

    fractile: int  # q* quantile over the replica lifetime (0 when replicas never pay)
    slo_life: int  # attainment quantile over the replica lifetime
    quota_floor: int  # fewest replicas keeping the expected share beyond replicas + quota within the SLO
    slo_serverless: int  # attainment quantile over the next serverless cold start
    slo_cold: int  # attainment quantile over the next replica cold start
    mean_rate: float  # forecast mean rate over the replica lifetime
    single_busy: float  # expected busy share of one replica over its lifetime, E[min(rate * s, 1)]


def plan(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """Return the desired replicas, standby, provisioned serverless and spill share, with the reason.

    Never raises on a valid policy, forecast and observation; every output lies within the bounds in
    force at ``now`` (see :func:`scaler.core.schedule.effective_bounds`).
    """
    bounds, active = schedule.effective_bounds(policy, now=now)
    if not forecast.valid or forecast.rate_mean.shape[0] == 0:
        return _hold(bounds=bounds, forecast=forecast, observed=observed, previous=previous, now=now)
    if not (np.isfinite(forecast.rate_quantiles).all() and np.isfinite(forecast.rate_mean).all()):
        return _hold(
            bounds=bounds, forecast=forecast, observed=observed, previous=previous, now=now,
            note="the forecast holds non-finite rates",
        )

    table = queueing.sizing_table(
        policy, mean_prompt=forecast.mean_prompt_tokens, mean_output=forecast.mean_output_tokens
    )
    quota = _quota_instances(policy, bounds=bounds, forecast=forecast)
    serverless_ok = Unavailable.SERVERLESS not in observed.unavailable and bounds.serverless_quota > 0
    kubernetes_ok = Unavailable.KUBERNETES not in observed.unavailable
    ratio = _break_even(policy, forecast=forecast)
    q_star = policy.sizing_quantile_for(ratio)
    life = _lifetime(policy, forecast=forecast, now=now)
    running = observed.replicas_ready + observed.replicas_starting
    current = previous.replicas if previous is not None else running
    needs = _needs(
        policy, forecast=forecast, table=table, q_star=q_star, life=life, now=now, current=current,
        quota=quota, ratio=ratio, burst=observed.burst_factor,
    )
    target, driver, quantile = _replica_target(
        policy, needs=needs, bounds=bounds, q_star=q_star, observed=observed, serverless_ok=serverless_ok,
        ratio=ratio,
    )

    memory = _remember(policy, previous=previous, target=target, now=now)
    held_up, held_by = _held_target(policy, memory=memory, target=target, now=now)
    bound_by: BoundBy = held_by if held_up > target else driver
    base = previous.replicas if previous is not None else observed.replicas_ready + observed.replicas_starting
    if kubernetes_ok:
        replicas, bound_by = _step(policy, value=held_up, base=base, bound_by=bound_by)
    else:
        replicas, bound_by = base, "kubernetes-unavailable"
    replicas, bound_by = _clamp(
        replicas, policy=policy, bounds=bounds, active=active, bound_by=bound_by
    )
    provisioned, spill = _serverless(
        policy, forecast=forecast, table=table, needs=needs, bounds=bounds, observed=observed,
        serverless_ok=serverless_ok, before=previous.serverless_provisioned if previous is not None else None,
    )
    in_place = 0
    if kubernetes_ok:
        standby = needs.slo_cold - replicas - (quota if serverless_ok else 0)
        slow = policy.standby_promotion_seconds >= policy.lead_times.cold_start_seconds
        if slow or policy.prices.standby >= policy.prices.replica_per_hour:
            # A standby no cheaper than a replica, or promoted no faster than a replica starts (a second
            # standby workload), never pays: a serving replica is as warm and takes traffic. Up to
            # max_standby of the gap is served by replicas instead.
            gap = min(max(standby, 0), bounds.max_standby)
            most = min(bounds.max_replicas, base + policy.behavior.max_step_up)
            in_place = max(min(replicas + gap, most) - replicas, 0)
            if in_place:
                replicas, bound_by = replicas + in_place, "cold_start"
            standby = bounds.min_standby
    elif previous is not None:
        standby = previous.standby
    else:
        standby = observed.standby_ready + observed.standby_starting
    standby = min(max(standby, bounds.min_standby), bounds.max_standby)

    last_down = previous.last_scale_down_at if previous is not None else None
    return Decision(
        at=now,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=provisioned,
        spill_fraction=spill,
        reason=_reason(
            policy, life=life, now=now, quantile=quantile, replicas=replicas, target=target, driver=driver,
            bound_by=bound_by, provisioned=provisioned, standby=standby, serverless_ok=serverless_ok,
            ratio=ratio,
            in_place=in_place,
            burst=observed.burst_factor,
        ),
        bound_by=bound_by,
        quantile=quantile,
        cost_per_hour=_costs(
            policy, forecast=forecast, table=table, needs=needs, replicas=replicas, standby=standby,
            provisioned=provisioned,
        ),
        recent_targets=memory,
        last_scale_down_at=now if replicas < base else last_down,
    )


def _replica_target(
    policy: ModelPolicy,
    *,
    needs: _Needs,
    bounds: Bounds,
    q_star: float | None,
    observed: Observed,
    serverless_ok: bool,
    ratio: float,
) -> tuple[int, Reason, float]:
    """Return the unclamped replica target, what drove it, and the quantile it was sized at."""
    if not serverless_ok:
        # No spill-over exists: replicas alone must meet the SLO.
        failing = Unavailable.SERVERLESS in observed.unavailable
        cause: Reason = "serverless-unavailable" if failing else "slo"
        return needs.slo_life, cause, policy.slo.attainment
    if q_star is None:
        return bounds.min_replicas, "fractile", 0.0
    fractile = needs.fractile
    driver: Reason = "fractile"
    if policy.forecast.quantile is None and needs.single_busy < ratio:
        fractile, driver = 0, "break_even"  # a trickle: even one replica would idle below break-even
    floor = needs.quota_floor
    if floor > fractile:
        return floor, "quota", q_star
    return fractile, driver, q_star


def _step(policy: ModelPolicy, *, value: int, base: int, bound_by: BoundBy) -> tuple[int, BoundBy]:
    """Return ``value`` limited to max_step_up/max_step_down from ``base``, and the binding term."""
    behavior = policy.behavior
    if value > base + behavior.max_step_up:
        return base + behavior.max_step_up, "step_up"
    if value < base - behavior.max_step_down:
        return base - behavior.max_step_down, "step_down"
    return value, bound_by


def _serverless(
    policy: ModelPolicy,
    *,
    forecast: DemandForecast,
    table: queueing.SizingTable,
    needs: _Needs,
    bounds: Bounds,
    observed: Observed,
    serverless_ok: bool,
    before: int | None,
) -> tuple[int, float]:
    """Return (provisioned serverless instances, spill share of the current rate).

    Provisioning rises at once; it falls only when the gap has dropped by more than a deadband of a
    quarter of what is provisioned (rounded down: none below 4), so forecast noise does not churn it.
    """
    if not serverless_ok:
        return 0, 0.0
    profile = policy.serverless_profile
    wait = queueing.wait_budget(policy, mean_prompt=forecast.mean_prompt_tokens)
    fast_standby = policy.standby_promotion_seconds <= profile.cold_start_seconds
    ready = observed.replicas_ready + (observed.standby_ready if fast_standby else 0)
    provisioned = 0
    if profile.provisionable and profile.cold_start_seconds > wait:
        provisioned = min(max(needs.slo_serverless - ready, 0), bounds.serverless_quota)
        held = before if before is not None and before <= bounds.serverless_quota else 0
        if 0 < held - provisioned <= held // 4:
            provisioned = held
    rate = observed.request_rate if observed.request_rate is not None else float(forecast.rate_mean[0])
    if rate <= 0.0:
        return provisioned, 0.0
    spill = (rate - table.max_rate(observed.replicas_ready)) / rate
    within = _quota_rate(policy, forecast=forecast)  # a per-token backend: only what its quota admits
    if within is not None:
        spill = min(spill, within / rate)
    return provisioned, min(max(spill, 0.0), 1.0)


def _break_even(policy: ModelPolicy, *, forecast: DemandForecast) -> float:
    """Return c_k / c_s for the forecast's request size (per-token prices folded into c_s)."""
    prompt, output = forecast.mean_prompt_tokens, forecast.mean_output_tokens
    work = queueing.work_seconds(policy, mean_prompt=prompt, mean_output=output)
    return policy.break_even_for(prompt_tokens=prompt, output_tokens=output, work_seconds=work)


def _quota_rate(policy: ModelPolicy, *, forecast: DemandForecast) -> float | None:
    """Return the request rate a per-token backend's tokens-per-minute quota admits; None for instances."""
    tpm = policy.serverless_tokens_per_minute
    if tpm is None:
        return None
    tokens = max(forecast.mean_prompt_tokens, 0.0) + max(forecast.mean_output_tokens, 0.0)
    return requests_per_second_within(tokens_per_minute=tpm, tokens_per_request=tokens)


def _quota_instances(policy: ModelPolicy, *, bounds: Bounds, forecast: DemandForecast) -> int:
    """Return the serverless quota in instances: ``serverless_quota``, or what a tokens-per-minute quota
    serves in instance units (its admitted rate times the instance-seconds per request, rounded down,
    so a quota under one instance counts as none when sizing replicas, and still takes spill-over).

    ``serverless_quota`` 0 (e.g. in a schedule) turns spill-over off for every backend.
    """
    within = _quota_rate(policy, forecast=forecast)
    if within is None or bounds.serverless_quota == 0:
        return bounds.serverless_quota
    work = queueing.work_seconds(
        policy, mean_prompt=forecast.mean_prompt_tokens, mean_output=forecast.mean_output_tokens
    )
    return int(min(within * work, 1e6))


def _lifetime(policy: ModelPolicy, *, forecast: DemandForecast, now: float) -> tuple[float, float]:
    """Return the window a replica requested now would serve: [now + typical cold start, + max(delay,
    bucket)]."""
    start = now + policy.lead_times.typical_cold_start_seconds
    return start, start + max(policy.behavior.scale_down_delay_seconds, forecast.bucket_seconds)


def _needs(
    policy: ModelPolicy,
    *,
    forecast: DemandForecast,
    table: queueing.SizingTable,
    q_star: float | None,
    life: tuple[float, float],
    now: float,
    current: int,
    quota: int,
    ratio: float,
    burst: float = 1.0,
) -> _Needs:
    """Return the instance needs of the forecast over the windows the planner looks at.

    ``burst`` (the observed within-bucket burst factor, at least 1) scales the rate serverless is
    provisioned for: its instances must be warm for the busiest part of a bucket, not its mean.
    """
    lead = policy.lead_times
    attainment = policy.slo.attainment
    bucket = forecast.bucket_seconds
    life_w = sizing.window_weights(forecast, t0=life[0], t1=life[1])
    serverless_w = sizing.window_weights(
        forecast, t0=now, t1=now + max(policy.serverless_profile.cold_start_seconds, bucket)
    )
    # the coverage lead: what standby (or serving replicas in its place) must cover while replicas start
    cold_w = sizing.window_weights(forecast, t0=now, t1=now + max(lead.cold_start_seconds, bucket))
    rates = np.array(
        [
            sizing.rate_quantile(forecast, weights=life_w, q=q_star) if q_star is not None else 0.0,
            sizing.rate_quantile(forecast, weights=life_w, q=attainment),
            sizing.rate_quantile(forecast, weights=serverless_w, q=attainment) * max(burst, 1.0),
            sizing.rate_quantile(forecast, weights=cold_w, q=attainment),
        ]
    )
    n = table.instances(rates)
    fractile = int(n[0])
    if q_star is not None and policy.forecast.quantile is None:
        # Spill-over to serverless is instant, so a replica needs no queueing headroom to pay off:
        # count replicas by their expected busy share against the break-even (marginal newsvendor).
        # Deadband (like HPA's tolerance): a replica is added when it would pay off at demand
        # TOLERANCE lower, and kept while it would at demand TOLERANCE higher, so demand sitting on
        # the break-even does not flap it.
        add = sizing.replicas_worth_paying(
            forecast, weights=life_w, work=table.work * (1.0 - TOLERANCE), ratio=ratio
        )
        keep = sizing.replicas_worth_paying(
            forecast, weights=life_w, work=table.work * (1.0 + TOLERANCE), ratio=ratio
        )
        fractile = min(max(current, add), keep)
    return _Needs(
        quota_floor=_quota_floor(
            policy, forecast=forecast, table=table, weights=life_w, quota=quota, most=int(n[1]) - quota
        ),
        fractile=fractile,
        slo_life=int(n[1]),
        slo_serverless=int(n[2]),
        slo_cold=int(n[3]),
        mean_rate=sizing.mean_rate(forecast, weights=life_w),
        single_busy=sizing.capped_mean_rate(forecast, weights=life_w, cap=1.0 / table.work) * table.work,
    )


def _quota_floor(
    policy: ModelPolicy,
    *,
    forecast: DemandForecast,
    table: queueing.SizingTable,
    weights: np.ndarray,
    quota: int,
    most: int,
) -> int:
    """Return the fewest replicas for which the requests expected beyond replicas + serverless quota stay
    within the SLO's miss allowance (1 - attainment) over the replica lifetime; at most ``most``.

    The SLO counts requests, so this bounds the expected overflow share, E[(rate - cap)+] / E[rate],
    rather than a quantile of the rate: a wide upper tail after a burst does not pin replicas at the top.
    """
    allowance = 1.0 - policy.slo.attainment
    lo, hi = -1, max(most, 0)  # share(hi) within the allowance (p-attainment sizing); share(lo) is not
    if sizing.overflow_share(forecast, weights=weights, capacity_rate=table.max_rate(hi + quota)) > allowance:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        share = sizing.overflow_share(forecast, weights=weights, capacity_rate=table.max_rate(mid + quota))
        if share <= allowance:
            hi = mid
        else:
            lo = mid
    return hi


def _remember(
    policy: ModelPolicy, *, previous: Decision | None, target: int, now: float
) -> tuple[tuple[float, int], ...]:
    """Return the recent (time, unclamped target) memory with this target added.

    Entries older than the longer of the two windows go, and so does any entry a later entry
    matches or exceeds (it can never be the maximum of a window again), so the memory stays short.
    """
    window = max(policy.behavior.stabilization_seconds, policy.behavior.scale_down_delay_seconds)
    recent = () if previous is None else previous.recent_targets
    kept = [(t, v) for t, v in recent if now - window <= t <= now and v > target]
    kept.append((now, target))
    return tuple(kept)


def _held_target(
    policy: ModelPolicy, *, memory: tuple[tuple[float, int], ...], target: int, now: float
) -> tuple[int, Reason]:
    """Return the max of recent targets over the stabilisation and scale-down windows, and which held it."""
    delay = policy.behavior.scale_down_delay_seconds
    stab = policy.behavior.stabilization_seconds
    in_delay = max((v for t, v in memory if now - t <= delay), default=target)
    in_stab = max((v for t, v in memory if now - t <= stab), default=target)
    held = max(target, in_delay, in_stab)
    return held, "scale_down_delay" if in_delay >= in_stab else "stabilization"


def _clamp(
    value: int, *, policy: ModelPolicy, bounds: Bounds, active: str | None, bound_by: BoundBy
) -> tuple[int, BoundBy]:
    """Return ``value`` clamped into the effective min/max replicas and the binding term.

    The term is ``schedule:<active>`` when the active schedule moved the bound that binds.
    """
    if value < bounds.min_replicas:
        moved = bounds.min_replicas != policy.bounds.min_replicas
        return bounds.min_replicas, by_schedule(active) if active is not None and moved else "min_replicas"
    if value > bounds.max_replicas:
        moved = bounds.max_replicas != policy.bounds.max_replicas
        return bounds.max_replicas, by_schedule(active) if active is not None and moved else "max_replicas"
    return value, bound_by


def _serverless_cost(policy: ModelPolicy, *, rate: float, work: float, forecast: DemandForecast) -> float:
    """Return $/h of serving ``rate`` requests/s on serverless (busy GPU time plus tokens)."""
    one = policy.serverless_request_price(
        prompt_tokens=forecast.mean_prompt_tokens,
        output_tokens=forecast.mean_output_tokens,
        work_seconds=work,
    )
    return rate * 3600.0 * one


def _costs(
    policy: ModelPolicy,
    *,
    forecast: DemandForecast,
    table: queueing.SizingTable,
    needs: _Needs,
    replicas: int,
    standby: int,
    provisioned: int,
) -> dict[str, float]:
    """Return expected $/h, at the forecast mean over the replica lifetime, of the mix and alternatives."""
    prices = policy.prices
    work = queueing.work_seconds(
        policy, mean_prompt=forecast.mean_prompt_tokens, mean_output=forecast.mean_output_tokens
    )
    rate = needs.mean_rate
    overflow = max(rate - table.max_rate(replicas), 0.0)
    chosen = replicas * prices.replica_per_hour + standby * prices.standby
    chosen += provisioned * policy.serverless_provisioned_price
    chosen += _serverless_cost(policy, rate=overflow, work=work, forecast=forecast)
    return {
        "chosen": chosen,
        "all_kubernetes": needs.slo_life * prices.replica_per_hour,
        "all_serverless": _serverless_cost(policy, rate=rate, work=work, forecast=forecast),
    }


def _pct(q: float) -> str:
    return f"p{q * 100:.4g}"


def _reason(
    policy: ModelPolicy,
    *,
    life: tuple[float, float],
    now: float,
    quantile: float,
    replicas: int,
    target: int,
    driver: Reason,
    bound_by: BoundBy,
    provisioned: int,
    standby: int,
    serverless_ok: bool,
    ratio: float,
    in_place: int = 0,
    burst: float = 1.0,
) -> str:
    """Return the one-line explanation of a decision."""
    window = f"[t+{life[0] - now:.0f}s, t+{life[1] - now:.0f}s]"
    if driver == "fractile" and quantile == 0.0:
        head = f"serverless is never dearer than a busy replica: replicas at the minimum {target}"
    elif driver == "break_even":
        share = f"{ratio:.0%}"
        head = f"a replica over {window} would be busy under the {share} break-even: serverless serves it"
    elif driver == "quota":
        head = f"{_pct(policy.slo.attainment)} over {window} exceeds the serverless quota: {target} replicas"
    else:
        head = f"forecast {_pct(quantile)} over {window} needs {target} replicas"
    parts = [head]
    if serverless_ok:
        covers = _pct(policy.slo.attainment)
        bursts = f", for bursts {burst:.1f}x the bucket's rate" if burst > 1.0 and provisioned else ""
        parts.append(f"serverless covers up to {covers} ({provisioned} instances provisioned{bursts})")
    else:
        parts.append("no serverless spill-over")
    if in_place:
        parts.append(f"{in_place} serving replicas cover the cold start (standby is no cheaper)")
    else:
        parts.append(f"standby {standby} covers the cold start")
    if bound_by != driver or replicas != target:
        parts.append(f"{replicas} replicas bound by {bound_by}")
    return "; ".join(parts)


def _hold(
    *,
    bounds: Bounds,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
    note: str = "",
) -> Decision:
    """Return the previous decision (or the observed state) held, clamped into the bounds in force."""
    note = note or forecast.note or "no data"
    if previous is not None:
        replicas, standby = previous.replicas, previous.standby
        provisioned, spill = previous.serverless_provisioned, previous.spill_fraction
        quantile, costs, memory = previous.quantile, dict(previous.cost_per_hour), previous.recent_targets
        what = "the previous decision"
    else:
        replicas = observed.replicas_ready + observed.replicas_starting
        standby = observed.standby_ready + observed.standby_starting
        provisioned, spill, quantile, costs, memory = observed.serverless_provisioned, 0.0, 0.0, {}, ()
        what = "the observed state"
    replicas = min(max(replicas, bounds.min_replicas), bounds.max_replicas)
    standby = min(max(standby, bounds.min_standby), bounds.max_standby)
    provisioned = min(max(provisioned, 0), bounds.serverless_quota)
    return Decision(
        at=now,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=provisioned,
        spill_fraction=min(max(spill, 0.0), 1.0),
        reason=f"no usable forecast ({note}): holding {what}, {replicas} replicas",
        bound_by="no-data",
        quantile=quantile,
        cost_per_hour=costs,
        held=True,
        recent_targets=memory,
        last_scale_down_at=previous.last_scale_down_at if previous is not None else None,
    )
