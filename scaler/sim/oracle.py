"""Hindsight oracle: the cheapest capacity schedule for a workload known in advance (the physical limit).

Method. From the whole workload compute the instance requirement ``r_t`` of every second: the mean
number of busy instances (busy slots / ``C``) if every request started the moment it arrived and held
its slot for ``S = C * (P/Tp + O/Td)``. Decompose it by capacity level: level ``k`` carries the work
``clip(r_t - (k-1), 0, 1)``. For each level an exact dynamic programme
(:func:`scaler.sim.oracle_kernels.levels`) chooses, second by second, a replica (paid every second it
exists, plus a cold start paid before it serves; no replica before ``cold_start_seconds`` except the
``bounds.min_replicas`` levels that start warm, as in the simulator; none above ``max_replicas``) or
serverless (paid per busy instance-second, plus its share of the per-token price). Keeping a replica
through an idle gap versus releasing it and paying a new cold start is exactly the trade-off the
programme solves. Standby and provisioned serverless are never needed with hindsight.

The SLO's miss allowance is used too: the ``1 - slo.attainment`` share of the work taken from the
highest peaks (``r_t`` is capped at the level where the work above it equals that share) is left to
miss the SLO at no cost, as a policy may serve it late on capacity it has anyway.

Exact or bound? The schedule is optimal for a relaxed problem, so its cost is a *lower bound*, not
an achievable schedule: capacity is fractional per second, serverless has no cold start and no quota,
and the shaved peaks are free (relaxations that can only lower the cost). One point cuts the other
way: requests are not queued within the SLO's wait slack, so a saturated policy that leans on short
waits could in principle undercut it slightly (not seen in the tests' fixed policies once the miss
allowance is used). The summary reports zero queue wait, TTFT = prefill time, and ``slo_attainment``
= the policy's attainment goal (what it was built to meet).
"""

from __future__ import annotations

import math

import numpy as np

from scaler.core.accounting import bill, hold_seconds
from scaler.core.policy import ModelPolicy
from scaler.sim import oracle_kernels as ok
from scaler.sim.cluster import Outcome, percentiles, timeline_edges
from scaler.sim.engine import summarise
from scaler.sim.feasibility import prefill_seconds
from scaler.sim.fluid import bin_sums
from scaler.sim.results import FloatArray, SimResult, Timeline
from scaler.sim.workload import RateWorkload, Workload

POLICY_NAME = "oracle"


def requirement(starts: FloatArray, holds: FloatArray, weights: FloatArray, *, seconds: int) -> FloatArray:
    """Return the busy slot-seconds in each second ``[0, seconds)``.

    ``weights[i]`` requests are busy over ``[starts[i], starts[i] + holds[i])``; work past the last
    second is cut off.
    """
    n_bins = seconds + 1
    s = np.clip(starts, 0.0, float(seconds))
    e = np.clip(starts + holds, 0.0, float(seconds))
    i_s = s.astype(np.int64)
    i_e = e.astype(np.int64)
    diff = np.bincount(i_s, weights=weights, minlength=n_bins) - np.bincount(
        i_e, weights=weights, minlength=n_bins
    )
    corr = np.bincount(i_e, weights=weights * (e - i_e), minlength=n_bins) - np.bincount(
        i_s, weights=weights * (s - i_s), minlength=n_bins
    )
    return np.asarray((np.cumsum(diff) + corr)[:seconds], dtype=np.float64)


def shave_peaks(r: FloatArray, *, budget: float) -> FloatArray:
    """Return ``min(r, h)`` with the level ``h`` at which the work above it equals ``budget`` (or 0).

    Raises nothing; a budget at least the total work returns zeros.
    """
    if budget <= 0.0 or r.shape[0] == 0:
        return r
    lo, hi = 0.0, float(r.max())
    if float(r.sum()) <= budget:
        return np.zeros_like(r)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(np.maximum(r - mid, 0.0).sum()) > budget:
            lo = mid
        else:
            hi = mid
    return np.minimum(r, hi)


