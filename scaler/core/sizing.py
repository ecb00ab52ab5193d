"""Demand distributions over a time window: the quantile of a mixture of per-bucket forecasts.

Each forecast bucket gives the request rate at a few quantile levels. Its CDF is taken as linear
between levels, with the tails clamped: no mass below the lowest quantile value, none above the
highest (so a level above the top one maps to the top value). Over a window of buckets, demand is
the *mixture* of the buckets' distributions, weighted by how much of each bucket the window covers:
``G(x) = sum_h w_h F_h(x)``. Because instances_needed is monotone, the q-quantile of the instance
need over the window is instances_needed(G^-1(q)).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from scaler.core.types import DemandForecast, FloatArray


@njit(cache=True)
def _cdf(x: float, values: FloatArray, levels: FloatArray) -> float:  # pragma: no cover - compiled
    """Return P(rate <= x) for one bucket's quantile ``values`` at ``levels`` (right-continuous)."""
    k = values.shape[0]
    if x < values[0]:
        return 0.0
    if x >= values[k - 1]:
        return 1.0
    for i in range(k - 1):
        if x < values[i + 1]:
            lo, hi = values[i], values[i + 1]
            share: float = (x - lo) / (hi - lo)
            return float(levels[i] + (levels[i + 1] - levels[i]) * share)
    return 1.0


@njit(cache=True)
def _mixture_quantile(
    quantiles: FloatArray, levels: FloatArray, weights: FloatArray, q: float
) -> float:  # pragma: no cover - compiled
    """Return the smallest rate x with sum_h weights[h] * F_h(x) >= q (weights sum to 1)."""
    n_levels, n_buckets = quantiles.shape
    lo = np.inf
    hi = 0.0
    for h in range(n_buckets):
        if weights[h] > 0.0:
            lo = min(lo, quantiles[0, h])
            hi = max(hi, quantiles[n_levels - 1, h])
    if not hi > lo:
        return hi
    column = np.empty(n_levels)
    for _ in range(100):
        if hi - lo <= 1e-9 * max(hi, 1e-12):
            break
        mid = 0.5 * (lo + hi)
        total = 0.0
        for h in range(n_buckets):
            if weights[h] > 0.0:
                for k in range(n_levels):
                    column[k] = quantiles[k, h]
                total += weights[h] * _cdf(mid, column, levels)
        if total >= q:
            hi = mid
        else:
            lo = mid
    return hi


@njit(cache=True)
def _mixture_capped_mean(
    quantiles: FloatArray, levels: FloatArray, weights: FloatArray, cap: float
) -> float:  # pragma: no cover - compiled
    """Return E[min(rate, cap)] under the weighted mixture (exact for the piecewise-linear quantiles)."""
    n_levels, n_buckets = quantiles.shape
    total = 0.0
    for h in range(n_buckets):
        if weights[h] <= 0.0:
            continue
        # Tails: the lowest value below the first level, the highest above the last one.
        acc = levels[0] * min(quantiles[0, h], cap)
        acc += (1.0 - levels[n_levels - 1]) * min(quantiles[n_levels - 1, h], cap)
        for k in range(n_levels - 1):
            width = levels[k + 1] - levels[k]
            v0, v1 = quantiles[k, h], quantiles[k + 1, h]
            if v1 <= cap:
                acc += width * 0.5 * (v0 + v1)
            elif v0 >= cap:
                acc += width * cap
            else:
                f = (cap - v0) / (v1 - v0)
                acc += width * (f * 0.5 * (v0 + cap) + (1.0 - f) * cap)
        total += weights[h] * acc
    return total


