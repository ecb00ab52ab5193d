"""numba kernel of the fluid cluster model: one step per second over per-second arrival counts.

State arrays, owned by :class:`scaler.sim.fluid.FluidCluster` and changed in place:

Slots are counted at the end of each second, after admissions: with exponential completions the mean
over the second is ``occupancy = S * (1 - exp(-1/S))`` of that, so the caller passes ``c = C /
occupancy`` end-of-second slots per instance, which makes the *mean* occupancy of a full instance ``C``.

* ``st = (busy replica slots, busy serverless slots, slots reserved on starting serverless instances,
  ready serverless instances, starting serverless instances)``;
* ``cohorts[tau % (G + 1)]``: requests that arrived in second ``tau`` and still wait for a replica slot;
* ``pending[t % len]`` / ``starting[t % len]``: requests waiting for, and number of, serverless
  instances that become ready in second ``t`` (the serverless cold start, rounded up to whole seconds);
* ``need[t % K]``: serverless instances busy in each of the last ``K`` (keep-alive) seconds; ready
  instances beyond the provisioned ones and the most busy in that window have expired;
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
BUSY_K, BUSY_S, RESERVED, READY_INST, STARTING_INST = 0, 1, 2, 3, 4


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
    c: float,
    decay: float,
    ready_times: FloatArray,
    n_prov: int,
    quota: int,
    enabled: bool,
    cold_steps: int,
    give_up: int,
    wait_lim: float,
    bw: float,
    st: FloatArray,
    cohorts: FloatArray,
    pending: FloatArray,
    starting: FloatArray,
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
    new arrivals take free replica slots if nobody waits, then serverless (see :func:`_serverless`),
    and the rest join the queue.
    """
    g1 = cohorts.shape[0]
    n_pend = pending.shape[0]
    capacity_ptr = 0
    n_ready = ready_times.shape[0]
    for t in range(t0, t1):
        st[BUSY_K] *= decay
        st[BUSY_S] *= decay
        arriving = pending[t % n_pend]
        pending[t % n_pend] = 0.0
        st[BUSY_S] += arriving
        st[RESERVED] = max(0.0, st[RESERVED] - arriving)
        st[READY_INST] += starting[t % n_pend]
        st[STARTING_INST] = max(0.0, st[STARTING_INST] - starting[t % n_pend])
        starting[t % n_pend] = 0.0
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
            rest = _serverless(
                t, rest, c, n_prov, quota, enabled, cold_steps, wait_lim, bw, st, pending, starting,
                need, hist, misses, tallies,
            )  # fmt: skip
        else:
            need[t % need.shape[0]] = 0.0
        sv_inst[t] = st[READY_INST] + st[STARTING_INST]
        if rest > 0.0:
            cohorts[slot] = rest  # misses among them are counted when admitted or dropped
        busy_k[t] = st[BUSY_K]


@njit(cache=True)
def _serverless(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    t: int,
    rest: float,
    c: float,
    n_prov: int,
    quota: int,
    enabled: bool,
    cold_steps: int,
    wait_lim: float,
    bw: float,
    st: FloatArray,
    pending: FloatArray,
    starting: FloatArray,
    need: FloatArray,
    hist: FloatArray,
    misses: FloatArray,
    tallies: FloatArray,
) -> float:
    """Place ``rest`` arrivals of second ``t`` on serverless; return how many are left for the queue.

    Order: free slots on ready instances (wait 0); free slots on starting instances, soonest ready
    first (wait = the rest of their cold start); new instances up to the quota (wait = a full cold
    start). Without on-demand serverless only the ``n_prov`` provisioned instances serve.
    """
    n_pend = pending.shape[0]
    busy_need = float(math.ceil(st[BUSY_S] / c - 1e-9))
    need[t % need.shape[0]] = busy_need
    keep = float(n_prov)
    for k in range(need.shape[0]):
        keep = max(keep, need[k])
    st[READY_INST] = max(min(st[READY_INST], keep), float(n_prov))
    ready = st[READY_INST] if enabled else float(n_prov)
    take = min(rest, max(0.0, ready * c - st[BUSY_S]))
    st[BUSY_S] += take
    tallies[SERVED_S] += take
    _record(hist, bw, 0.0, take)
    rest -= take
    if not enabled:
        return rest
    for d in range(1, n_pend):
        if rest <= 0.0:
            break
        k = (t + d) % n_pend
        join = min(rest, max(0.0, starting[k] * c - pending[k]))
        if join > 0.0:
            _start_serverless(t, join, float(d), k, wait_lim, bw, st, pending, hist, misses, tallies)
            rest -= join
    room = float(quota) - st[READY_INST] - st[STARTING_INST]
    if rest > 0.0 and room >= 1.0:
        new = min(float(math.ceil(rest / c - 1e-9)), math.floor(room))
        k = (t + cold_steps) % n_pend
        starting[k] += new
        st[STARTING_INST] += new
        placed = min(rest, new * c)
        _start_serverless(t, placed, float(cold_steps), k, wait_lim, bw, st, pending, hist, misses, tallies)
        rest -= placed
    return rest


@njit(cache=True)
def _start_serverless(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    t: int,
    amount: float,
    wait: float,
    k: int,
    wait_lim: float,
    bw: float,
    st: FloatArray,
    pending: FloatArray,
    hist: FloatArray,
    misses: FloatArray,
    tallies: FloatArray,
) -> None:
    """Reserve ``amount`` slots on instances ready in ring slot ``k`` for arrivals of second ``t``."""
    pending[k] += amount
    st[RESERVED] += amount
    tallies[SERVED_S] += amount
    _record(hist, bw, wait, amount)
    if wait > wait_lim:
        misses[t] += amount
