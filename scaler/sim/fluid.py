"""Fluid cluster model: per-second arrival counts served by average requests (days of ServeGen in seconds).

Same capacity model, router order, billing and lead times as :mod:`scaler.sim.cluster`, but requests
are a fluid of average size: ``S = C * (P/Tp + O/Td)`` with the workload's mean token counts.
Approximations (documented, measured against the per-request model by ``bench``):

* Time advances in whole seconds; capacity that becomes ready during a second serves from the next.
* Busy slots complete at rate ``1/S`` (a share ``1 - exp(-1/S)`` per second), not after exactly ``S``;
  slot counts are scaled so that a full instance holds ``C`` slots busy on average over each second.
* Requests that arrive while nobody waits and a slot is free wait 0; queued requests wait in
  per-second cohorts, FIFO, and a cohort admitted ``k`` seconds after it arrived waits ``k`` seconds, so
  queue waits are whole seconds (no sub-second queueing). Cohorts older than the give-up time drop.
* Serverless: instances are whole; the serverless cold start is rounded up to whole seconds; idle
  ready instances expire once the keep-alive window has passed without them being busy; provisioned
  instances are warm at once (no cold start when provisioned).
* TTFT is queue wait plus the mean prefill ``P/Tp``; wait percentiles come from a histogram with
  :data:`WAIT_BIN_SECONDS` bins. Counts in the summary are rounded fluid amounts, so served + dropped
  may differ from the request count by rounding.
* A removed replica is billed for one mean hold time ``S`` after removal while busy slots remain.
"""

from __future__ import annotations

import math

import numpy as np

from scaler.core import accounting
from scaler.core.accounting import hold_seconds, wait_limit
from scaler.core.policy import ModelPolicy
from scaler.sim import fluid_kernels as fk
from scaler.sim.cluster import GIVE_UP_SECONDS, Outcome, timeline_edges
from scaler.sim.coldstart import ColdStarts
from scaler.sim.fleet import Fleet, replica_series
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.results import FloatArray, Timeline
from scaler.sim.workload import RateWorkload

WAIT_BIN_SECONDS = 0.25


def bin_sums(per_second: FloatArray, edges: FloatArray) -> FloatArray:
    """Return the sum of a per-second series over each bin of ``edges`` (linear within a second)."""
    cum = np.concatenate(([0.0], np.cumsum(per_second)))
    at = np.interp(edges, np.arange(cum.shape[0], dtype=np.float64), cum)
    return np.diff(at)


def hist_percentiles(hist: FloatArray, bw: float) -> tuple[float, float, float]:
    """Return the 50th, 95th and 99th percentiles of a histogram with bins of ``bw`` (NaN if empty)."""
    total = float(hist.sum())
    if total <= 0.0:
        return math.nan, math.nan, math.nan
    cum = np.cumsum(hist)
    idx = np.searchsorted(cum, np.array([0.5, 0.95, 0.99]) * total * (1 - 1e-12), side="left")
    vals = np.minimum(idx, hist.shape[0] - 1) * bw
    return float(vals[0]), float(vals[1]), float(vals[2])


