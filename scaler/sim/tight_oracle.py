"""Tight oracle: the cheapest replica and provisioned-serverless schedule meeting the SLO, from both sides.

The relaxed bound (:mod:`scaler.sim.oracle`) ignores the quota, serverless cold starts and the fact
that capacity is bought in whole instances, so no policy reaches it on bursty traces. This module
brackets the true optimum of the cluster model between two figures:

**Lower bound: an exact MILP on a coarse model** (:func:`build_problem`, :func:`solve`, HiGHS through
``scipy.optimize.milp``). Time is cut into steps of ``step`` seconds (60 s; 300 s for multi-day
traces). Per step ``t`` it chooses whole numbers of ready replicas ``a_t``, replica starts ``u_t``
(ready ``floor(cold_start/step)`` steps later, their cold start billed by the second), provisioned
serverless ``p_t`` (billed per hour) and warm on-demand serverless ``w_t`` (billed per busy second),
with ``a_t + starting <= max_replicas``, ``p_t + w_t <= serverless_quota``, the opening replicas
warm. Demand is the per-second instance requirement ``r_s`` of :func:`scaler.sim.oracle.requirement`
(every request served from arrival): in step ``t`` capacity ``x`` leaves ``late_t(x) = sum_s
max(0, r_s - x)`` instance-seconds of work late, replicas take at most ``sum_s min(r_s, a_t)`` (the
router fills them first) and serverless pays for the rest that is on time. The SLO is a constraint:
late requests (late work times the step's requests per instance-second of work), plus one late
request per on-demand start when a cold start alone misses the target, may not exceed
``(1 - goal) * requests`` less the requests whose prefill alone misses (:mod:`scaler.sim.feasibility`;
``goal`` is the SLO's attainment, or the ceiling minus half a point where the ceiling is lower).
``late_t`` is convex and piecewise linear between integers, so its epigraph is a few linear rows per
step and the programme is exact for whole capacities. Relaxations that make it a *lower* bound of
the cluster model: late work is free (it costs no serverless time); an
on-demand instance, once warm, stays warm for free (the 60 s keep-alive is not charged or enforced);
requests late in a step are counted pro rata to work; replicas are ready ``floor`` rather than
``ceil`` of their cold start in steps; drains are free; standby is never bought (it costs what a
serving replica costs and serves nothing, so with hindsight a ready replica dominates it). Two points
cut the other way, so the bound holds for the coarse model, and for the cluster model only up to
them: requests are served from arrival, so the wait a target leaves (TTFT minus prefill) is not used
to queue on fewer instances; and capacity changes once per step, where a controller acting every
10 s could stop a replica up to a step earlier.

**Upper bound: the schedule replayed** (:func:`playback`) through the real cluster model,
:class:`~scaler.sim.cluster.RequestCluster` or :class:`~scaler.sim.fluid.FluidCluster` via
:func:`scaler.sim.engine.simulate`, by a controller that plays the MILP's schedule back (provisioned
instances requested one step early so they are warm in time). Its cost is achievable if it meets
the goal; if not, it is repaired, a few rounds: on-demand serverless enabled everywhere, then more
provisioned instances (replicas where the quota is used up) in the steps that missed, doubling each
round. Where the MILP's schedule leans
on warm on-demand instances, a second MILP without them (provisioned instances only) gives a second
schedule to replay and repair. The upper bound is the cheapest replay that met the goal (``None`` if
none did).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Final

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

from scaler.core.accounting import hold_seconds, wait_limit
from scaler.core.policy import ModelPolicy
from scaler.sim.engine import simulate
from scaler.sim.feasibility import Feasibility, feasibility, prefill_seconds
from scaler.sim.oracle import requirement
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.results import FloatArray, SimResult
from scaler.sim.workload import RateWorkload, Workload

LOWER_NAME = "tight oracle (lower)"
UPPER_NAME = "tight oracle (upper)"
LONG_TRACE_SECONDS = 6 * 3600.0  # longer workloads use LONG_STEP_SECONDS steps
STEP_SECONDS, LONG_STEP_SECONDS = 60.0, 300.0
REPAIR_ROUNDS = 4
A, U, P, W, V, K, Z, M = range(8)  # variable blocks of the programme, T variables each


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """The coarse model of one workload under one policy (see the module docstring).

    Per step ``t``: ``widths`` seconds, ``work`` instance-seconds (requests that can meet the target),
    ``per_work`` requests per instance-second, and the epigraph of ``late_t``: integer points
    ``knots[t]`` with values ``late[t]``.
    """

    step: float
    widths: FloatArray
    work: FloatArray
    per_work: FloatArray
    knots: list[FloatArray]
    late: list[FloatArray]
    lead_steps: int
    cold: float
    warm: int
    min_replicas: int
    max_replicas: int
    quota: int
    on_demand_quota: int  # the most warm on-demand instances (0: a schedule of provisioned ones only)
    c_rep: float  # per replica-second
    c_sv: float  # per busy serverless instance-second (per-token price folded in)
    c_prov: float  # per provisioned instance-second
    miss_per_start: float  # late requests per on-demand serverless start
    budget: float  # late requests allowed (beyond those whose prefill alone misses)

    @property
    def steps(self) -> int:
        """Return the number of steps."""
        return int(self.widths.shape[0])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Solution:
    """The programme's schedule per step and its cost; ``bound`` is HiGHS's proven lower bound."""

    ready: FloatArray
    starts: FloatArray
    provisioned: FloatArray
    on_demand: FloatArray
    cost: float
    bound: float
    optimal: bool
    late_requests: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TightOracle:
    """Both bounds and what they took; ``upper`` is None when no repaired replay met the goal."""

    lower: float  # HiGHS's proven bound on the coarse model (its optimum when ``optimal``)
    lp: float  # the LP relaxation's optimum (NaN unless asked for)
    optimal: bool
    upper: SimResult | None
    replays: list[SimResult]
    feasibility: Feasibility
    step: float
    solve_seconds_budget: float

    @property
    def gap(self) -> float:
        """Return upper / lower (inf when there is no upper bound or the lower bound is 0)."""
        if self.upper is None or self.lower <= 0:
            return math.inf
        return self.upper.summary.cost.total / self.lower


def default_step(duration: float) -> float:
    """Return the step for a workload of ``duration`` seconds: 60 s, or 300 s past six hours."""
    return STEP_SECONDS if duration <= LONG_TRACE_SECONDS else LONG_STEP_SECONDS


def _demand(
    workload: Workload | RateWorkload, *, policy: ModelPolicy, seconds: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (per-second requirement in instances, arrival time of each request kept, their weights)."""
    c = policy.replica.max_concurrency
    ttft = policy.slo.ttft_seconds
    rows = workload.rows()
    if not np.all(np.isfinite(rows.weights)) or np.any(rows.weights < 0):
        raise ValueError(f"workload {workload.name!r}: counts must be finite and non-negative")
    keep = np.ones(rows.weights.shape[0], dtype=bool)
    if ttft is not None:  # a request whose prefill alone misses is lost whatever the capacity
        keep = prefill_seconds(workload, policy=policy) <= ttft
    starts = rows.arrivals[keep]
    holds = hold_seconds(policy, rows.prompt_tokens[keep], rows.output_tokens[keep])
    weights = rows.weights[keep]
    r = requirement(starts, holds, weights, seconds=seconds) / c
    return r, np.minimum(starts, seconds - 1e-9), weights