def hindsight_oracle(
    workload: Workload | RateWorkload,
    *,
    policy: ModelPolicy,
    timeline_step: float = 60.0,
    initial_replicas: int | None = None,
) -> SimResult:
    """Return the oracle's summary (policy ``"oracle"``) and timeline for ``workload`` under ``policy``.

    The cost is a lower bound in the sense of the module docstring. Raises ValueError for a rate
    workload with negative or non-finite counts, or a non-positive ``timeline_step``.
    """
    if not timeline_step > 0:
        raise ValueError(f"timeline_step must be > 0, got {timeline_step}")
    c = policy.replica.max_concurrency
    rows = workload.rows()  # a rate workload's seconds are rows of mean-sized requests
    weights = rows.weights
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"workload {workload.name!r}: counts must be finite and non-negative")
    starts = rows.arrivals
    holds = hold_seconds(policy, rows.prompt_tokens, rows.output_tokens)
    tokens = (float(weights @ rows.prompt_tokens), float(weights @ rows.output_tokens))
    token_dollars = bill(policy, prompt_tokens=tokens[0], output_tokens=tokens[1]).serverless_tokens
    ttft = percentiles(prefill_seconds(workload, policy=policy))  # all alike in a rate workload's rows
    model = "per-request" if isinstance(workload, Workload) else "fluid"  # as engine.simulate names it
    seconds = max(1, math.ceil(workload.duration))
    full = requirement(starts, holds, weights, seconds=seconds) / c
    total_work = float(full.sum())
    r = shave_peaks(full, budget=(1.0 - policy.slo.attainment) * total_work)
    prices = policy.prices
    c_rep = prices.replica_per_hour / 3600.0
    per_work_tokens = token_dollars / total_work if total_work else 0.0
    c_sv = policy.serverless_gpu_second_price + per_work_tokens
    rep_on, rep_starting, k8s_work, sv_work, unserved = (np.zeros(seconds) for _ in range(5))
    totals = np.zeros(3)
    cold = policy.lead_times.cold_start_seconds
    bounds = policy.bounds
    warm = bounds.min_replicas if initial_replicas is None else initial_replicas  # ready at t=0, free
    ok.levels(
        r, c_rep, c_sv, cold, math.ceil(cold), warm, bounds.max_replicas,
        bounds.serverless_quota > 0, rep_on, rep_starting, k8s_work, sv_work, unserved, totals,
    )  # fmt: skip
    return _result(
        workload,
        policy=policy,
        model=model,
        ttft=ttft,
        rep_on=rep_on,
        rep_starting=rep_starting,
        k8s_work=k8s_work,
        sv_work=sv_work,
        unserved=unserved,
        totals=totals,
        tokens=tokens,
        total_work=total_work,
        step=timeline_step,
    )


def _result(
    workload: Workload | RateWorkload,
    *,
    policy: ModelPolicy,
    model: str,
    ttft: tuple[float, float, float],
    rep_on: FloatArray,
    rep_starting: FloatArray,
    k8s_work: FloatArray,
    sv_work: FloatArray,
    unserved: FloatArray,
    totals: FloatArray,
    tokens: tuple[float, float],
    total_work: float,
    step: float,
) -> SimResult:
    """Return the oracle's SimResult from its per-second schedule.

    ``tokens`` are the workload's (prompt, output) tokens; serverless is billed its share of them,
    its share of ``total_work`` (the work of the whole workload, before the peaks were shaved).
    """
    paid_seconds = float(totals[ok.ON_SECONDS] + totals[ok.STARTING_SECONDS])
    sv_total = float(sv_work.sum())
    work = float(k8s_work.sum()) + sv_total + float(unserved.sum())  # the shaved work counts as served late
    n = workload.requests
    served_sv = round(n * sv_total / work) if work else 0
    dropped = round(n * float(unserved.sum()) / work) if work else 0
    share = sv_total / total_work if total_work else 0.0
    cost = bill(
        policy,
        replica_seconds=paid_seconds,
        serverless_busy_seconds=sv_total,
        prompt_tokens=tokens[0] * share,
        output_tokens=tokens[1] * share,
    )
    edges = timeline_edges(workload.duration, step)
    widths = np.diff(edges)
    if isinstance(workload, Workload):
        arrivals = np.histogram(workload.arrivals, bins=edges)[0].astype(np.float64)
    else:
        arrivals = bin_sums(np.asarray(workload.counts, dtype=np.float64), edges)
    level_total = rep_on + rep_starting
    outcome = Outcome(
        cost=cost,
        requests=n,
        served_kubernetes=n - served_sv - dropped,
        served_serverless=served_sv,
        dropped=dropped,
        slo_attainment=policy.slo.attainment,
        wait=(0.0, 0.0, 0.0),
        ttft=ttft,
        idle_replica_hours=max(0.0, (paid_seconds - float(k8s_work.sum())) / 3600.0),
        timeline=Timeline(
            step=step,
            t=edges[:-1],
            arrival_rate=arrivals / widths,
            replicas_ready=bin_sums(rep_on, edges) / widths,
            replicas_starting=bin_sums(rep_starting, edges) / widths,
            standby_ready=np.zeros(widths.shape[0]),
            serverless_instances=bin_sums(sv_work, edges) / widths,
            slo_misses=np.zeros(widths.shape[0]),
        ),
    )
    actions = int(np.count_nonzero(np.diff(level_total)))
    note = "lower bound: fractional capacity, miss allowance free, no serverless cold start or quota"
    summary = summarise(
        outcome, policy=POLICY_NAME, workload=workload.name, actions=actions, model=model, note=note
    )
    return SimResult(summary=summary, timeline=outcome.timeline)
