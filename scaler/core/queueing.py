"""Queueing model: how many requests/s a number of instances sustains within the latency SLO.

Capacity model (shared with the simulator): one instance has ``C = replica.max_concurrency`` slots,
prefill throughput ``Tp`` and decode throughput ``Td`` tokens/s. A request of P prompt and O output
tokens costs ``s = P/Tp + O/Td`` instance-seconds of work and holds one slot for ``S = C*s`` seconds,
so ``n`` instances are ``c = n*C`` servers and a rate ``λ`` offers ``A = λ*S`` erlangs.

Waiting is modelled as M/M/c (Erlang C). Real service times are not exponential (M/G/c); Erlang C
is the usual approximation for it and is exact for the probability of waiting when service is
exponential: ``P(wait > t) = C(c, A) * exp(-(c - A) * t / S)``.

Erlang C is computed from the Erlang B recursion ``B(k) = A B(k-1) / (k + A B(k-1))`` in floats,
which is stable for any ``c``; for large loads the recursion starts ~12 standard deviations below
``A`` (errors there shrink geometrically), so one evaluation costs O(sqrt(A) + c - A), not O(c).
"""

from __future__ import annotations

import functools
import math
from typing import overload

import numpy as np
import numpy.typing as npt
from numba import njit

from scaler.core.policy import ModelPolicy
from scaler.core.types import FloatArray

IntArray = npt.NDArray[np.int64]


