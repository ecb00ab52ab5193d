"""numba kernel of the hindsight oracle: an exact two-state dynamic programme per capacity level.

Level ``k`` (1-based) carries the work ``w_t = clip(r_t - (k - 1), 0, 1)`` instance-seconds in second
``t``, where ``r_t`` is the instance requirement. Each second the level is either ON (a replica serves
it: ``c_rep`` per second) or OFF (serverless serves its work: ``c_sv * w_t``). Switching ON costs a
cold start (``c_rep * cold``, paid while it starts) and is only possible from second ``cold_steps``
(``cold`` rounded up) on, unless the level starts
warm (already ready at t=0). Work a level cannot place (no replica allowed, no serverless) is
unserved and costs ``UNSERVED_PENALTY`` per instance-second inside the programme.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scaler.sim.results import FloatArray

INF = 1e300
UNSERVED_PENALTY = 1e9
ON_SECONDS, STARTING_SECONDS, STARTS = 0, 1, 2


@njit(cache=True)
def levels(  # noqa: PLR0917, PLR0912 - numba kernels take no keyword-only parameters
    r: FloatArray,
    c_rep: float,
    c_sv: float,
    cold: float,
    cold_steps: int,
    n_warm: int,
    max_rep: int,
    sv_ok: bool,
    rep_on: FloatArray,
    rep_starting: FloatArray,
    k8s_work: FloatArray,
    sv_work: FloatArray,
    unserved: FloatArray,
    totals: FloatArray,
) -> None:
    """Choose, level by level, the cheapest ON/OFF schedule; accumulate it into the per-second outputs.

    ``totals`` receives (replica ON seconds, replica cold-start seconds paid, cold starts); returns nothing.
    """
    n = r.shape[0]
    top = 0
    for t in range(n):
        top = max(top, int(np.ceil(r[t] - 1e-12)))
    came_off = np.zeros(n, dtype=np.bool_)  # ON at t was reached from OFF at t-1
    came_on = np.zeros(n, dtype=np.bool_)  # OFF at t was reached from ON at t-1
    cold_cost = c_rep * cold
    for k in range(1, top + 1):
        warm = k <= n_warm
        allow_rep = k <= max_rep
        on_prev = 0.0 if (warm and allow_rep) else INF
        off_prev = 0.0
        for t in range(n):
            w = min(max(r[t] - (k - 1), 0.0), 1.0)
            on_t = INF
            came_off[t] = False
            if allow_rep:
                from_off = off_prev + cold_cost if t >= cold_steps else INF
                if from_off < on_prev:
                    on_t = from_off + c_rep
                    came_off[t] = True
                else:
                    on_t = on_prev + c_rep
            off_cost = c_sv * w if sv_ok else UNSERVED_PENALTY * w
            came_on[t] = on_prev < off_prev
            off_t = min(on_prev, off_prev) + off_cost
            on_prev = min(on_t, INF)
            off_prev = off_t
        state_on = on_prev < off_prev
        for t in range(n - 1, -1, -1):
            w = min(max(r[t] - (k - 1), 0.0), 1.0)
            if state_on:
                rep_on[t] += 1.0
                k8s_work[t] += w
                totals[ON_SECONDS] += 1.0
                if came_off[t]:
                    totals[STARTS] += 1.0
                    totals[STARTING_SECONDS] += cold
                    for s in range(max(0, t - cold_steps), t):
                        rep_starting[s] += 1.0
                state_on = not came_off[t]
            else:
                if sv_ok:
                    sv_work[t] += w
                else:
                    unserved[t] += w
                state_on = came_on[t]
