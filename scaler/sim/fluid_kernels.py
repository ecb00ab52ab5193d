"""numba kernel of the fluid cluster model: one step per second over per-second arrival counts.

State arrays, owned by :class:`scaler.sim.fluid.FluidCluster` and changed in place:

* ``st = (busy replica slots, busy serverless slots, slots reserved on starting serverless instances)``;
* ``cohorts[tau % (G + 1)]``: requests that arrived in second ``tau`` and still wait for a replica slot;
* ``pending[t % len]``: requests whose serverless instance becomes ready in second ``t``;
* ``need[t % K]``: serverless instances needed in each of the last ``K`` (keep-alive) seconds;
* ``hist``: served requests by queue wait, in bins of ``bw`` seconds;
* per-second outputs ``busy_k`` (busy replica slots), ``sv_inst`` (serverless instances up) and
  ``misses`` (requests arriving that second that missed the SLO or were dropped);
* ``tallies = (served on replicas, served on serverless, dropped)``.
"""

from __future__ import annotations

import math

from numba import njit

from scaler.sim.results import FloatArray

SERVED_K, SERVED_S, DROPPED = 0, 1, 2
BUSY_K, BUSY_S, RESERVED = 0, 1, 2


@njit(cache=True)
def _record(hist: FloatArray, bw: float, wait: float, amount: float) -> None:
    """Add ``amount`` requests with queue wait ``wait`` to the wait histogram."""
    b = min(round(wait / bw), hist.shape[0] - 1)
    hist[b] += amount


@njit(cache=True)
def fluid_run(  # noqa: PLR0917, PLR0912, PLR0915 - one numba loop; no keyword-only parameters in numba
    counts: FloatArray,
    t0: int,
    t1: int,
    c: int,
    decay: float,
    ready_times: FloatArray,
    n_prov: int,
    quota: int,
    enabled: bool,
    cold: float,
    cold_steps: int,
    give_up: int,
    wait_lim: float,
    bw: float,
    st: FloatArray,
    cohorts: FloatArray,
    pending: FloatArray,
    need: FloatArray,
    hist: FloatArray,
    busy_k: FloatArray,
    sv_inst: FloatArray,
    misses: FloatArray,
    tallies: FloatArray,
) -> None:
    """Advance the fluid model through seconds ``t0 .. t1 - 1``; returns nothing.

    Each second: a share ``1 - decay`` of busy slots completes; serverless instances that finished
    their cold start take their reserved requests; waiting cohorts older than ``give_up`` seconds are
    dropped and the rest are admitted oldest first to free replica slots (their wait is their age);
    new arrivals take free replica slots if nobody waits, then warm serverless slots, then new
    serverless instances (waiting ``cold``), and the rest join the queue.
    """
    g1 = cohorts.shape[0]
    n_pend = pending.shape[0]
    n_need = need.shape[0]
    capacity_ptr = 0
    n_ready = ready_times.shape[0]
    for t in range(t0, t1):
        st[BUSY_K] *= decay
        st[BUSY_S] *= decay
        arriving = pending[t % n_pend]
        pending[t % n_pend] = 0.0
        st[BUSY_S] += arriving
        st[RESERVED] = max(0.0, st[RESERVED] - arriving)
        while capacity_ptr < n_ready and ready_times[capacity_ptr] <= t:
            capacity_ptr += 1
        free = max(0.0, c * capacity_ptr - st[BUSY_K])
        # drop the cohort that has waited past the give-up time (it sits where today's cohort goes)
        slot = t % g1
        if cohorts[slot] > 0.0:
            tallies[DROPPED] += cohorts[slot]
            if t - g1 >= 0:
                misses[t - g1] += cohorts[slot]
            cohorts[slot] = 0.0
        backlog = 0.0
        for age in range(give_up, 0, -1):
            tau = t - age
            if tau < 0:
                continue
            k = tau % g1
            waiting = cohorts[k]
            if waiting <= 0.0:
                continue
            take = min(waiting, free)
            if take > 0.0:
                free -= take
                cohorts[k] = waiting - take
                st[BUSY_K] += take
                tallies[SERVED_K] += take
                _record(hist, bw, float(age), take)
                if age > wait_lim:
                    misses[tau] += take
            backlog += cohorts[k]
        rest = counts[t] if t < counts.shape[0] else 0.0
        if backlog <= 0.0:
            direct = min(rest, free)
            st[BUSY_K] += direct
            tallies[SERVED_K] += direct
            _record(hist, bw, 0.0, direct)
            rest -= direct
        if enabled or n_prov > 0:
            warm = float(n_prov)
            if enabled:
                for k in range(n_need):
                    warm = max(warm, need[k])
                warm = min(warm, float(quota))
            take = min(rest, max(0.0, warm * c - st[BUSY_S] - st[RESERVED]))
            st[BUSY_S] += take
            tallies[SERVED_S] += take
            _record(hist, bw, 0.0, take)
            rest -= take
            if enabled and rest > 0.0:
                started = min(rest, max(0.0, (quota - warm) * c))
                pending[(t + cold_steps) % n_pend] += started
                st[RESERVED] += started
                tallies[SERVED_S] += started
                _record(hist, bw, cold, started)
                if cold > wait_lim:
                    misses[t] += started
                rest -= started
            now_need = math.ceil((st[BUSY_S] + st[RESERVED]) / c - 1e-9)
            need[t % n_need] = now_need
            sv_inst[t] = max(warm, now_need)
        else:
            need[t % n_need] = 0.0
        if rest > 0.0:
            cohorts[slot] = rest  # misses among them are counted when admitted or dropped
        busy_k[t] = st[BUSY_K]
