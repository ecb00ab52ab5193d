"""numba kernels: additive Holt-Winters with damped trend and up to two seasons (Taylor-style).

Everything here works in place on plain numpy arrays, so the Python layer keeps its buffers and
calls the kernels without allocating; the kernels release the GIL, so a daemon may refit in a
worker thread. One series is described by:

* ``params`` = ``(alpha, beta, gamma, phi)``, optionally followed by the form flag ``seasonal`` (1 when
  the seasons count, 0 for the damped-trend level model; absent = 1). The update is written in
  error-correction form::

      pred = level + phi * trend + s1[t % m1] + s2[t % m2]
      e = y - pred
      level = level + phi * trend + alpha * e
      trend = phi * trend + alpha * beta * e
      s1[t % m1] += gamma * (1 - alpha) * e          (and the same for s2)

  so ``beta`` and ``gamma`` are the classical Holt-Winters smoothing constants of trend and season.
* ``st`` (length :data:`N_STATE`): level, trend, step index ``t`` since the origin, observed count,
  residual count, residual write position, and the "season ready" flags.
* ``seas`` (length ``m1 + m2``): the two seasonal vectors back to back. During the first cycle of a
  season the vector stores the raw observations; at the end of the cycle they are turned into
  deviations from the cycle mean (classical decomposition). Until then the season contributes 0,
  which is how series shorter than a season fall back to a damped-trend level model.
* ``res`` (any length, may be empty): ring of recent scaled one-step residuals for the quantiles; it
  restarts when a season becomes ready, since errors of the simpler model would overstate the spread.
  Only the request series' quantiles are forecast, so a forecaster keeps that series' ring alone.

With ``seasonal = 0`` the seasons neither count nor learn (a first cycle is still collected, so the
form can switch back): on traces whose day-to-day level shifts dwarf the daily shape, one or two
noisy cycles of profile add more error over the horizon than they remove (:func:`fit`).

A missing bucket is ``NaN``: the state advances (level += phi * trend, trend *= phi) with no error
correction. ``m = 0`` switches a season off.

``seas`` and ``res`` may be float32 (the forecaster stores them so, to halve its memory): every
kernel reads them into float64 locals, computes in float64 and rounds only the values it stores.
``ys``, ``params`` and ``st`` are float64.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from scaler.core.types import FloatArray

Float32Array = npt.NDArray[np.float32]
Stored = FloatArray | Float32Array  # seasonal profiles and residual rings: float32 in a forecaster

N_STATE = 8
LEVEL, TREND, STEP, N_OBS, RES_COUNT, RES_POS, READY1, READY2 = range(N_STATE)

# Search box of the fit: (low, high) per parameter, in the order alpha, beta, gamma, phi.
LOWER = np.array([0.01, 0.0, 0.0, 0.80])
UPPER = np.array([0.99, 0.5, 0.95, 0.995])
DEFAULT_PARAMS = np.array([0.3, 0.0, 0.1, 0.9])  # used until a fit has data (and on ties)
SEASON_WEIGHTS = np.array([0.0])  # forms tried against the full seasons (weight 1); 0.5 did worse on ServeGen
_MIN_EMPIRICAL = 8  # residuals needed before quantiles come from them rather than a normal fallback
_MIN_TAIL = 5.0  # residuals needed beyond a level for its empirical quantile; further out, a normal tail


@njit(cache=True, nogil=True)
def reset_state(st: FloatArray, seas: Stored) -> None:
    """Zero one series' state (``st`` and ``seas`` rows) in place; returns nothing."""
    st[:] = 0.0
    seas[:] = 0.0


@njit(cache=True, nogil=True)
def _fill_circular(v: Stored) -> None:
    """Replace NaNs in the cyclic vector ``v`` by interpolating between observed neighbours (0 if none)."""
    m = v.shape[0]
    first = -1
    for j in range(m):
        if not math.isnan(v[j]):
            first = j
            break
    if first < 0:
        v[:] = 0.0
        return
    prev = first
    for off in range(1, m + 1):
        j = (first + off) % m
        if math.isnan(v[j]):
            continue
        gap = (j - prev) % m if j != prev else m
        for g in range(1, gap):
            v[(prev + g) % m] = v[prev] + (v[j] - v[prev]) * g / gap
        prev = j