@njit(cache=True)
def _erlang_c(c: float, a: float) -> float:  # pragma: no cover - compiled
    """Return the Erlang C probability of waiting for ``c`` servers and ``a`` erlangs."""
    if a <= 0.0:
        return 0.0
    if a >= c:
        return 1.0
    n = int(c)
    k0 = 0
    b = 1.0
    if a > 100.0:
        k0 = int(a - 12.0 * math.sqrt(a))
        k0 = max(k0, 0)
        k0 = min(k0, n)
        b = 1.0 - k0 / a  # fluid approximation of B(k0); the recursion forgets its error
    for k in range(k0 + 1, n + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


@njit(cache=True)
def _max_load(c: float, eps: float, w: float, lo: float, guess: float) -> float:  # pragma: no cover
    """Return the largest load A (erlangs) on ``c`` servers with C(c, A) exp(-(c-A) w) <= eps.

    ``w`` is the wait budget in units of the slot holding time; ``lo`` is a load known to pass and
    ``guess`` a likely better lower bracket (used if it passes). Precision: 1e-7 of ``c``.
    """
    if c <= 0.0:
        return 0.0
    hi = c
    lo = max(lo, 0.0)
    if lo < guess < hi and _erlang_c(c, guess) * math.exp(-(c - guess) * w) <= eps:
        lo = guess
    while hi - lo > 1e-7 * c:
        mid = 0.5 * (lo + hi)
        if _erlang_c(c, mid) * math.exp(-(c - mid) * w) <= eps:
            lo = mid
        else:
            hi = mid
    return lo


def wait_probability(c: int, offered_load: float) -> float:
    """Return P(wait > 0) (Erlang C) for ``c`` servers and ``offered_load`` erlangs; 1 when saturated.

    Raises ValueError for a negative server count or load.
    """
    if c < 0 or offered_load < 0 or not math.isfinite(offered_load):
        raise ValueError(f"need c >= 0 and a finite offered_load >= 0, got c={c}, load={offered_load}")
    if c == 0:
        return 1.0 if offered_load > 0 else 0.0
    return float(_erlang_c(float(c), float(offered_load)))


def prob_wait_exceeds(c: int, offered_load: float, service_time: float, t: float) -> float:
    """Return P(queue wait > t) for M/M/c with ``service_time`` per request (1 when saturated).

    Raises ValueError for negative inputs or a non-positive service time.
    """
    if service_time <= 0 or t < 0:
        raise ValueError(f"need service_time > 0 and t >= 0, got service_time={service_time}, t={t}")
    p = wait_probability(c, offered_load)
    if offered_load >= c:
        return p
    return p * math.exp(-(c - offered_load) * t / service_time)


@overload
def request_work(policy: ModelPolicy, prompt: FloatArray, output: FloatArray) -> FloatArray: ...
@overload
def request_work(policy: ModelPolicy, prompt: float, output: float) -> float: ...
def request_work(
    policy: ModelPolicy, prompt: FloatArray | float, output: FloatArray | float
) -> FloatArray | float:
    """Return ``P/Tp + O/Td`` per request: instance-seconds of work of requests of these token counts.

    The simulator's slot time is ``C`` times it. Arrays give an array; one request's counts as
    floats give a float (the daemon's ledger, per event).
    """
    replica = policy.replica
    work = _work(
        prompt, output, prefill=replica.prefill_tokens_per_second, decode=replica.decode_tokens_per_second
    )
    return work if isinstance(work, float) else np.asarray(work, dtype=np.float64)


def _work(
    prompt: FloatArray | float, output: FloatArray | float, *, prefill: float, decode: float
) -> FloatArray | float:
    """Return ``P/Tp + O/Td`` at prefill ``Tp`` and decode ``Td`` tokens/s: the one place it is written."""
    return prompt / prefill + output / decode


def work_seconds(policy: ModelPolicy, *, mean_prompt: float, mean_output: float) -> float:
    """Return ``s = P/Tp + O/Td``: instance-seconds of work per request (token counts floored at 1)."""
    prompt, output = np.array([max(mean_prompt, 1.0)]), np.array([max(mean_output, 1.0)])
    return float(request_work(policy, prompt, output)[0])


def wait_budget(policy: ModelPolicy, *, mean_prompt: float) -> float:
    """Return W = min(queue_wait target, ttft target - P/Tp), floored at 0 (wait must then be 0)."""
    prefill = max(mean_prompt, 1.0) / policy.replica.prefill_tokens_per_second
    return _budget(ttft=policy.slo.ttft_seconds, queue_wait=policy.slo.queue_wait_seconds, prefill=prefill)


def _budget(*, ttft: float | None, queue_wait: float | None, prefill: float) -> float:
    budgets = [] if queue_wait is None else [queue_wait]
    if ttft is not None:
        budgets.append(ttft - prefill)
    return max(min(budgets), 0.0)


class SizingTable:
    """``max_rate(n)`` for n = 0..N instances under one policy and request size, extended on demand."""

    # Beyond this many instances the table stops and sizing extrapolates at the last entry's
    # utilisation: conservative, since utilisation at the SLO only rises with more instances.
    _CAP = 2048

    def __init__(self, *, slots: int, work: float, wait: float, eps: float, initial: int) -> None:
        """Build the table: ``slots`` per instance, ``work`` s/request, wait budget, tail ``eps``."""
        self.slots = slots
        self.work = work
        self._w = wait / (slots * work)
        self._eps = eps
        self.rates: FloatArray = np.zeros(1)
        self._grow(max(initial, 1))

    def _grow(self, n_max: int) -> None:
        old = self.rates.shape[0] - 1
        n_max = min(n_max, self._CAP)
        if n_max <= old:
            return
        loads = np.empty(n_max - old)
        lo = self.rates[-1] * self.slots * self.work
        for i, n in enumerate(range(old + 1, n_max + 1)):
            guess = lo * n / (n - 1) if n > 1 else 0.0  # same utilisation as n - 1 instances
            lo = float(_max_load(float(n * self.slots), self._eps, self._w, lo, guess))
            loads[i] = lo
        self.rates = np.maximum.accumulate(np.concatenate([self.rates, loads / (self.slots * self.work)]))

    def max_rate(self, n: int) -> float:
        """Return the largest request rate ``n`` instances sustain within the SLO."""
        if n <= 0:
            return 0.0
        if n >= self.rates.shape[0]:
            self._grow(max(n, 2 * (self.rates.shape[0] - 1)))
        if n < self.rates.shape[0]:
            return float(self.rates[n])
        return float(n * self.rates[-1] / (self.rates.shape[0] - 1))

    def instances(self, rates: FloatArray) -> IntArray:
        """Return the smallest n with max_rate(n) >= rate, element-wise (0 for rates <= 0)."""
        top = float(np.max(rates)) if rates.size else 0.0
        while top > self.rates[-1] and self.rates.shape[0] - 1 < self._CAP:
            self._grow(2 * (self.rates.shape[0] - 1))
        idx = np.searchsorted(self.rates, rates, side="left")
        last = self.rates.shape[0] - 1
        over = idx > last
        if np.any(over):
            per_instance = self.rates[-1] / last
            idx = np.where(over, np.ceil(rates / per_instance), idx)
        return np.asarray(idx, dtype=np.int64)


def _grid(tokens: float) -> float:
    """Return ``tokens`` rounded UP to a 2% logarithmic grid (conservative, keeps the cache small)."""
    t = max(tokens, 1.0)
    step = math.log(1.02)
    return math.exp(math.ceil(math.log(t) / step - 1e-9) * step)


def sizing_table(policy: ModelPolicy, *, mean_prompt: float, mean_output: float) -> SizingTable:
    """Return the (cached) sizing table for ``policy`` and requests of about these token sizes."""
    b = policy.bounds
    r = policy.replica
    return _table(
        slots=r.max_concurrency,
        prefill=r.prefill_tokens_per_second,
        decode=r.decode_tokens_per_second,
        ttft=policy.slo.ttft_seconds,
        queue_wait=policy.slo.queue_wait_seconds,
        attainment=policy.slo.attainment,
        prompt=_grid(mean_prompt),
        output=_grid(mean_output),
        initial=b.max_replicas + b.serverless_quota + b.max_standby,
    )


@functools.lru_cache(maxsize=512)
def _table(
    *,
    slots: int,
    prefill: float,
    decode: float,
    ttft: float | None,
    queue_wait: float | None,
    attainment: float,
    prompt: float,
    output: float,
    initial: int,
) -> SizingTable:
    work = float(_work(prompt, output, prefill=prefill, decode=decode))
    wait = _budget(ttft=ttft, queue_wait=queue_wait, prefill=prompt / prefill)
    return SizingTable(slots=slots, work=work, wait=wait, eps=1.0 - attainment, initial=min(initial, 512))


def max_rate(n_instances: int, *, policy: ModelPolicy, mean_prompt: float, mean_output: float) -> float:
    """Return the largest request rate ``n_instances`` sustain with P(queue wait > W) <= 1 - attainment.

    Token sizes are rounded up to a 2% grid (so the answer errs on the safe side).
    """
    table = sizing_table(policy, mean_prompt=mean_prompt, mean_output=mean_output)
    return table.max_rate(n_instances)


def instances_needed(rate: float, *, policy: ModelPolicy, mean_prompt: float, mean_output: float) -> int:
    """Return the smallest n with max_rate(n) >= ``rate`` (0 for a rate of 0).

    Raises ValueError for a negative or non-finite rate.
    """
    if rate < 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be finite and >= 0, got {rate}")
    table = sizing_table(policy, mean_prompt=mean_prompt, mean_output=mean_output)
    return int(table.instances(np.array([rate]))[0])