def _tokens_per_work(workload: Workload | RateWorkload, *, policy: ModelPolicy) -> float:
    """Return the workload's tokens per instance-second of work (0 for an empty workload)."""
    rows = workload.rows()
    work = float((rows.weights * hold_seconds(policy, rows.prompt_tokens, rows.output_tokens)).sum())
    work /= policy.replica.max_concurrency
    tokens = float((rows.weights * (rows.prompt_tokens + rows.output_tokens)).sum())
    return tokens / work if work > 0 else 0.0


def build_problem(
    workload: Workload | RateWorkload,
    *,
    policy: ModelPolicy,
    step: float,
    initial_replicas: int | None = None,
) -> Problem:
    """Return the coarse model of ``workload`` under ``policy`` with decisions every ``step`` seconds.

    Raises ValueError for a step that is not a positive whole number of seconds, or a rate workload
    with negative or non-finite counts.
    """
    if not (step >= 1 and float(step).is_integer()):
        raise ValueError(f"step must be a positive whole number of seconds, got {step}")
    fits = feasibility(workload, policy=policy)
    seconds = max(1, math.ceil(workload.duration))
    width = int(step)
    n_steps = math.ceil(seconds / width)
    r, at, weights = _demand(workload, policy=policy, seconds=seconds)
    grid = np.zeros(n_steps * width)
    grid[:seconds] = r
    rows = grid.reshape(n_steps, width)
    widths = np.full(n_steps, float(width))
    widths[-1] = seconds - (n_steps - 1) * width
    work = rows.sum(axis=1)
    arrivals = np.bincount((at // width).astype(np.int64), weights=weights, minlength=n_steps)[:n_steps]
    per_work = np.where(work > 1e-12, arrivals / np.maximum(work, 1e-12), 0.0)
    knots: list[FloatArray] = []
    late: list[FloatArray] = []
    for row in rows:
        lo, hi = max(0, math.floor(float(row.min())) - 1), math.ceil(float(row.max()) - 1e-12)
        xs = np.arange(lo, max(hi, lo + 1) + 1, dtype=np.float64)
        knots.append(xs)
        late.append(np.maximum(row[None, :] - xs[:, None], 0.0).sum(axis=1))
    prices = policy.prices
    if policy.serverless_profile.per_token:
        raise ValueError(
            f"the tight oracle models serverless instances; backend {policy.serverless_backend} bills per "
            "token: use the hindsight oracle"
        )
    tokens_per_work = _tokens_per_work(workload, policy=policy) * prices.serverless_per_million_tokens / 1e6
    ttft, queue = wait_limit(policy)
    slack = min(ttft - float(prefill_seconds(workload, policy=policy).min(initial=0.0)), queue)
    miss_per_start = 1.0 if policy.serverless_profile.cold_start_seconds > slack else 0.0
    bounds = policy.bounds
    warm = bounds.min_replicas if initial_replicas is None else initial_replicas
    budget = max(0.0, (1.0 - fits.judged_goal) * fits.requests - fits.prefill_misses)
    return Problem(
        step=float(width),
        widths=widths,
        work=work,
        per_work=per_work,
        knots=knots,
        late=late,
        lead_steps=math.floor(policy.lead_times.cold_start_seconds / width),
        cold=policy.lead_times.cold_start_seconds,
        warm=min(warm, bounds.max_replicas),
        min_replicas=bounds.min_replicas,
        max_replicas=bounds.max_replicas,
        quota=bounds.serverless_quota,
        on_demand_quota=bounds.serverless_quota,
        c_rep=prices.replica_per_hour / 3600.0,
        c_sv=prices.serverless_per_gpu_second + tokens_per_work,
        c_prov=prices.serverless_provisioned_per_hour / 3600.0,
        miss_per_start=miss_per_start,
        budget=budget,
    )


class _Rows:
    """A sparse constraint matrix built row by row."""

    def __init__(self, n_vars: int) -> None:
        self.n_vars = n_vars
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(self.lo)
        for col, val in terms:
            self.r.append(row)
            self.c.append(col)
            self.v.append(val)
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self) -> so.LinearConstraint:
        shape = (len(self.lo), self.n_vars)
        matrix = sp.csr_array((self.v, (self.r, self.c)), shape=shape)
        return so.LinearConstraint(matrix, np.array(self.lo), np.array(self.hi))


def _programme(pb: Problem) -> tuple[FloatArray, so.Bounds, so.LinearConstraint]:
    """Return (objective, variable bounds, constraints) of the coarse model's MILP."""
    n = pb.steps

    def col(block: int, t: int) -> int:
        return block * n + t

    rows = _Rows(8 * n)
    inf = math.inf
    lead = pb.lead_steps
    for t in range(n):
        ready = [(col(A, t), 1.0)]
        if t > 0:
            ready.append((col(A, t - 1), -1.0))
        if t - lead >= 0:
            ready.append((col(U, t - lead), -1.0))
        rows.add(ready, -inf, float(pb.warm) if t == 0 else 0.0)
        in_service = [(col(A, t), 1.0)] + [(col(U, s), 1.0) for s in range(max(0, t - lead + 1), t + 1)]
        rows.add(in_service, float(pb.min_replicas), float(pb.max_replicas))
        rows.add([(col(P, t), 1.0), (col(W, t), 1.0)], -inf, float(pb.quota))
        starts = [(col(W, t), 1.0), (col(V, t), -1.0)] + ([(col(W, t - 1), -1.0)] if t > 0 else [])
        rows.add(starts, -inf, 0.0)
        xs, ys = pb.knots[t], pb.late[t]
        for j in range(xs.shape[0] - 1):
            slope = float(ys[j + 1] - ys[j])
            offset = float(ys[j]) - slope * float(xs[j])  # late_t(x) >= offset + slope * x
            cap = [(col(M, t), 1.0), (col(A, t), -slope), (col(P, t), -slope), (col(W, t), -slope)]
            rows.add(cap, offset, inf)
            rows.add([(col(K, t), 1.0), (col(A, t), slope)], -inf, float(pb.work[t]) - offset)
        rows.add([(col(K, t), 1.0), (col(Z, t), 1.0), (col(M, t), 1.0)], float(pb.work[t]), float(pb.work[t]))
    misses = [(col(M, t), float(pb.per_work[t])) for t in range(n)]
    misses += [(col(V, t), pb.miss_per_start) for t in range(n)] if pb.miss_per_start else []
    rows.add(misses, -inf, pb.budget)
    cost = np.zeros(8 * n)
    cost[A * n : (A + 1) * n] = pb.c_rep * pb.widths
    cost[U * n : (U + 1) * n] = pb.c_rep * pb.cold
    cost[P * n : (P + 1) * n] = pb.c_prov * pb.widths
    cost[Z * n : (Z + 1) * n] = pb.c_sv
    lo = np.zeros(8 * n)
    hi = np.full(8 * n, inf)
    hi[A * n : (A + 1) * n] = pb.max_replicas
    hi[U * n : (U + 1) * n] = pb.max_replicas
    for block in (P, W, V):
        hi[block * n : (block + 1) * n] = pb.quota
    hi[W * n : (W + 1) * n] = min(pb.quota, pb.on_demand_quota)
    for block in (K, Z, M):
        hi[block * n : (block + 1) * n] = pb.work
    return cost, so.Bounds(lo, hi), rows.constraint()


MIP_REL_GAP: Final = 1e-4  # HiGHS stops once its schedule costs at most this much (relative) above its bound


def solve(pb: Problem, *, integral: bool = True, time_limit: float = 60.0) -> Solution:
    """Return the cheapest schedule of the coarse model (its LP relaxation when not ``integral``).

    Past ``time_limit`` seconds HiGHS stops with its best schedule and a proven lower ``bound``
    (``optimal`` False). Raises ValueError when the model has no schedule at all (e.g. the bounds
    forbid serving the work within the miss allowance).
    """
    cost, var_bounds, cons = _programme(pb)
    n = pb.steps
    kinds = np.zeros(8 * n)
    if integral:
        kinds[: 4 * n] = 1  # a, u, p, w are whole instances; v, k, z, m follow
    res = so.milp(
        cost,
        integrality=kinds,
        bounds=var_bounds,
        constraints=cons,
        options={"time_limit": time_limit, "mip_rel_gap": MIP_REL_GAP, "disp": False},
    )
    if res.x is None:
        raise ValueError(
            f"no schedule meets the SLO in the coarse model ({res.message}): the bounds "
            f"(max_replicas {pb.max_replicas}, serverless_quota {pb.quota}) cannot serve the work"
        )
    x = np.asarray(res.x)
    dual = getattr(res, "mip_dual_bound", None) if integral else None
    bound = float(res.fun) if dual is None or not math.isfinite(dual) else min(float(dual), float(res.fun))
    late = float(pb.per_work @ x[M * n : (M + 1) * n] + pb.miss_per_start * x[V * n : (V + 1) * n].sum())
    return Solution(
        ready=np.rint(x[A * n : (A + 1) * n]) if integral else x[A * n : (A + 1) * n],
        starts=np.rint(x[U * n : (U + 1) * n]) if integral else x[U * n : (U + 1) * n],
        provisioned=np.rint(x[P * n : (P + 1) * n]) if integral else x[P * n : (P + 1) * n],
        on_demand=np.rint(x[W * n : (W + 1) * n]) if integral else x[W * n : (W + 1) * n],
        cost=float(res.fun),
        bound=bound,
        optimal=res.status == 0,
        late_requests=late,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Playback:
    """A controller that plays a fixed per-step schedule back (the upper bound's replay)."""

    name: str
    interval_seconds: float
    replicas: tuple[int, ...]
    provisioned: tuple[int, ...]
    enabled: tuple[bool, ...]

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the schedule's target for the step ``obs.now`` falls in (the last step past the end)."""
        i = min(int(obs.now / self.interval_seconds + 1e-9), len(self.replicas) - 1)
        return CapacityTarget(
            replicas=self.replicas[i],
            serverless_provisioned=self.provisioned[i],
            serverless_enabled=self.enabled[i],
            reason="tight oracle: scheduled",
        )


def playback(
    sol: Solution,
    pb: Problem,
    *,
    extra: FloatArray | None = None,
    extra_replicas: FloatArray | None = None,
    enable_all: bool = False,
) -> Playback:
    """Return the controller replaying ``sol``: replicas in service, provisioned one step early.

    ``extra`` adds provisioned instances and ``extra_replicas`` replicas in service per step (repair);
    ``enable_all`` lets on-demand serverless take overflow in every step, not only where the schedule
    has warm on-demand instances.
    """
    n = pb.steps
    lead = pb.lead_steps
    starting = np.array([sol.starts[max(0, t - lead + 1) : t + 1].sum() for t in range(n)])
    more = extra_replicas if extra_replicas is not None else 0.0
    in_service = np.minimum(sol.ready + starting + more, pb.max_replicas)
    prov = sol.provisioned + (extra if extra is not None else 0.0)
    ahead = np.maximum(prov, np.concatenate([prov[1:], prov[-1:]]))
    prov_steps = np.minimum(ahead, pb.quota)
    od = sol.on_demand > 0
    enabled = od | np.concatenate([od[1:], od[-1:]]) | (enable_all and pb.quota > 0)
    return Playback(
        name=UPPER_NAME,
        interval_seconds=pb.step,
        replicas=tuple(int(v) for v in in_service),
        provisioned=tuple(int(v) for v in prov_steps),
        enabled=tuple(bool(v) for v in enabled),
    )


def _step_misses(result: SimResult, n: int) -> FloatArray:
    """Return the SLO misses per step of a replay whose timeline step is the schedule's."""
    misses = np.zeros(n)
    got = np.asarray(result.timeline.slo_misses, dtype=np.float64)[:n]
    misses[: got.shape[0]] = got
    return misses


def _replay_and_repair(
    sol: Solution, pb: Problem, *, goal: float, rounds: int, replay: Callable[[Playback], SimResult]
) -> None:
    """Replay ``sol``; while it misses the goal, add provisioned instances where it missed; returns nothing.

    Round ``k`` adds ``2**k`` provisioned instances in every step that missed (and the one before), or
    replicas from a cold start ahead where the quota is used up; once a round meets the goal, one
    more replay halves the last addition back.
    """
    first = replay(playback(sol, pb))
    best, enable_all = first, False
    if first.summary.slo_attainment < goal and pb.quota > 0 and not all(playback(sol, pb).enabled):
        second = replay(playback(sol, pb, enable_all=True))
        if second.summary.slo_attainment > first.summary.slo_attainment:
            best, enable_all = second, True
    extra, extra_rep = np.zeros(pb.steps), np.zeros(pb.steps)
    lead = math.ceil(pb.cold / pb.step)  # a replica requested this many steps ahead is ready in time
    add = 1.0
    for _ in range(rounds):
        if best.summary.slo_attainment >= goal:
            return
        hit = _step_misses(best, pb.steps) > 0
        room = sol.provisioned + extra < pb.quota
        step_add = add * ((hit | np.concatenate([hit[1:], [False]])) & room)
        step_rep = np.zeros(pb.steps)
        for t in np.flatnonzero(hit & ~room):  # no quota left there: a replica, requested a cold start ahead
            step_rep[max(0, t - lead) : t + 1] = add
        if not step_add.any() and not step_rep.any():
            return
        extra, extra_rep = extra + step_add, extra_rep + step_rep
        best = replay(playback(sol, pb, extra=extra, extra_replicas=extra_rep, enable_all=enable_all))
        if best.summary.slo_attainment >= goal and add > 1.0:
            half_p, half_r = extra - np.floor(step_add / 2.0), extra_rep - np.floor(step_rep / 2.0)
            replay(playback(sol, pb, extra=half_p, extra_replicas=half_r, enable_all=enable_all))
            return
        add *= 2.0


def tight_oracle(
    workload: Workload | RateWorkload,
    *,
    policy: ModelPolicy,
    initial_replicas: int | None = None,
    step: float | None = None,
    time_limit: float = 60.0,
    rounds: int = REPAIR_ROUNDS,
    with_lp: bool = False,
) -> TightOracle:
    """Return the tight oracle's lower and upper bounds on ``workload`` under ``policy``.

    ``with_lp`` also solves the LP relaxation (``lp``, NaN otherwise). Raises ValueError as
    :func:`build_problem` and :func:`solve` do.
    """
    step = default_step(workload.duration) if step is None else step
    pb = build_problem(workload, policy=policy, step=step, initial_replicas=initial_replicas)
    fits = feasibility(workload, policy=policy)
    lp = solve(pb, integral=False, time_limit=time_limit).cost if with_lp else math.nan
    sol = solve(pb, integral=True, time_limit=time_limit)
    goal = fits.judged_goal
    replays: list[SimResult] = []

    def replay(controller: Playback) -> SimResult:
        result = simulate(
            workload, controller, policy=policy, timeline_step=pb.step, initial_replicas=pb.warm
        )
        replays.append(result)
        return result

    schedules = [sol]
    if pb.quota > 0 and sol.on_demand.any():
        # the bound leans on on-demand instances kept warm for free; a schedule of provisioned
        # instances only (on-demand still takes overflow in the replay) is often cheaper to repair
        with contextlib.suppress(ValueError):  # no such schedule: keep the first only
            schedules.append(solve(dataclasses.replace(pb, on_demand_quota=0), time_limit=time_limit))
    for schedule in schedules:
        _replay_and_repair(schedule, pb, goal=goal, rounds=rounds, replay=replay)
    met = [r for r in replays if r.summary.slo_attainment >= goal - 1e-12]
    upper = min(met, key=lambda r: r.summary.cost.total) if met else None
    return TightOracle(
        lower=sol.bound,
        lp=lp,
        optimal=sol.optimal,
        upper=upper,
        replays=replays,
        feasibility=fits,
        step=pb.step,
        solve_seconds_budget=time_limit,
    )
