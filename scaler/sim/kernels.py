"""numba kernels of the per-request cluster model: slot heaps, the FIFO router, serverless instances.

Everything works in place on preallocated numpy arrays owned by :class:`scaler.sim.cluster.RequestCluster`,
so the Python layer can change the capacity between calls (at controller ticks) without copying.

* Replica slots: slot ``id`` belongs to replica ``id // C``; ``slot_free[id]`` is when its current
  request ends. The router keeps a min-heap (``heap_key``, ``heap_id``, size ``hn[0]``) over the slots of
  the *serving* replicas, keyed by when the slot can next start a request (``max(free, ready_at)``).
* Serverless: instance ``i`` has ``C`` slots kept as a min-heap of end times in ``sv_heap[i]``;
  ``sv_on[i]`` says it exists (starting or warm), ``sv_ready[i]`` when it serves, ``sv_last_end[i]``
  when its last request ends (keep-alive runs from there), ``sv_since[i]`` when it was started.
  Instances ``i < n_prov`` are provisioned and never expire. Closed lifetimes go to ``life[k] = (start,
  end)`` with ``counters[0]`` records.
* Outcome per request: ``out_start`` (when its slot starts, or when it was dropped) and ``out_kind``.
"""

from __future__ import annotations

import math

from numba import njit

from scaler.sim.results import FloatArray
from scaler.sim.workload import IntArray

PENDING, KUBERNETES, SERVERLESS, DROPPED = -1, 0, 1, 2


@njit(cache=True)
def sift_down(key: FloatArray, ids: IntArray, n: int, i: int) -> None:
    """Restore the min-heap property of ``key[:n]`` (``ids`` move alike) below ``i``; returns nothing."""
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        m = left
        if left + 1 < n and key[left + 1] < key[left]:
            m = left + 1
        if key[m] >= key[i]:
            return
        key[i], key[m] = key[m], key[i]
        ids[i], ids[m] = ids[m], ids[i]
        i = m


@njit(cache=True)
def _sift_keys(key: FloatArray, i: int) -> None:
    """Restore the min-heap property of a key-only heap (one serverless instance's slots)."""
    n = key.shape[0]
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        m = left
        if left + 1 < n and key[left + 1] < key[left]:
            m = left + 1
        if key[m] >= key[i]:
            return
        key[i], key[m] = key[m], key[i]
        i = m


