"""Per-request cluster model: simulated replicas and serverless instances serving individual requests.

Capacity model (shared with the planner): an instance, replica or serverless, has ``C =
replica.max_concurrency`` slots; a request with ``P`` prompt and ``O`` output tokens holds one slot for
``S = C * (P/Tp + O/Td)`` seconds and sees its first token ``P/Tp`` after its slot starts.

Router, per request at arrival, FIFO: a free slot on a ready replica; else, if serverless is enabled,
a free slot on a warm serverless instance (or one still starting: the request waits out the rest of
its cold start); else, if the quota allows, a new serverless instance (the request waits its whole
cold start); else the replica queue, served first-come first-served as replica slots free up. A
request that would wait longer than :data:`GIVE_UP_SECONDS` is dropped. Provisioned serverless
instances take traffic even when on-demand serverless is disabled.

Billing (the rules of :mod:`scaler.core.accounting`, shared with the daemon's ledger): replicas and
standby as in :mod:`scaler.sim.fleet`; serverless per busy instance-second,
i.e. ``serverless_per_gpu_second * S / C`` per request served there (provisioned instances too, like
AWS Lambda provisioned concurrency), plus the per-token prices (input and output), plus
``serverless_provisioned_per_hour`` per provisioned instance whether used or not. Serverless cold
starts are not billed. Cold start and keep-warm come from the backend's profile
(:attr:`scaler.core.policy.ModelPolicy.serverless_profile`, the planner's too): a serverless instance
stays warm ``keep_warm_seconds`` after its last request ends (:data:`KEEPALIVE_SECONDS` without a
serverless target). Provisioned instances beyond the quota are clipped to the quota; a newly
provisioned instance becomes warm one serverless cold start after it is requested.

A per-token backend (Bedrock) has no instances: nothing is provisioned, there is no cold start, a
request routed there is served on arrival (its TTFT is the replica's prefill time, standing in for
the hosted model's) and billed only per input and output token. Its quota is tokens per minute: the
tokens of the requests it served in each whole minute (``arrival // 60``) stay within
``tokens_per_minute``; a request beyond it is throttled and joins the replica queue, as a gateway
falling back on a 429 would do.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from scaler.core.accounting import CostBreakdown, bill, hold_seconds, wait_limit
from scaler.core.policy import ModelPolicy
from scaler.core.profile import GENERIC
from scaler.sim import kernels
from scaler.sim.coldstart import ColdStarts
from scaler.sim.fleet import Fleet, mean_coverage, replica_series
from scaler.sim.protocol import CapacityTarget, TickObservation
from scaler.sim.results import FloatArray, Timeline
from scaler.sim.workload import Workload

GIVE_UP_SECONDS = 60.0  # a request waiting longer than this for a replica slot is dropped
KEEPALIVE_SECONDS = GENERIC.keep_warm_seconds  # an idle instance stays warm this long (generic)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a cluster model measured over a run (the engine adds the policy name and scaling actions)."""

    cost: CostBreakdown
    requests: int
    served_kubernetes: int
    served_serverless: int
    dropped: int
    slo_attainment: float
    wait: tuple[float, float, float]  # p50, p95, p99 over served requests (NaN if none)
    ttft: tuple[float, float, float]
    idle_replica_hours: float
    timeline: Timeline


def timeline_edges(duration: float, step: float) -> FloatArray:
    """Return the bin edges ``0, step, ..., duration`` of a timeline (the last bin may be shorter)."""
    n = max(1, math.ceil(duration / step))
    edges = np.arange(n + 1, dtype=np.float64) * step
    edges[-1] = max(duration, edges[-2] + 1e-9) if n > 0 else step
    return edges


def percentiles(values: FloatArray) -> tuple[float, float, float]:
    """Return the 50th, 95th and 99th percentiles of ``values`` (NaN for an empty array)."""
    if values.shape[0] == 0:
        return math.nan, math.nan, math.nan
    p = np.percentile(values, [50.0, 95.0, 99.0])
    return float(p[0]), float(p[1]), float(p[2])