def window_weights(forecast: DemandForecast, *, t0: float, t1: float) -> FloatArray:
    """Return per-bucket weights (summing to 1) of the window ``[t0, t1)`` over the forecast's buckets.

    The window is clipped to the horizon; a window wholly outside it falls on the nearest bucket.
    Raises ValueError for an empty forecast.
    """
    n = forecast.rate_mean.shape[0]
    if n == 0:
        raise ValueError("the forecast has no buckets")
    b = forecast.bucket_seconds
    edges = forecast.start + b * np.arange(n + 1, dtype=np.float64)
    overlap = np.clip(np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0), 0.0, None)
    total = float(overlap.sum())
    if total <= 0.0:
        weights = np.zeros(n)
        mid = 0.5 * (t0 + t1)
        weights[min(max(math.floor((mid - forecast.start) / b), 0), n - 1)] = 1.0
        return weights
    weights_out: FloatArray = overlap / total
    return weights_out


def rate_quantile(forecast: DemandForecast, *, weights: FloatArray, q: float) -> float:
    """Return the ``q`` quantile of the request rate over the buckets weighted by ``weights``."""
    quantiles = np.ascontiguousarray(forecast.rate_quantiles, dtype=np.float64)
    levels = np.ascontiguousarray(forecast.levels, dtype=np.float64)
    return float(_mixture_quantile(quantiles, levels, weights, q))


def capped_mean_rate(forecast: DemandForecast, *, weights: FloatArray, cap: float) -> float:
    """Return E[min(rate, cap)] over the weighted buckets' distributions (as the module defines them)."""
    quantiles = np.ascontiguousarray(forecast.rate_quantiles, dtype=np.float64)
    levels = np.ascontiguousarray(forecast.levels, dtype=np.float64)
    return float(_mixture_capped_mean(quantiles, levels, weights, cap))


def mean_rate(forecast: DemandForecast, *, weights: FloatArray) -> float:
    """Return the forecast mean request rate over the weighted buckets."""
    return float(np.dot(forecast.rate_mean, weights))


def replicas_worth_paying(forecast: DemandForecast, *, weights: FloatArray, work: float, ratio: float) -> int:
    """Return the most replicas whose last one is expected busy at least ``ratio`` of the time.

    Demand in instance units is ``a = rate * work``; the n-th replica is busy
    ``E[clip(a - (n - 1), 0, 1)] = work * (E[min(rate, n/work)] - E[min(rate, (n-1)/work)])`` of the
    time over the weighted buckets, which falls as n grows. It pays off (newsvendor) while that share
    is at least ``ratio = c_k / c_s``. Raises ValueError for a non-positive ``work``.
    """
    if work <= 0.0:
        raise ValueError(f"work per request must be > 0 seconds, got {work}")
    quantiles = np.ascontiguousarray(forecast.rate_quantiles, dtype=np.float64)
    levels = np.ascontiguousarray(forecast.levels, dtype=np.float64)
    top = float(np.max(quantiles[-1, weights > 0.0], initial=0.0))
    upper = math.ceil(top * work)
    if ratio <= 0.0:
        return upper

    def busy(n: int) -> float:
        high = _mixture_capped_mean(quantiles, levels, weights, n / work)
        low = _mixture_capped_mean(quantiles, levels, weights, (n - 1) / work)
        return float(work * (high - low))

    lo, hi = 0, upper + 1  # busy(lo) >= ratio by convention for lo = 0; busy(hi) = 0 < ratio
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if busy(mid) >= ratio:
            lo = mid
        else:
            hi = mid
    return lo


def overflow_share(forecast: DemandForecast, *, weights: FloatArray, capacity_rate: float) -> float:
    """Return the expected share of requests above ``capacity_rate``: E[(rate - c)+] / E[rate]."""
    quantiles = np.ascontiguousarray(forecast.rate_quantiles, dtype=np.float64)
    levels = np.ascontiguousarray(forecast.levels, dtype=np.float64)
    total = float(_mixture_capped_mean(quantiles, levels, weights, np.inf))
    if total <= 0.0:
        return 0.0
    served = float(_mixture_capped_mean(quantiles, levels, weights, capacity_rate))
    return max(total - served, 0.0) / total