@njit(cache=True, nogil=True)
def _init_first_season(seas: Stored, m1: int) -> float:
    """Turn the raw first cycle ``seas[:m1]`` into deviations; return its mean (NaN when all missing)."""
    total = 0.0
    n = 0
    for j in range(m1):
        v = seas[j]
        if not math.isnan(v):
            total += v
            n += 1
    if n == 0:
        seas[:m1] = 0.0
        return math.nan
    mean = total / n
    for j in range(m1):
        seas[j] -= mean
    _fill_circular(seas[:m1])
    return mean


@njit(cache=True, nogil=True)
def _init_second_season(seas: Stored, m1: int, m2: int) -> None:
    """Split the raw first long cycle ``seas[m1:m1+m2]`` into a short profile and long deviations."""
    total = 0.0
    n = 0
    for j in range(m2):
        v = seas[m1 + j]
        if not math.isnan(v):
            total += v
            n += 1
    if n == 0:
        seas[m1:] = 0.0
        return
    mean = total / n
    if m1 > 0:
        prof = np.zeros(m1)
        cnt = np.zeros(m1)
        for j in range(m2):
            v = seas[m1 + j]
            if not math.isnan(v):
                prof[j % m1] += v - mean
                cnt[j % m1] += 1.0
        for p in range(m1):
            if cnt[p] > 0.0:
                seas[p] = prof[p] / cnt[p]
    for j in range(m2):
        seas[m1 + j] -= mean + (seas[j % m1] if m1 > 0 else 0.0)
    _fill_circular(seas[m1:])


@njit(cache=True, nogil=True)
def step(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    y: float,
    alpha: float,
    beta: float,
    gamma: float,
    phi: float,
    m1: int,
    m2: int,
    st: FloatArray,
    seas: Stored,
    res: Stored,
    seasonal: float = 1.0,
) -> float:
    """Advance one series by one bucket with observation ``y`` (NaN = missing).

    ``seasonal`` (0-1) weighs the seasons in the prediction; at 0 they neither count nor take
    corrections. Returns the one-step error ``y - prediction``, or NaN when ``y`` is missing or is the first
    observation (which only initialises the level). The error divided by
    ``sqrt(max(|prediction|, 1))`` is pushed into ``res`` (count noise grows with the level).
    """
    t = int(st[STEP])
    level = st[LEVEL]
    trend = st[TREND]
    on1 = seasonal > 0.0 and st[READY1] > 0.0
    on2 = seasonal > 0.0 and st[READY2] > 0.0
    season = 0.0
    if on1:
        season += seas[t % m1]
    if on2:
        season += seas[m1 + t % m2]
    season *= min(seasonal, 1.0)
    err = math.nan
    if math.isnan(y):
        st[LEVEL] = level + phi * trend
        st[TREND] = phi * trend
    elif st[N_OBS] == 0.0:
        st[LEVEL] = y - season
        st[TREND] = 0.0
        st[N_OBS] = 1.0
    else:
        pred = level + phi * trend + season
        err = y - pred
        st[LEVEL] = level + phi * trend + alpha * err
        st[TREND] = phi * trend + alpha * beta * err
        corr = gamma * (1.0 - alpha) * err
        if on1:
            seas[t % m1] += corr
        if on2:
            seas[m1 + t % m2] += corr
        st[N_OBS] += 1.0
        r = res.shape[0]
        if r > 0:
            pos = int(st[RES_POS])
            res[pos] = err / math.sqrt(max(abs(pred), 1.0))
            st[RES_POS] = (pos + 1) % r
            st[RES_COUNT] = min(st[RES_COUNT] + 1.0, float(r))
    # First cycles: the seasonal vectors hold the raw values until the cycle is complete.
    if m1 > 0 and st[READY1] == 0.0 and t < m1:
        seas[t] = y
    if m2 > 0 and st[READY2] == 0.0 and t < m2:
        seas[m1 + t] = y
    t += 1
    st[STEP] = float(t)
    if m1 > 0 and st[READY1] == 0.0 and t == m1:
        mean = _init_first_season(seas, m1)
        if not math.isnan(mean) and seasonal > 0.0:
            st[LEVEL] = mean
            st[TREND] = 0.0
        st[READY1] = 1.0
        if seasonal > 0.0:  # residuals of the season-less model would overstate the spread
            st[RES_COUNT] = 0.0
            st[RES_POS] = 0.0
    if m2 > 0 and st[READY2] == 0.0 and t == m2:
        _init_second_season(seas, m1, m2)
        st[READY2] = 1.0
        if seasonal > 0.0:
            st[RES_COUNT] = 0.0
            st[RES_POS] = 0.0
    return err