@njit(cache=True)
def build_heap(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    heap_key: FloatArray, heap_id: IntArray, rids: IntArray, ready: FloatArray, slot_free: FloatArray, c: int
) -> int:
    """Heap up with every slot of replicas ``rids`` (ready at ``ready``); return its size."""
    n = 0
    for k in range(rids.shape[0]):
        base = rids[k] * c
        for j in range(c):
            heap_key[n] = max(slot_free[base + j], ready[k])
            heap_id[n] = base + j
            n += 1
    for i in range(n // 2 - 1, -1, -1):
        sift_down(heap_key, heap_id, n, i)
    return n


@njit(cache=True)
def add_busy(diff: FloatArray, corr: FloatArray, s: float, e: float) -> None:
    """Add one busy interval ``[s, e)`` to per-second busy-time accumulators; returns nothing.

    The busy time in second ``b`` is ``cumsum(diff)[b] + corr[b]``; the last bin collects everything
    past the end of the arrays.
    """
    last = diff.shape[0] - 1
    s = min(max(s, 0.0), float(last))
    e = min(max(e, 0.0), float(last))
    i_s = int(s)
    i_e = int(e)
    diff[i_s] += 1.0
    diff[i_e] -= 1.0
    corr[i_s] -= s - i_s
    corr[i_e] += e - i_e


@njit(cache=True)
def expire(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    i: int,
    now: float,
    n_prov: int,
    keepalive: float,
    sv_on: IntArray,
    sv_last_end: FloatArray,
    sv_since: FloatArray,
    life: FloatArray,
    counters: IntArray,
) -> bool:
    """Switch instance ``i`` off if its keep-alive ran out before ``now``; return whether it is off."""
    if sv_on[i] == 0:
        return True
    if i < n_prov or sv_last_end[i] + keepalive >= now:
        return False
    k = counters[0]
    if k < life.shape[0]:  # the owner keeps room; never write past the end regardless
        life[k, 0] = sv_since[i]
        life[k, 1] = sv_last_end[i] + keepalive
        counters[0] = k + 1
    sv_on[i] = 0
    return True


@njit(cache=True)
def expire_all(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    now: float,
    n_prov: int,
    keepalive: float,
    sv_on: IntArray,
    sv_last_end: FloatArray,
    sv_since: FloatArray,
    life: FloatArray,
    counters: IntArray,
) -> None:
    """Switch off every on-demand instance whose keep-alive ran out before ``now``; returns nothing."""
    for i in range(sv_on.shape[0]):
        expire(i, now, n_prov, keepalive, sv_on, sv_last_end, sv_since, life, counters)


@njit(cache=True)
def route(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    arr: FloatArray,
    hold: FloatArray,
    t_end: float,
    i: int,
    heap_key: FloatArray,
    heap_id: IntArray,
    hn: IntArray,
    slot_free: FloatArray,
    queue: IntArray,
    qs: IntArray,
    sv_heap: FloatArray,
    sv_on: IntArray,
    sv_ready: FloatArray,
    sv_last_end: FloatArray,
    sv_since: FloatArray,
    life: FloatArray,
    counters: IntArray,
    sv_limit: int,
    sv_cold_ok: bool,
    n_prov: int,
    out_start: FloatArray,
    out_kind: IntArray,
    busy_diff: FloatArray,
    busy_corr: FloatArray,
    give_up: float,
    keepalive: float,
    cold: float,
    tokens: FloatArray,
    tpm_used: FloatArray,
    tpm: float,
) -> int:
    """Route requests and serve the replica queue up to (not including) ``t_end``; return the next request.

    ``i`` is the first request not yet routed. Events are taken in time order, the queue head before an
    arrival at the same instant (FIFO). Serverless instances ``< sv_limit`` may take traffic and new
    ones may start only if ``sv_cold_ok``. With ``tpm > 0`` serverless is a per-token backend instead:
    a request is served on arrival (if ``sv_cold_ok``) while the tokens of its minute, ``tpm_used[m]``
    with ``m = arrival // 60``, plus its ``tokens`` stay within ``tpm``; beyond that it is throttled and
    joins the replica queue.
    """
    n = arr.shape[0]
    while True:
        qe = math.inf
        s = math.inf
        give_up_at = math.inf
        if qs[0] < qs[1]:
            j = queue[qs[0]]
            if hn[0] > 0:
                s = max(heap_key[0], arr[j])
            give_up_at = arr[j] + give_up
            qe = min(s, give_up_at)
        ae = arr[i] if i < n else math.inf
        if qe <= ae and qe < t_end:
            j = queue[qs[0]]
            qs[0] += 1
            if s <= give_up_at:
                _serve_replica(
                    j, s, hold, heap_key, heap_id, hn, slot_free, out_start, out_kind, busy_diff, busy_corr
                )
            else:
                out_start[j] = give_up_at
                out_kind[j] = DROPPED
            continue
        if ae >= t_end:
            return i
        j = i
        i += 1
        if qs[0] == qs[1] and hn[0] > 0 and heap_key[0] <= ae:
            _serve_replica(
                j, ae, hold, heap_key, heap_id, hn, slot_free, out_start, out_kind, busy_diff, busy_corr
            )
            continue
        if tpm > 0.0:
            m = min(int(ae // 60.0), tpm_used.shape[0] - 1)
            if sv_cold_ok and tpm_used[m] + tokens[j] <= tpm:
                tpm_used[m] += tokens[j]
                out_start[j] = ae
                out_kind[j] = SERVERLESS
                continue
        elif sv_limit > 0 and _serve_serverless(
            j,
            ae,
            hold,
            sv_heap,
            sv_on,
            sv_ready,
            sv_last_end,
            sv_since,
            life,
            counters,
            sv_limit,
            sv_cold_ok,
            n_prov,
            out_start,
            out_kind,
            keepalive,
            cold,
        ):
            continue
        queue[qs[1]] = j
        qs[1] += 1


@njit(cache=True)
def _serve_replica(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    j: int,
    s: float,
    hold: FloatArray,
    heap_key: FloatArray,
    heap_id: IntArray,
    hn: IntArray,
    slot_free: FloatArray,
    out_start: FloatArray,
    out_kind: IntArray,
    busy_diff: FloatArray,
    busy_corr: FloatArray,
) -> None:
    """Start request ``j`` at ``s`` on the replica slot at the top of the heap; returns nothing."""
    end = s + hold[j]
    slot_free[heap_id[0]] = end
    heap_key[0] = end
    sift_down(heap_key, heap_id, hn[0], 0)
    out_start[j] = s
    out_kind[j] = KUBERNETES
    add_busy(busy_diff, busy_corr, s, end)


@njit(cache=True)
def _serve_serverless(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    j: int,
    a: float,
    hold: FloatArray,
    sv_heap: FloatArray,
    sv_on: IntArray,
    sv_ready: FloatArray,
    sv_last_end: FloatArray,
    sv_since: FloatArray,
    life: FloatArray,
    counters: IntArray,
    sv_limit: int,
    sv_cold_ok: bool,
    n_prov: int,
    out_start: FloatArray,
    out_kind: IntArray,
    keepalive: float,
    cold: float,
) -> bool:
    """Serve request ``j`` arriving at ``a`` on serverless if a slot or the quota allows; return if it did.

    Preference: a free slot on a warm instance (lowest index first, so provisioned ones), then a free
    slot on an instance still starting (the request waits for the rest of its cold start), then a new
    instance (waits a full cold start).
    """
    best = -1
    best_start = math.inf
    first_off = -1
    for k in range(sv_limit):
        if expire(k, a, n_prov, keepalive, sv_on, sv_last_end, sv_since, life, counters):
            if first_off < 0:
                first_off = k
            continue
        ready = sv_ready[k]
        top = sv_heap[k, 0]
        if ready <= a:
            if top <= a:
                best = k
                best_start = a
                break
        elif top <= ready < best_start:
            best = k
            best_start = ready
    if best < 0:
        if not sv_cold_ok or first_off < 0:
            return False
        best = first_off
        best_start = a + cold
        sv_on[best] = 1
        sv_ready[best] = best_start
        sv_heap[best, :] = best_start
        sv_last_end[best] = best_start
        sv_since[best] = a
    end = best_start + hold[j]
    row = sv_heap[best]
    row[0] = end
    _sift_keys(row, 0)
    sv_last_end[best] = max(sv_last_end[best], end)
    out_start[j] = best_start
    out_kind[j] = SERVERLESS
    return True
