"""Built-in synthetic workloads: seeded, reproducible scenarios that exercise one scaling problem each.

Arrivals are a non-homogeneous Poisson process with a rate that is constant within each second:
per-second Poisson counts, each arrival placed uniformly inside its second. Token sizes are lognormal
(:data:`SYNTHETIC_TOKENS`: means 1,000 prompt / 200 output tokens, log-spreads of the Azure conv
trace), so one replica of the default policy (12,000 prefill and 2,500 decode tokens/s) serves about
``1 / (1000/12000 + 200/2500) ≈ 6.1`` requests/s (:data:`REPLICA_RATE`). Rates below are stated in
those replicas.

==============  =======  ====================================================================
scenario        length   shape
==============  =======  ====================================================================
diurnal         3 h      a compressed day: raised cosine from 1 replica (night) to 7 (midday)
flash-crowd     1 h      2 replicas steady, then an 8x burst: 10 s rise, 5 min plateau, 60 s fall
sporadic        2 h      sessions ~every 15 min lasting ~2 min at ~1 req/s, idle in between
ramp            2 h      0.5 replica for 1/12 of the run, linear ramp to 9, 1/12 flat at the top
mixed           3 h      diurnal plus a 6x flash crowd of 4 min on the morning rise (the default)
==============  =======  ====================================================================
"""

from __future__ import annotations

import math

import numpy as np

from scaler.sim.workload import FloatArray, TokenSizes, Workload, sample_tokens

SCENARIOS = ("diurnal", "flash-crowd", "sporadic", "ramp", "mixed")
DEFAULT_SCENARIO = "mixed"
DEFAULT_DURATIONS = {
    "diurnal": 10_800.0,
    "flash-crowd": 3_600.0,
    "sporadic": 7_200.0,
    "ramp": 7_200.0,
    "mixed": 10_800.0,
}
SYNTHETIC_TOKENS = TokenSizes(mean_prompt=1000.0, mean_output=200.0, sigma_prompt=0.99, sigma_output=0.86)
REPLICA_RATE = 1.0 / (1000.0 / 12_000.0 + 200.0 / 2_500.0)  # requests/s one default replica serves

DIURNAL_TROUGH, DIURNAL_PEAK = 1.0 * REPLICA_RATE, 7.0 * REPLICA_RATE
FLASH_BASE, FLASH_FACTOR, FLASH_SECONDS = 2.0 * REPLICA_RATE, 8.0, 300.0
RAMP_LOW, RAMP_HIGH = 0.5 * REPLICA_RATE, 9.0 * REPLICA_RATE
SPORADIC_GAP, SPORADIC_SESSION, SPORADIC_RATE = 900.0, 120.0, 1.0  # mean seconds, mean seconds, req/s
MIXED_FACTOR, MIXED_SECONDS, MIXED_AT = 6.0, 240.0, 0.15
MIN_DURATION = 600.0


def default_scenario() -> str:
    """Return the name of the scenario ``scaler simulate`` replays when none is given."""
    return DEFAULT_SCENARIO


def _burst(
    t: FloatArray, *, start: float, plateau: float, rise: float = 10.0, fall: float = 60.0
) -> FloatArray:
    """Return a 0..1 envelope: linear rise from ``start``, flat for ``plateau`` seconds, linear fall."""
    up = np.clip((t - start) / rise, 0.0, 1.0)
    down = np.clip(1.0 - (t - start - rise - plateau) / fall, 0.0, 1.0)
    return np.minimum(up, down)


def _diurnal(t: FloatArray, duration: float) -> FloatArray:
    return DIURNAL_TROUGH + (DIURNAL_PEAK - DIURNAL_TROUGH) * (1.0 - np.cos(2.0 * np.pi * t / duration)) / 2.0


def _sporadic(t: FloatArray, duration: float, rng: np.random.Generator) -> FloatArray:
    rate = np.zeros_like(t)
    at = rng.exponential(SPORADIC_GAP)
    while at < duration:
        length = rng.exponential(SPORADIC_SESSION)
        rate[(t >= at) & (t < at + length)] = SPORADIC_RATE * rng.uniform(0.5, 1.5)
        at += length + rng.exponential(SPORADIC_GAP)
    return rate


def scenario_rate(name: str, *, seed: int = 0, duration: float | None = None) -> FloatArray:
    """Return the scenario's arrival rate (requests/s) for each second ``[i, i+1)`` of the run.

    ``duration`` defaults to the scenario's length (:data:`DEFAULT_DURATIONS`); shapes stretch with
    it, bursts keep their length in seconds. Raises ValueError for an unknown name, a negative seed
    or a duration under 600 s.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    length = DEFAULT_DURATIONS[name] if duration is None else duration
    if not (math.isfinite(length) and length >= MIN_DURATION):
        raise ValueError(f"scenario {name!r}: duration must be at least {MIN_DURATION:g} s, got {length!r}")
    t = np.arange(math.ceil(length), dtype=np.float64) + 0.5
    if name == "diurnal":
        return _diurnal(t, length)
    if name == "flash-crowd":
        plateau = min(FLASH_SECONDS, length / 4)
        return FLASH_BASE * (1.0 + (FLASH_FACTOR - 1.0) * _burst(t, start=length / 2, plateau=plateau))
    if name == "sporadic":
        return _sporadic(t, length, np.random.default_rng([seed, SCENARIOS.index(name), 1]))
    if name == "ramp":
        edge = length / 12
        return RAMP_LOW + (RAMP_HIGH - RAMP_LOW) * np.clip((t - edge) / (length - 2 * edge), 0.0, 1.0)
    base = _diurnal(t, length)
    burst = _burst(t, start=MIXED_AT * length, plateau=min(MIXED_SECONDS, length / 4))
    return base * (1.0 + (MIXED_FACTOR - 1.0) * burst)


def synthetic(
    name: str, *, seed: int = 0, duration: float | None = None, tokens: TokenSizes = SYNTHETIC_TOKENS
) -> Workload:
    """Return the requests of scenario ``name`` (see the module table), the same for the same seed.

    Raises ValueError as :func:`scenario_rate` does.
    """
    rate = scenario_rate(name, seed=seed, duration=duration)
    rng = np.random.default_rng([seed, SCENARIOS.index(name)])
    counts = rng.poisson(rate)
    seconds = np.repeat(np.arange(rate.shape[0], dtype=np.float64), counts)
    arrivals = np.sort(seconds + rng.uniform(0.0, 1.0, seconds.shape[0]))
    length = DEFAULT_DURATIONS[name] if duration is None else duration
    arrivals = arrivals[arrivals < length]
    prompt, output = sample_tokens(tokens, arrivals.shape[0], rng)
    return Workload(
        name=f"synthetic:{name}",
        arrivals=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        duration=length,
    )