@njit(cache=True, nogil=True)
def _moving_average_profile(y: FloatArray, m: int, seas: Stored, dst: int) -> bool:
    """Write into ``seas[dst:dst+m]`` the centred mean deviation from a one-cycle moving average.

    Classical decomposition: unlike cycle means, the moving average follows a level that changes
    within a cycle. Returns False when no bucket has a full window of data.
    """
    acc = np.zeros(m)
    cnt = np.zeros(m)
    n_all = y.shape[0]
    half = m // 2
    csum = np.zeros(n_all + 1)
    ccnt = np.zeros(n_all + 1)
    for k in range(n_all):
        v = y[k]
        ok = not math.isnan(v)
        csum[k + 1] = csum[k] + (v if ok else 0.0)
        ccnt[k + 1] = ccnt[k] + (1.0 if ok else 0.0)
    for k in range(half, n_all - half):
        v = y[k]
        if math.isnan(v):
            continue
        lo = k - half
        hi = k + half + 1 if m % 2 == 1 else k + half
        c = ccnt[hi] - ccnt[lo]
        if c <= 0.0:
            continue
        acc[k % m] += v - (csum[hi] - csum[lo]) / c
        cnt[k % m] += 1.0
    total = 0.0
    n_ok = 0
    for p in range(m):
        if cnt[p] > 0.0:
            acc[p] /= cnt[p]
            total += acc[p]
            n_ok += 1
    if n_ok == 0:
        return False
    for p in range(m):
        seas[dst + p] = acc[p] - total / n_ok if cnt[p] > 0.0 else math.nan
    _fill_circular(seas[dst : dst + m])
    return True