class FluidCluster:
    """The fluid model of one model's capacity; :func:`scaler.sim.engine.simulate` drives it."""

    def __init__(
        self, workload: RateWorkload, *, policy: ModelPolicy, initial_replicas: int | None = None,
        cold_starts: ColdStarts | None = None,
    ) -> None:
        if policy.serverless_profile.per_token:
            raise ValueError(
                f"the fluid model has serverless instances only; backend {policy.serverless_backend} bills "
                "per token: run the per-request model (without --fluid)"
            )
        self._policy = policy
        self._c = policy.replica.max_concurrency
        self._counts = np.ascontiguousarray(workload.counts, dtype=np.float64)
        if self._counts.ndim != 1 or not np.all(np.isfinite(self._counts)) or np.any(self._counts < 0):
            raise ValueError(
                f"workload {workload.name!r}: counts must be finite, non-negative, one per second"
            )
        self._mean_p = float(workload.mean_prompt_tokens)
        self._mean_o = float(workload.mean_output_tokens)
        self._hold = float(hold_seconds(policy, np.array([self._mean_p]), np.array([self._mean_o]))[0])
        self._decay = math.exp(-1.0 / self._hold) if self._hold > 0 else 0.0
        # busy slots are recorded at the end of a second; their mean over it is this share of that
        self._occupancy = self._hold * (1.0 - self._decay) if self._hold > 0 else 1.0
        self._t_end = self._counts.shape[0]
        self._give_up = int(GIVE_UP_SECONDS)
        self._cold_steps = max(1, math.ceil(policy.serverless_profile.cold_start_seconds))
        cold = float(self._cold_steps)
        total = self._t_end + self._give_up + self._cold_steps + 2
        self._total = total
        self._t = 0
        self._st = np.zeros(5)
        self._cohorts = np.zeros(self._give_up + 1)
        self._pending = np.zeros(self._cold_steps + 1)
        self._starting = np.zeros(self._cold_steps + 1)
        self._need = np.zeros(max(1, int(policy.serverless_profile.keep_warm_seconds)))
        self._hist = np.zeros(math.ceil((GIVE_UP_SECONDS + cold) / WAIT_BIN_SECONDS) + 2)
        self._busy_k = np.zeros(total)
        self._sv_inst = np.zeros(total)
        self._misses = np.zeros(total)
        self._tallies = np.zeros(3)
        self._n_prov = 0
        self._enabled = False
        self._prov_seconds = 0.0
        self._prov_since = 0.0
        ttft, queue = wait_limit(policy)
        self._prefill = self._mean_p / policy.replica.prefill_tokens_per_second
        self._wait_lim = min(ttft - self._prefill, queue)
        warm = policy.bounds.min_replicas if initial_replicas is None else initial_replicas
        draw = cold_starts.sampler() if cold_starts is not None else None
        self.fleet = Fleet(lead=policy.lead_times, warm=warm, drain_end=self._drain_end, cold=draw)

    def _drain_end(self, rid: int, now: float) -> float:
        del rid  # the fluid does not tell replicas apart
        return now + self._hold if self._st[fk.BUSY_K] > 0.0 else now

    def apply(self, target: CapacityTarget, *, now: float) -> None:
        """Move the cluster towards ``target`` at ``now``; returns nothing."""
        self.fleet.apply(replicas=target.replicas, standby=target.standby, now=now)
        quota = self._policy.bounds.serverless_quota
        self._prov_seconds += self._n_prov * (now - self._prov_since)
        self._prov_since = now
        self._n_prov = min(target.serverless_provisioned, quota)
        self._enabled = target.serverless_enabled and quota > 0

    def advance(self, *, until: float) -> None:
        """Run whole seconds up to ``until`` (rounded up; at most the end of the drain); returns nothing."""
        t1 = min(math.ceil(until), self._total)
        if t1 <= self._t:
            return
        _, ready = self.fleet.serving()
        fk.fluid_run(
            self._counts,
            self._t,
            t1,
            self._c / self._occupancy if self._occupancy > 0 else float(self._c),
            self._decay,
            np.sort(np.asarray(ready, dtype=np.float64)),
            self._n_prov,
            self._policy.bounds.serverless_quota,
            self._enabled,
            self._cold_steps,
            self._give_up,
            self._wait_lim,
            WAIT_BIN_SECONDS,
            self._st,
            self._cohorts,
            self._pending,
            self._starting,
            self._need,
            self._hist,
            self._busy_k,
            self._sv_inst,
            self._misses,
            self._tallies,
        )
        self._t = t1

    def observe(self, *, now: float, interval: float) -> TickObservation:
        """Return what an autoscaler sees at ``now`` about the seconds ``[now - interval, now)``."""
        lo = max(0, math.floor(now - interval))
        hi = min(max(lo, math.floor(now)), self._t_end)
        lo = min(lo, hi)
        arrivals = round(float(self._counts[lo:hi].sum()))
        span = max(1, hi - lo)
        ready, starting, sb_ready, sb_starting = self.fleet.counts(now=now)
        in_flight = float(self._st[: fk.RESERVED + 1].sum())
        return TickObservation(
            now=now,
            interval=interval,
            arrivals=arrivals,
            prompt_tokens=round(arrivals * self._mean_p),
            output_tokens=round(arrivals * self._mean_o),
            replicas_ready=ready,
            replicas_starting=starting,
            standby_ready=sb_ready,
            standby_starting=sb_starting,
            serverless_provisioned=self._n_prov,
            serverless_active=round(float(self._sv_inst[hi - 1])) if hi > 0 else 0,
            busy_slots=float(self._busy_k[lo:hi].sum()) * self._occupancy / span,
            slots_per_replica=self._c,
            queue_length=round(float(self._cohorts.sum())),
            in_flight=round(in_flight),
            pods=tuple(self.fleet.pods()),
        )

    def finish(self, *, timeline_step: float) -> Outcome:
        """Drain the queue, close the books at the workload's end and return the outcome."""
        self.advance(until=float(self._total))
        end = float(self._t_end)
        self.apply_end(end)
        c = self._c
        served_k, served_s, dropped = (float(x) for x in self._tallies)
        requests = float(self._counts.sum())
        seg = self.fleet.segments
        cost = accounting.bill(
            self._policy,
            replica_seconds=seg.billed_seconds(0),
            standby_seconds=seg.billed_seconds(1),
            serverless_busy_seconds=served_s * self._hold / c,
            provisioned_seconds=self._prov_seconds,
            prompt_tokens=served_s * self._mean_p,
            output_tokens=served_s * self._mean_o,
        )
        paid_hours = (seg.billed_seconds(0) + seg.billed_seconds(1)) / 3600.0
        busy_hours = float(self._busy_k[: self._t_end].sum()) * self._occupancy / c / 3600.0
        edges = timeline_edges(end, timeline_step)
        ready, starting, sb_ready = replica_series(seg, edges)
        widths = np.diff(edges)
        wait = hist_percentiles(self._hist, WAIT_BIN_SECONDS)
        missed = float(self._misses.sum())
        return Outcome(
            cost=cost,
            requests=round(requests),
            served_kubernetes=round(served_k),
            served_serverless=round(served_s),
            dropped=round(dropped),
            slo_attainment=min(1.0, max(0.0, 1.0 - missed / requests)) if requests > 0 else 1.0,
            wait=wait,
            ttft=(wait[0] + self._prefill, wait[1] + self._prefill, wait[2] + self._prefill),
            idle_replica_hours=max(0.0, paid_hours - busy_hours),
            timeline=Timeline(
                step=timeline_step,
                t=edges[:-1],
                arrival_rate=bin_sums(self._counts, edges) / widths,
                replicas_ready=ready,
                replicas_starting=starting,
                standby_ready=sb_ready,
                serverless_instances=bin_sums(self._sv_inst[: self._t_end], edges) / widths,
                slo_misses=bin_sums(self._misses[: self._t_end], edges),
            ),
        )

    def apply_end(self, end: float) -> None:
        """Stop provisioned billing and close the replica books at ``end``; returns nothing."""
        self._prov_seconds += self._n_prov * max(0.0, end - self._prov_since)
        self._prov_since = end
        self._n_prov = 0
        self.fleet.close(end=end)