class RequestCluster:
    """The per-request model of one model's capacity; :func:`scaler.sim.engine.simulate` drives it."""

    def __init__(
        self, workload: Workload, *, policy: ModelPolicy, initial_replicas: int | None = None,
        cold_starts: ColdStarts | None = None,
    ) -> None:
        self._policy = policy
        self._c = policy.replica.max_concurrency
        self._dur = workload.duration
        self._arr = np.ascontiguousarray(workload.arrivals, dtype=np.float64)
        prompt = workload.prompt_tokens.astype(np.float64)
        output = workload.output_tokens.astype(np.float64)
        self._prompt, self._output = workload.prompt_tokens, workload.output_tokens
        self._hold = hold_seconds(policy, prompt, output)
        n = self._arr.shape[0]
        self._next = 0
        self._out_start = np.full(n, math.nan)
        self._out_kind = np.full(n, kernels.PENDING, dtype=np.int64)
        self._queue = np.zeros(max(n, 1), dtype=np.int64)
        self._qs = np.zeros(2, dtype=np.int64)
        nb = math.ceil(self._dur) + 2
        self._busy_diff = np.zeros(nb)
        self._busy_corr = np.zeros(nb)
        self._busy_level = 0.0
        self._busy_pos = 0
        self._profile = policy.serverless_profile
        tpm = policy.serverless_tokens_per_minute
        self._tpm = float(tpm) if tpm is not None and policy.bounds.serverless_quota > 0 else 0.0
        self._tokens = (prompt + output) if self._tpm > 0 else np.zeros(1)
        self._tpm_used = np.zeros(math.ceil(self._dur / 60.0) + 2 if self._tpm > 0 else 1)
        quota = 0 if self._profile.per_token else policy.bounds.serverless_quota
        self._keep_warm = 0.0 if self._profile.per_token else self._profile.keep_warm_seconds
        self._quota = quota
        self._sv_heap = np.zeros((max(quota, 1), self._c))
        self._sv_on = np.zeros(max(quota, 1), dtype=np.int64)
        self._sv_ready = np.zeros(max(quota, 1))
        self._sv_last_end = np.zeros(max(quota, 1))
        self._sv_since = np.zeros(max(quota, 1))
        self._life = np.zeros((2 * quota + 16, 2))
        self._counters = np.zeros(1, dtype=np.int64)
        self._n_prov = 0
        self._sv_enabled = False
        self._prov_seconds = 0.0
        self._prov_since = 0.0
        self._slot_free = np.zeros(0)
        self._heap_key = np.zeros(0)
        self._heap_id = np.zeros(0, dtype=np.int64)
        self._hn = np.zeros(1, dtype=np.int64)
        warm = policy.bounds.min_replicas if initial_replicas is None else initial_replicas
        draw = cold_starts.sampler() if cold_starts is not None else None
        self.fleet = Fleet(lead=policy.lead_times, warm=warm, drain_end=self._drain_end, cold=draw)
        self._sync_heap()

    def _drain_end(self, rid: int, now: float) -> float:
        slots = self._slot_free[rid * self._c : (rid + 1) * self._c]
        return max(now, float(slots.max())) if slots.shape[0] else now

    def _sync_heap(self) -> None:
        """Rebuild the replica-slot heap after the serving set changed."""
        need = self.fleet.id_capacity * self._c
        if self._slot_free.shape[0] < need:
            grown = np.zeros(max(need, 2 * self._slot_free.shape[0]))
            grown[: self._slot_free.shape[0]] = self._slot_free
            self._slot_free = grown
            self._heap_key = np.zeros(grown.shape[0])
            self._heap_id = np.zeros(grown.shape[0], dtype=np.int64)
        rids, ready = self.fleet.serving()
        self._hn[0] = kernels.build_heap(
            self._heap_key,
            self._heap_id,
            np.asarray(rids, dtype=np.int64),
            np.asarray(ready, dtype=np.float64),
            self._slot_free,
            self._c,
        )
        self.fleet.serving_changed = False

    def apply(self, target: CapacityTarget, *, now: float) -> None:
        """Move the cluster towards ``target`` at ``now``; returns nothing."""
        self.fleet.apply(replicas=target.replicas, standby=target.standby, now=now)
        if self.fleet.serving_changed:
            self._sync_heap()
        self._set_provisioned(min(target.serverless_provisioned, self._quota), now=now)
        self._sv_enabled = target.serverless_enabled and (self._quota > 0 or self._tpm > 0)

    def _set_provisioned(self, count: int, *, now: float) -> None:
        self._prov_seconds += self._n_prov * (now - self._prov_since)
        self._prov_since = now
        cold = self._profile.cold_start_seconds
        for i in range(count):
            if self._sv_on[i] == 0:
                self._sv_on[i] = 1
                self._sv_ready[i] = now + cold
                self._sv_heap[i, :] = now + cold
                self._sv_last_end[i] = now + cold
                self._sv_since[i] = now
        for i in range(count, self._n_prov):
            self._sv_last_end[i] = max(self._sv_last_end[i], now)
        self._n_prov = count

    def advance(self, *, until: float) -> None:
        """Route every request arriving before ``until`` and serve the queue up to then; returns nothing."""
        limit = self._quota if self._sv_enabled else self._n_prov
        # lifetimes closed in this call belong to instances on now or to cold starts of its arrivals
        upto = int(np.searchsorted(self._arr, until, side="left")) if until < math.inf else self._arr.shape[0]
        room = int(self._counters[0]) + self._quota + (upto - self._next) + 4
        if self._life.shape[0] < room:
            self._life = np.concatenate([self._life, np.zeros((max(room, 2 * self._life.shape[0]), 2))])
        profile = self._profile
        self._next = kernels.route(
            self._arr,
            self._hold,
            until,
            self._next,
            self._heap_key,
            self._heap_id,
            self._hn,
            self._slot_free,
            self._queue,
            self._qs,
            self._sv_heap,
            self._sv_on,
            self._sv_ready,
            self._sv_last_end,
            self._sv_since,
            self._life,
            self._counters,
            limit,
            self._sv_enabled,
            self._n_prov,
            self._out_start,
            self._out_kind,
            self._busy_diff,
            self._busy_corr,
            GIVE_UP_SECONDS,
            self._keep_warm,
            profile.cold_start_seconds,
            self._tokens,
            self._tpm_used,
            self._tpm,
        )
        kernels.expire_all(
            until,
            self._n_prov,
            self._keep_warm,
            self._sv_on,
            self._sv_last_end,
            self._sv_since,
            self._life,
            self._counters,
        )

    def observe(self, *, now: float, interval: float) -> TickObservation:
        """Return what an autoscaler sees at ``now`` about the interval ``[now - interval, now)``."""
        lo = int(np.searchsorted(self._arr, now - interval, side="left"))
        hi = int(np.searchsorted(self._arr, now, side="left"))
        ready, starting, sb_ready, sb_starting = self.fleet.counts(now=now)
        end_bin = min(int(now), self._busy_diff.shape[0] - 1)
        busy = 0.0
        if end_bin > self._busy_pos:
            levels = self._busy_level + np.cumsum(self._busy_diff[self._busy_pos : end_bin])
            busy = float(np.sum(levels + self._busy_corr[self._busy_pos : end_bin]))
            self._busy_level = float(levels[-1])
            self._busy_pos = end_bin
        in_flight = int(np.count_nonzero(self._slot_free > now))
        in_flight += int(np.count_nonzero(self._sv_heap[: self._quota] > now))
        return TickObservation(
            now=now,
            interval=interval,
            arrivals=hi - lo,
            prompt_tokens=int(self._prompt[lo:hi].sum()),
            output_tokens=int(self._output[lo:hi].sum()),
            replicas_ready=ready,
            replicas_starting=starting,
            standby_ready=sb_ready,
            standby_starting=sb_starting,
            serverless_provisioned=self._n_prov,
            serverless_active=int(self._sv_on[: self._quota].sum()),
            busy_slots=busy / interval if interval > 0 else 0.0,
            slots_per_replica=self._c,
            queue_length=int(self._qs[1] - self._qs[0]),
            in_flight=in_flight,
            pods=tuple(self.fleet.pods()),
        )

    def served(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Return, per request in arrival order, when its slot started (NaN if not yet or dropped) and
        where it went (``kernels.KUBERNETES``, ``SERVERLESS``, ``DROPPED`` or ``PENDING``): copies.
        """
        return self._out_start.copy(), self._out_kind.copy()

    def finish(self, *, timeline_step: float) -> Outcome:
        """Serve what is still queued, close the books at the workload's end and return the outcome."""
        self.advance(until=math.inf)
        end = self._dur
        self._set_provisioned(0, now=end)
        self.fleet.close(end=end)
        life = self._life[: self._counters[0]]
        open_ = np.flatnonzero(self._sv_on[: self._quota])
        open_end = np.minimum(self._sv_last_end[open_] + self._keep_warm, end)
        sv_start = np.concatenate([life[:, 0], self._sv_since[open_]])
        sv_end = np.minimum(np.concatenate([life[:, 1], open_end]), end)
        return self._outcome(timeline_step=timeline_step, sv_start=sv_start, sv_end=sv_end)

    def _outcome(self, *, timeline_step: float, sv_start: FloatArray, sv_end: FloatArray) -> Outcome:
        policy, kind = self._policy, self._out_kind
        served = (kind == kernels.KUBERNETES) | (kind == kernels.SERVERLESS)
        on_sv = kind == kernels.SERVERLESS
        wait = self._out_start - self._arr
        ttft = wait + self._prompt / policy.replica.prefill_tokens_per_second
        ttft_target, wait_target = wait_limit(policy)
        met = served & (ttft <= ttft_target) & (wait <= wait_target)
        cost: CostBreakdown = bill(
            policy,
            replica_seconds=self.fleet.segments.billed_seconds(0),
            standby_seconds=self.fleet.segments.billed_seconds(1),
            serverless_busy_seconds=float(self._hold[on_sv].sum()) / self._c,
            provisioned_seconds=self._prov_seconds,
            prompt_tokens=float(self._prompt[on_sv].sum()),
            output_tokens=float(self._output[on_sv].sum()),
        )
        valid = max(0, math.ceil(self._dur))
        per_second = np.cumsum(self._busy_diff) + self._busy_corr
        busy_hours = float(per_second[:valid].sum()) / self._c / 3600.0
        paid_hours = (self.fleet.segments.billed_seconds(0) + self.fleet.segments.billed_seconds(1)) / 3600.0
        edges = timeline_edges(self._dur, timeline_step)
        widths = np.diff(edges)
        ready, starting, sb_ready = replica_series(self.fleet.segments, edges)
        counts = np.histogram(self._arr, bins=edges)[0].astype(np.float64)
        misses = np.histogram(self._arr[~met], bins=edges)[0].astype(np.float64)
        n = int(kind.shape[0])
        return Outcome(
            cost=cost,
            requests=n,
            served_kubernetes=int(np.count_nonzero(kind == kernels.KUBERNETES)),
            served_serverless=int(np.count_nonzero(on_sv)),
            dropped=int(np.count_nonzero(kind == kernels.DROPPED)),
            slo_attainment=float(met.sum()) / n if n else 1.0,
            wait=percentiles(wait[served]),
            ttft=percentiles(ttft[served]),
            idle_replica_hours=max(0.0, paid_hours - busy_hours),
            timeline=Timeline(
                step=timeline_step,
                t=edges[:-1],
                arrival_rate=counts / widths,
                replicas_ready=ready,
                replicas_starting=starting,
                standby_ready=sb_ready,
                serverless_instances=mean_coverage(sv_start, sv_end, edges),
                slo_misses=misses,
            ),
        )