@njit(cache=True, nogil=True)
def _cycle_profile(y: FloatArray, m: int, seas: Stored, dst: int, m_short: int) -> bool:
    """Write into ``seas[dst:dst+m]`` the mean deviation at each phase of the cycle.

    With two or more cycles of data and no shorter season, deviations are from a moving average
    (:func:`_moving_average_profile`); otherwise from each complete cycle's mean, with the short
    profile ``seas[t % m_short]`` taken out first when ``m_short > 0``. NaN is skipped. Returns
    False when no complete cycle holds data.
    """
    acc = np.zeros(m)
    cnt = np.zeros(m)
    if m_short == 0 and y.shape[0] >= 2 * m and _moving_average_profile(y, m, seas, dst):
        return True
    for c in range(y.shape[0] // m):
        total = 0.0
        k = 0
        for p in range(m):
            v = y[c * m + p]
            if not math.isnan(v):
                total += v
                k += 1
        if k == 0:
            continue
        mean = total / k
        for p in range(m):
            v = y[c * m + p]
            if not math.isnan(v):
                d = v - mean
                if m_short > 0:
                    d -= seas[(c * m + p) % m_short]
                acc[p] += d
                cnt[p] += 1.0
    found = False
    for p in range(m):
        if cnt[p] > 0.0:
            seas[dst + p] = acc[p] / cnt[p]
            found = True
        else:
            seas[dst + p] = math.nan
    _fill_circular(seas[dst : dst + m])
    return found


@njit(cache=True, nogil=True)
def start(y: FloatArray, m1: int, m2: int, st: FloatArray, seas: Stored) -> None:
    """Reset one series' state before a batch run over ``y``, initialising seasons from ``y``.

    Each season with at least one complete cycle in ``y`` starts from its average profile over
    all complete cycles (classical decomposition, as batch Holt-Winters does); a season with no
    complete cycle is left to the online first-cycle initialisation of :func:`step`.
    """
    reset_state(st, seas)
    if m1 > 0 and y.shape[0] >= m1 and _cycle_profile(y, m1, seas, 0, 0):
        st[READY1] = 1.0
        if m2 > 0 and y.shape[0] >= m2 and _cycle_profile(y, m2, seas, m1, m1):
            st[READY2] = 1.0


@njit(cache=True, nogil=True)
def run_fresh(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    ys: FloatArray,
    params: FloatArray,
    m1: int,
    m2: int,
    st: FloatArray,
    seas: Stored,
    res: Stored,
) -> None:
    """Restart every series from :func:`start` on ``ys[i, :]`` and feed it through (in place)."""
    for i in range(ys.shape[0]):
        start(ys[i], m1, m2, st[i], seas[i])
    res[:, :] = 0.0
    run(ys, params, m1, m2, st, seas, res)


@njit(cache=True, nogil=True)
def run(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    ys: FloatArray,
    params: FloatArray,
    m1: int,
    m2: int,
    st: FloatArray,
    seas: Stored,
    res: Stored,
) -> None:
    """Feed ``ys[i, :]`` through series ``i`` (rows of ``params``, ``st``, ``seas``, ``res``) in place.

    ``params`` has 4 columns, or 5 with the form flag (see the module docstring).
    ``res`` (at least one row) may have fewer rows than ``ys``: the series beyond them keep no residuals.
    """
    none = res[0, :0]
    for i in range(ys.shape[0]):
        a, b, g, p = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        on = params[i, 4] if params.shape[1] > 4 else 1.0
        ring = res[i] if i < res.shape[0] else none
        for k in range(ys.shape[1]):
            step(ys[i, k], a, b, g, p, m1, m2, st[i], seas[i], ring, on)


@njit(cache=True, nogil=True)
def sse(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    y: FloatArray,
    x: FloatArray,
    m1: int,
    m2: int,
    warm: int,
    seas0: FloatArray,
    ready0: FloatArray,
    st: FloatArray,
    seas: FloatArray,
) -> float:
    """Return the sum of squared one-step errors of ``y`` under params ``x`` from step ``warm`` on.

    Seasons start from ``seas0`` when ``ready0[0] > 0`` (flags ``ready0`` for short and long), else
    from the profiles of ``y`` (:func:`start`).
    """
    if ready0[0] > 0.0:
        reset_state(st, seas)
        seas[:] = seas0
        st[READY1] = ready0[0]
        st[READY2] = ready0[1]
    else:
        start(y, m1, m2, st, seas)
    none = np.empty(0)
    total = 0.0
    for k in range(y.shape[0]):
        e = step(y[k], x[0], x[1], x[2], x[3], m1, m2, st, seas, none)
        if k >= warm and not math.isnan(e):
            total += e * e
    return total if math.isfinite(total) else math.inf


@njit(cache=True, nogil=True)
def _fit_one(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    y: FloatArray, m1: int, m2: int, seas0: FloatArray, ready0: FloatArray, out: FloatArray
) -> None:
    """Minimise one-step SSE of ``y`` by a coarse grid then coordinate descent; write params to ``out``."""
    n = y.shape[0]
    valid = 0
    for k in range(n):
        if not math.isnan(y[k]):
            valid += 1
    out[:4] = DEFAULT_PARAMS
    if valid < 4:
        return
    warm = 1
    st = np.zeros(N_STATE)
    seas = np.zeros(m1 + m2)
    x = DEFAULT_PARAMS.copy()
    best = sse(y, x, m1, m2, warm, seas0, ready0, st, seas)
    alphas = np.array([0.05, 0.15, 0.3, 0.5, 0.8])
    betas = np.array([0.0, 0.05, 0.2])
    gammas = np.array([0.05, 0.2, 0.5]) if m1 > 0 else np.array([0.0])
    phis = np.array([0.8, 0.9, 0.98])
    cand = np.empty(4)
    for a in alphas:
        for b in betas:
            for g in gammas:
                for p in phis:
                    cand[0], cand[1], cand[2], cand[3] = a, b, g, p
                    f = sse(y, cand, m1, m2, warm, seas0, ready0, st, seas)
                    if f < best:
                        best = f
                        x[:] = cand
    stepsize = np.array([0.08, 0.05, 0.1, 0.02])
    for _ in range(5):
        for j in range(4):
            if j == 2 and m1 == 0:
                continue
            for sign in (1.0, -1.0):
                cand[:] = x
                cand[j] = min(max(x[j] + sign * stepsize[j], LOWER[j]), UPPER[j])
                if cand[j] == x[j]:
                    continue
                f = sse(y, cand, m1, m2, warm, seas0, ready0, st, seas)
                if f < best:
                    best = f
                    x[:] = cand
                    break
        stepsize *= 0.5
    out[:4] = x


@njit(cache=True, nogil=True)
def horizon_sse(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    y: FloatArray, x: FloatArray, m1: int, m2: int, seasonal: float, horizon: int, warm: int
) -> float:
    """Return the mean squared error of forecasts 1..``horizon`` steps ahead over ``y`` under ``x``.

    The run starts clean (seasons from their first cycle, online, as a cold forecaster learns
    them), and only origins from ``warm`` on count, so a season is judged on cycles it has not
    been initialised from. Returns inf when no origin counts.
    """
    st = np.zeros(N_STATE)
    seas = np.zeros(m1 + m2)
    none = np.empty(0)
    a, b, g, phi = x[0], x[1], x[2], x[3]
    on = seasonal > 0.0
    total = 0.0
    count = 0
    n = y.shape[0]
    for k in range(n):
        if k >= warm and st[N_OBS] > 0.0:
            level, trend, t = st[LEVEL], st[TREND], int(st[STEP])
            damp = 0.0
            pw = 1.0
            for h in range(min(horizon, n - k)):
                pw *= phi
                damp += pw
                target = y[k + h]
                if math.isnan(target):
                    continue
                v = 0.0
                if on and st[READY1] > 0.0:
                    v += seas[(t + h) % m1]
                if on and st[READY2] > 0.0:
                    v += seas[m1 + (t + h) % m2]
                v = level + damp * trend + min(seasonal, 1.0) * v
                e = target - max(v, 0.0)
                total += e * e
                count += 1
        step(y[k], a, b, g, phi, m1, m2, st, seas, none, seasonal)
    if count == 0 or not math.isfinite(total):
        return math.inf
    return total / count


@njit(cache=True, nogil=True)
def _choose_form(y: FloatArray, m1: int, m2: int, horizon: int, out: FloatArray) -> None:
    """Write the form into ``out``: keep the fitted seasonal params ``out[:4]`` with weight 1 in ``out[4]``,
    or switch to a weight from :data:`SEASON_WEIGHTS` (0 = no seasons) with whichever params do better.

    Candidates are the seasonal params and a fit without seasons, judged by their error over
    ``horizon`` steps (:func:`horizon_sse`) on the buckets after the first longest cycle of ``y``.
    The seasons stay unless ``y`` holds a cycle plus ``2 * horizon`` buckets.
    """
    out[4] = 1.0
    longest = max(m1, m2)
    if longest == 0 or y.shape[0] < longest + 2 * horizon:
        return
    flat = np.empty(5)
    _fit_one(y, 0, 0, np.zeros(0), np.zeros(2), flat)
    flat[2] = out[2]  # the seasons' own rate, for the shrunk form
    seasonal = out.copy()
    best = horizon_sse(y, seasonal, m1, m2, 1.0, horizon, longest)
    for weight in SEASON_WEIGHTS:
        for x in (seasonal, flat):
            f = horizon_sse(y, x, m1, m2, weight, horizon, longest)
            if f < best:
                best = f
                out[:4] = x[:4]
                out[4] = weight


@njit(cache=True, nogil=True)
def fit(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    ys: FloatArray,
    m1: int,
    m2: int,
    seas0: FloatArray,
    ready0: FloatArray,
    out: FloatArray,
    horizon: int = 1,
) -> None:
    """Fit each row of ``ys`` (NaN = missing) on its own; write ``(alpha, beta, gamma, phi)`` to ``out``.

    When ``out`` has a fifth column, the form is chosen too (:func:`_choose_form`, judged over
    ``horizon`` steps): 1 keeps the seasons, 0 drops them with params fitted without.

    Row ``i`` starts its seasons from ``seas0[i]`` when ``ready0[i, 0] > 0`` (the seasons a running
    forecaster already holds, aligned to ``ys[i, 0]``), else from the profiles of ``ys[i]``.
    """
    for i in range(ys.shape[0]):
        _fit_one(ys[i], m1, m2, seas0[i], ready0[i], out[i])
        if out.shape[1] > 4:
            _choose_form(ys[i], m1, m2, max(horizon, 1), out[i])


@njit(cache=True, nogil=True)
def forecast_means(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    params: FloatArray, st: FloatArray, seas: Stored, m1: int, m2: int, d0: int, out: FloatArray
) -> None:
    """Write into ``out[i, d]`` the (unclipped) mean of series ``i`` ``d0 + d + 1`` steps ahead."""
    horizon = out.shape[1]
    for i in range(out.shape[0]):
        phi = params[i, 3]
        weight = min(params[i, 4], 1.0) if params.shape[1] > 4 else 1.0
        on = weight > 0.0
        level = st[i, LEVEL]
        trend = st[i, TREND]
        t = int(st[i, STEP])
        damp = 0.0
        pw = 1.0
        for h in range(d0 + horizon):
            pw *= phi
            damp += pw
            if h < d0:
                continue
            v = 0.0
            if on and st[i, READY1] > 0.0:
                v += seas[i, (t + h) % m1]
            if on and st[i, READY2] > 0.0:
                v += seas[i, m1 + (t + h) % m2]
            out[i, h - d0] = level + damp * trend + weight * v


@njit(cache=True, nogil=True)
def _sorted_quantile(srt: FloatArray, level: float) -> float:
    """Return the ``level`` quantile of the ascending ``srt`` (linear between order statistics)."""
    count = srt.shape[0]
    pos = level * (count - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, count - 1)
    return float(srt[lo] + (pos - lo) * (srt[hi] - srt[lo]))


@njit(cache=True, nogil=True)
def forecast_quantiles(  # noqa: PLR0917 - numba kernels take no keyword-only parameters
    params: FloatArray,
    st: FloatArray,
    res: Stored,
    m1: int,
    m2: int,
    d0: int,
    levels: FloatArray,
    z: FloatArray,
    means: FloatArray,
    out: FloatArray,
) -> None:
    """Write ``out[k, d]``: the ``levels[k]`` quantile, clipped at 0, ``d0 + d + 1`` steps ahead.

    The quantiles of the scaled one-step residuals (empirical once :data:`_MIN_EMPIRICAL` exist,
    else a normal with ``z`` scores and at least Poisson spread) are multiplied by
    ``sqrt(v_h * max(|mean_h|, 1))``: ``v_h = 1 + sum_{j<h} c_j^2`` is the ETS(A,Ad,A) variance growth
    with ``c_j = alpha (1 + beta (phi + ... + phi^j)) + gamma (1 - alpha) [m | j]``, and the level
    factor undoes the residual scaling (spread grows with the level, as for counts).
    """
    a, b, g, phi = params[0], params[1], params[2], params[3]
    on = params.shape[0] <= 4 or params[4] > 0.0
    count = int(st[RES_COUNT])
    n_levels = levels.shape[0]
    q = np.empty(n_levels)
    if count >= _MIN_EMPIRICAL:
        srt = np.sort(res[:count]).astype(np.float64)
        for k in range(n_levels):
            q[k] = _sorted_quantile(srt, levels[k])
        # Tails: a level with fewer than _MIN_TAIL residuals beyond it would be the one or two most extreme
        # residuals (after a burst, p99 would sit at the burst for as long as the ring remembers it).
        # Such levels extend the furthest well-supported level with a normal tail whose scale is read
        # off that side of the distribution ((q_top - median) / z_top), so a skewed, heavy side stays so.
        median = _sorted_quantile(srt, 0.5)
        top, bottom = -1, -1
        for k in range(n_levels):
            if (1.0 - levels[k]) * count >= _MIN_TAIL:
                top = k
            if bottom < 0 and levels[k] * count >= _MIN_TAIL:
                bottom = k
        if top >= 0 and z[top] > 0.0:
            upper = max(q[top] - median, 0.0) / z[top]
            for k in range(top + 1, n_levels):
                q[k] = max(q[top] + (z[k] - z[top]) * upper, q[k - 1])
        if bottom >= 0 and z[bottom] < 0.0:
            lower = max(median - q[bottom], 0.0) / -z[bottom]
            for k in range(bottom - 1, -1, -1):
                q[k] = min(q[bottom] - (z[bottom] - z[k]) * lower, q[k + 1])
    else:
        msr = 0.0
        for j in range(count):
            r = float(res[j])
            msr += r * r
        msr = msr / count if count > 0 else 0.0
        sigma = math.sqrt(max(msr, 1.0))
        for k in range(n_levels):
            q[k] = z[k] * sigma
    horizon = out.shape[1]
    var = 1.0
    damp = 0.0
    pw = 1.0
    for h in range(d0 + horizon):
        if h > 0:
            pw *= phi
            damp += pw
            c = a * (1.0 + b * damp)
            if on and st[READY1] > 0.0 and h % m1 == 0:
                c += g * (1.0 - a)
            if on and st[READY2] > 0.0 and h % m2 == 0:
                c += g * (1.0 - a)
            var += c * c
        if h < d0:
            continue
        scale = math.sqrt(var * max(abs(means[h - d0]), 1.0))
        for k in range(n_levels):
            v = means[h - d0] + q[k] * scale
            out[k, h - d0] = v if v > 0.0 else 0.0
