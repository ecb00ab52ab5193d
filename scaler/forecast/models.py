"""Per-model demand forecaster: Holt-Winters over request and token counts, fitted in batch, updated online.

:class:`DemandForecaster` keeps three series per model (requests, prompt tokens, output tokens) in
fixed buckets, a bounded ring of history (about two of the longest seasons), and the Holt-Winters
state of :mod:`scaler.forecast.kernels`. Parameters are refitted from the retained history every
``refit_every`` buckets and the state carries on with them, keeping its long memory.
:meth:`DemandForecaster.seed` fits and runs over a whole batch history; it equals observing the
same buckets one by one and then calling :meth:`DemandForecaster.rebuild`, as long as the history
fits in the ring.

Memory: the history ring, the seasonal profiles and the residual ring are stored as float32 (a model
with the default policy keeps 55 KiB of arrays, not 111 KiB). Counts enter rounded to float32 (exact
for whole counts up to 2**24; token sums beyond that keep 7 significant digits), so seeding and
observing see the same numbers; the kernels compute in float64 and round only what they store.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from scaler.core.types import DemandForecast, FloatArray
from scaler.forecast import checkpoint, kernels
from scaler.forecast.kernels import Float32Array

if TYPE_CHECKING:
    import numpy.typing as npt

    from scaler.core.policy import ModelPolicy

DEFAULT_LEVELS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995,
)  # fmt: skip
N_SERIES = 3  # requests, prompt tokens, output tokens
_MAX_RESIDUALS = 256


@functools.lru_cache(maxsize=64)
def _levels_and_z(levels: tuple[float, ...]) -> tuple[FloatArray, FloatArray]:
    """Return ``levels`` as a read-only array and their standard-normal quantiles (z).

    One pair per distinct levels, shared by every forecaster using them (10,000 models: 5 MB less);
    z stays writable, as the cached kernels were compiled for, but nothing writes it. Out of range
    levels are returned too (the caller raises); inv_cdf's ValueError for them becomes NaN.
    """
    lv = np.array(levels, dtype=np.float64)
    lv.setflags(write=False)
    z = np.array([statistics.NormalDist().inv_cdf(v) if 0 < v < 1 else math.nan for v in levels])
    return lv, z
_TOKEN_TAIL = 64  # buckets used for the fallback tokens-per-request
_MAX_COUNT = float(np.finfo(np.float32).max)  # the history stores float32


@dataclasses.dataclass(frozen=True, slots=True)
class HWParams:
    """Holt-Winters smoothing constants: level, trend, season, and trend damping."""

    alpha: float
    beta: float
    gamma: float
    phi: float


def split_seasons(season_buckets: Sequence[int]) -> tuple[int, int]:
    """Return ``(m1, m2)`` (short, long; 0 = none) for up to two season lengths.

    Raises ValueError for more than two seasons, a length below 2, or duplicates.
    """
    seasons = sorted(int(m) for m in season_buckets)
    if len(seasons) > 2:
        raise ValueError(f"season_buckets: at most two seasons are supported, got {seasons}")
    if any(m < 2 for m in seasons):
        raise ValueError(f"season_buckets: every season must be at least 2 buckets, got {seasons}")
    if len(set(seasons)) != len(seasons):
        raise ValueError(f"season_buckets: duplicate season lengths {seasons}")
    if not seasons:
        return 0, 0
    if len(seasons) == 1:
        return seasons[0], 0
    return seasons[0], seasons[1]


def fit_many(series: FloatArray, *, season_buckets: Sequence[int]) -> list[HWParams]:
    """Fit Holt-Winters params to every row of ``series`` (shape ``(n_series, T)``, NaN = missing).

    One batch call into numba; each row is fitted independently by minimising one-step SSE.
    Returns one :class:`HWParams` per row (defaults for rows with fewer than 4 observations).
    Raises ValueError for a non-2-D array, infinite values, or bad season lengths.
    """
    m1, m2 = split_seasons(season_buckets)
    ys = np.ascontiguousarray(series, dtype=np.float64)
    if ys.ndim != 2:
        raise ValueError(f"series: expected shape (n_series, T), got {ys.shape}")
    if np.isinf(ys).any():
        raise ValueError("series: contains infinite values (use NaN for missing buckets)")
    out = np.empty((ys.shape[0], 4))
    n = ys.shape[0]
    kernels.fit(ys, m1, m2, np.zeros((n, m1 + m2)), np.zeros((n, 2)), out)
    return [HWParams(*(float(v) for v in row)) for row in out]


def _check_counts(name: str, values: FloatArray) -> None:
    """Raise ValueError naming ``name`` and the first bad index of a negative, infinite or too large count."""
    bad = np.flatnonzero(np.isinf(values) | (values < 0) | (values > _MAX_COUNT))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {values[i]!r}: counts must be finite and >= 0, "
            f"at most {_MAX_COUNT:.3g} (NaN = missing)"
        )


class DemandForecaster:
    """Online forecaster for ONE model: three series per bucket (requests, prompt tokens, output tokens)."""

    def __init__(
        self,
        *,
        bucket_seconds: int,
        horizon_buckets: int,
        season_buckets: Sequence[int],
        levels: Sequence[float] = DEFAULT_LEVELS,
        min_buckets: int = 3,
    ) -> None:
        """Create an empty forecaster; raises ValueError for non-positive sizes or bad levels/seasons."""
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be > 0, got {bucket_seconds}")
        if horizon_buckets < 1:
            raise ValueError(f"horizon_buckets must be >= 1, got {horizon_buckets}")
        if min_buckets < 1:
            raise ValueError(f"min_buckets must be >= 1, got {min_buckets}")
        lv, self._z = _levels_and_z(tuple(float(v) for v in levels))
        if lv.size == 0 or not ((lv > 0) & (lv < 1)).all() or (np.diff(lv) <= 0).any():
            raise ValueError(f"levels must be strictly increasing in (0, 1), got {list(levels)}")
        self.m1, self.m2 = split_seasons(season_buckets)
        self.bucket_seconds = int(bucket_seconds)
        self.horizon_buckets = int(horizon_buckets)
        self.season_buckets = tuple(m for m in (self.m1, self.m2) if m)
        self.levels = lv
        self.min_buckets = int(min_buckets)
        longest = max(self.m1, self.m2)
        if longest:
            self.capacity = 2 * longest + max(4 * self.horizon_buckets, 64)
        else:
            self.capacity = max(256, 8 * self.horizon_buckets)
        self.refit_every = max(longest, 128)
        # alpha, beta, gamma, phi and the form flag (1 = seasonal, 0 = level model; see kernels.fit)
        self.params = np.tile(np.append(kernels.DEFAULT_PARAMS, 1.0), (N_SERIES, 1))
        self.state = np.zeros((N_SERIES, kernels.N_STATE))
        self.seas: Float32Array = np.zeros((N_SERIES, self.m1 + self.m2), dtype=np.float32)
        # residuals of the request series only: its quantiles are the only ones forecast
        self.res: Float32Array = np.zeros((1, min(self.capacity, _MAX_RESIDUALS)), dtype=np.float32)
        self.hist: Float32Array = np.full((N_SERIES, self.capacity), np.nan, dtype=np.float32)
        self.anchor: float | None = None  # start time of bucket index 0
        self.last_idx = -1  # index of the last observed bucket
        self.first_idx = 0  # oldest bucket index that may hold data in the ring
        self.origin = 0  # bucket index of state step 0
        self.n_observed = 0
        self.since_fit = 0
        self._cache: tuple[int, int, DemandForecast] | None = None
        self._step_buf = np.empty((N_SERIES, 1))

    @classmethod
    def from_policy(cls, policy: ModelPolicy) -> DemandForecaster:
        """Return a forecaster configured from ``policy.forecast`` (bucket, horizon, seasons >= 2 buckets).

        It forecasts from the first completed bucket on (a level with Poisson-like spread): a model that
        starts taking traffic gets provisioned capacity after one bucket, not after several.
        """
        fc = policy.forecast
        bucket = int(fc.bucket_seconds)
        seasons = [s // bucket for s in fc.seasonalities_seconds if s // bucket >= 2]
        return cls(
            bucket_seconds=bucket,
            horizon_buckets=math.ceil(fc.horizon_seconds / bucket),
            season_buckets=seasons,
            min_buckets=1,
        )

    @property
    def observed_buckets(self) -> int:
        """Return how many buckets with a request count have been observed (seeded or one by one)."""
        return self.n_observed

    # ---- history -------------------------------------------------------------------------------

    def _retained(self) -> tuple[int, FloatArray]:
        """Return ``(first index, (3, n) float64 copy)`` of the retained history in time order."""
        if self.last_idx < 0:
            return 0, np.empty((N_SERIES, 0))
        first = max(self.first_idx, self.last_idx - self.capacity + 1)
        cols = np.arange(first, self.last_idx + 1) % self.capacity
        return first, self.hist[:, cols].astype(np.float64)

    def _reset_state(self) -> None:
        self.state[:] = 0.0
        self.seas[:] = 0.0
        self.res[:] = 0.0
        self._cache = None

    def refit(self, *, fresh: bool = False) -> None:
        """Refit params on the retained history (one batch call); the state carries on with them.

        The fit starts the seasons the state already holds (so params suit the state they will
        drive), or with ``fresh`` the seasonal profiles of the retained history itself. It also
        chooses per series whether the seasons count: once the history holds a full longest cycle
        and more, the level model without them replaces them when its error over the horizon on
        the later buckets is lower (the seasons are kept, unchanged, and may come back at a refit).
        """
        first, data = self._retained()
        if np.count_nonzero(~np.isnan(data[0])) >= 4:
            seas0 = np.zeros(self.seas.shape)
            ready0 = np.zeros((N_SERIES, 2))
            if not fresh:
                shift = first - self.origin
                if self.m1:
                    seas0[:, : self.m1] = np.roll(self.seas[:, : self.m1], -shift, axis=1)
                if self.m2:
                    seas0[:, self.m1 :] = np.roll(self.seas[:, self.m1 :], -shift, axis=1)
                ready0[:] = self.state[:, [kernels.READY1, kernels.READY2]]
            kernels.fit(
                np.ascontiguousarray(data), self.m1, self.m2, seas0, ready0, self.params, self.horizon_buckets
            )
        self._cache = None
        self.since_fit = 0

    def rebuild(self) -> None:
        """Refit params, then rebuild the state from the retained history alone (seasons from its cycles)."""
        self.refit(fresh=True)
        first, data = self._retained()
        self._replay(first, data)

    def _replay(self, first: int, data: FloatArray) -> None:
        self.origin = first
        kernels.run_fresh(
            np.ascontiguousarray(data), self.params, self.m1, self.m2, self.state, self.seas, self.res
        )

    def seed(
        self, *, start: float, requests: FloatArray, prompt_tokens: FloatArray, output_tokens: FloatArray
    ) -> None:
        """Replace all history with per-bucket counts starting at bucket boundary ``start`` (NaN = missing).

        Keeps the last ``capacity`` buckets and fits the params on them, then runs the state over all
        of the history (seasons start from their average profile over its complete cycles).
        Raises ValueError for arrays of different or zero length, or negative/infinite counts.
        """
        arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (requests, prompt_tokens, output_tokens)]
        names = ("requests", "prompt_tokens", "output_tokens")
        n = arrays[0].size
        if n == 0 or any(a.size != n for a in arrays):
            sizes = [a.size for a in arrays]
            raise ValueError(
                f"seed: requests/prompt_tokens/output_tokens need one same non-zero length, got {sizes}"
            )
        if not math.isfinite(start):
            raise ValueError(f"seed: start must be finite, got {start!r}")
        for name, a in zip(names, arrays, strict=True):
            _check_counts(name, a)
        arrays = [a.astype(np.float32).astype(np.float64) for a in arrays]  # as the history stores them
        self.anchor = float(start)
        self.hist[:] = np.nan
        self.first_idx = 0
        self.last_idx = n - 1
        keep = min(n, self.capacity)
        cols = np.arange(n - keep, n) % self.capacity
        for i, a in enumerate(arrays):
            self.hist[i, cols] = a[n - keep :]
        self.n_observed = int(np.count_nonzero(~np.isnan(arrays[0])))
        self.refit(fresh=True)
        self._replay(0, np.vstack(arrays))

    def observe(
        self, *, bucket_start: float, requests: float, prompt_tokens: float, output_tokens: float
    ) -> None:
        """Add one completed bucket of counts (NaN = missing); skipped buckets count as missing.

        A bucket at or before the last observed one is ignored. Refits every ``refit_every`` buckets.
        Raises ValueError for negative or infinite counts or a non-finite ``bucket_start``.
        """
        if not math.isfinite(bucket_start):
            raise ValueError(f"observe: bucket_start must be finite, got {bucket_start!r}")
        values = (float(requests), float(prompt_tokens), float(output_tokens))
        for name, v in zip(("requests", "prompt_tokens", "output_tokens"), values, strict=True):
            if math.isinf(v) or v < 0 or v > _MAX_COUNT:
                raise ValueError(
                    f"observe: {name} = {v!r} at {bucket_start}: counts must be finite and >= 0, "
                    f"at most {_MAX_COUNT:.3g}"
                )
        values = (float(np.float32(values[0])), float(np.float32(values[1])), float(np.float32(values[2])))
        if self.anchor is None:
            self.anchor = float(bucket_start)
            self.first_idx = self.origin = 0
        idx = round((bucket_start - self.anchor) / self.bucket_seconds)
        if idx <= self.last_idx:
            return
        gap = idx - self.last_idx - 1
        self._cache = None
        if gap + 1 >= self.capacity:  # nothing retained survives the gap: start afresh, keep params
            self.hist[:] = np.nan
            self._reset_state()
            self.first_idx = self.origin = idx
            gap = 0
        else:
            self.hist[:, np.arange(self.last_idx + 1, idx) % self.capacity] = np.nan
        buf = self._step_buf if gap == 0 else np.full((N_SERIES, gap + 1), np.nan)
        for i, v in enumerate(values):
            self.hist[i, idx % self.capacity] = v
            buf[i, gap] = v
        kernels.run(buf, self.params, self.m1, self.m2, self.state, self.seas, self.res)
        self.last_idx = idx
        self.since_fit += gap + 1
        if not math.isnan(values[0]):
            self.n_observed += 1
        if self.since_fit >= self.refit_every or (
            self._second_cycle() and 4 * self.since_fit >= self.refit_every
        ):
            self.refit()

    def _second_cycle(self) -> bool:
        """Return whether the retained history holds more than one longest cycle but not two.

        Then the fit can first judge the seasons on buckets they were not initialised from, so it
        refits four times as often (the form chosen at the end of the first cycle is a guess).
        """
        longest = max(self.m1, self.m2)
        held = self.last_idx - max(self.first_idx, self.last_idx - self.capacity + 1) + 1
        return longest > 0 and longest < held < 2 * longest

    # ---- forecasting ---------------------------------------------------------------------------

    def _recent_tokens(self) -> tuple[float, float]:
        """Return tokens per request (prompt, output) over the last observed buckets; 0 when none."""
        _, data = self._retained()
        tail = data[:, -_TOKEN_TAIL:]
        ok = ~np.isnan(tail).any(axis=0)
        reqs = float(tail[0, ok].sum())
        if reqs <= 0:
            return 0.0, 0.0
        return float(tail[1, ok].sum()) / reqs, float(tail[2, ok].sum()) / reqs

    def forecast(self, *, now: float) -> DemandForecast:
        """Return the demand distribution over ``horizon_buckets`` buckets from the bucket containing ``now``.

        The first bucket is never before the one after the last observed. Rates are requests per
        second. Returns :meth:`DemandForecast.unusable` (with a note) before ``min_buckets``
        observations or when the last observed bucket ended more than two horizons before ``now``.
        """
        if self.anchor is None or self.n_observed < self.min_buckets:
            return DemandForecast.unusable(
                start=now, note=f"only {self.n_observed} buckets observed, need {self.min_buckets}"
            )
        bs = self.bucket_seconds
        last_end = self.anchor + (self.last_idx + 1) * bs
        if now - last_end > 2 * self.horizon_buckets * bs:
            return DemandForecast.unusable(
                start=now, note=f"stale: last observed bucket ended {now - last_end:.0f} s before now"
            )
        start_idx = max(math.floor((now - self.anchor) / bs), self.last_idx + 1)
        if self._cache is not None and self._cache[:2] == (self.last_idx, start_idx):
            return self._cache[2]
        d0 = start_idx - self.last_idx - 1
        means = np.empty((N_SERIES, self.horizon_buckets))
        kernels.forecast_means(self.params, self.state, self.seas, self.m1, self.m2, d0, means)
        quant = np.empty((self.levels.size, self.horizon_buckets))
        kernels.forecast_quantiles(
            self.params[0],
            self.state[0],
            self.res[0],
            self.m1,
            self.m2,
            d0,
            self.levels,
            self._z,
            means[0],
            quant,
        )
        np.maximum(means, 0.0, out=means)
        reqs = float(means[0].sum())
        if reqs > 0:
            prompt, output = float(means[1].sum()) / reqs, float(means[2].sum()) / reqs
        else:
            prompt, output = self._recent_tokens()
        rate = means[0] / bs
        quant /= bs
        rate.setflags(write=False)
        quant.setflags(write=False)
        result = DemandForecast(
            start=self.anchor + start_idx * bs,
            bucket_seconds=float(bs),
            levels=self.levels,
            rate_mean=rate,
            rate_quantiles=quant,
            mean_prompt_tokens=prompt,
            mean_output_tokens=output,
        )
        self._cache = (self.last_idx, start_idx, result)
        return result

    # ---- checkpoint ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Return a versioned checkpoint (JSON header + numpy arrays, no pickle)."""
        header = {
            "bucket_seconds": self.bucket_seconds,
            "horizon_buckets": self.horizon_buckets,
            "season_buckets": list(self.season_buckets),
            "levels": [float(v) for v in self.levels],
            "min_buckets": self.min_buckets,
            "anchor": self.anchor,
            "last_idx": self.last_idx,
            "first_idx": self.first_idx,
            "origin": self.origin,
            "n_observed": self.n_observed,
            "since_fit": self.since_fit,
        }
        arrays = {name: getattr(self, name) for name in checkpoint.ARRAYS}
        return checkpoint.dump(checkpoint.Saved(header=header, arrays=arrays))

    def _missing_allowed(self, name: str, state: FloatArray | Float32Array) -> npt.NDArray[np.bool_]:
        """Return where array ``name`` may hold NaN (a missing bucket), given the saved ``state``.

        The history marks missing buckets with NaN, and so does a season's first cycle, which holds
        the raw counts until it is complete (:func:`scaler.forecast.kernels.step`). Nothing else may.
        """
        shape = getattr(self, name).shape
        if name == "hist":
            return np.ones(shape, dtype=np.bool_)
        allowed = np.zeros(shape, dtype=np.bool_)
        if name == "seas":  # a NaN or inf ready flag is not 0, so it allows nothing
            allowed[:, : self.m1] = state[:, [kernels.READY1]] == 0.0
            allowed[:, self.m1 :] = state[:, [kernels.READY2]] == 0.0
        return allowed

    @classmethod
    def from_bytes(cls, data: bytes) -> DemandForecaster:
        """Return the forecaster saved by :meth:`to_bytes`; raises ValueError on corrupt or foreign data."""
        saved = checkpoint.load(data)
        head = saved.header
        try:
            fc = cls(
                bucket_seconds=int(head["bucket_seconds"]),
                horizon_buckets=int(head["horizon_buckets"]),
                season_buckets=[int(m) for m in head["season_buckets"]],
                levels=[float(v) for v in head["levels"]],
                min_buckets=int(head["min_buckets"]),
            )
            anchor = None if head["anchor"] is None else float(head["anchor"])
            ints = {name: int(head[name]) for name in checkpoint.INTS}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"forecaster checkpoint: corrupt ({type(exc).__name__}: {exc})") from None
        if anchor is not None and not math.isfinite(anchor):
            raise ValueError("forecaster checkpoint: anchor is not finite")
        arrays = saved.arrays
        for name in checkpoint.ARRAYS:
            shape, expected = arrays[name].shape, getattr(fc, name).shape
            if shape != expected:
                raise ValueError(f"forecaster checkpoint: array {name} has shape {shape}, not {expected}")
        for name in checkpoint.ARRAYS:
            values = arrays[name]
            if (np.isinf(values) | (np.isnan(values) & ~fc._missing_allowed(name, arrays["state"]))).any():
                raise ValueError(f"forecaster checkpoint: array {name} holds non-finite values")
        fc.params = np.asarray(arrays["params"], dtype=np.float64)
        fc.state = np.asarray(arrays["state"], dtype=np.float64)
        fc.seas = np.asarray(arrays["seas"], dtype=np.float32)
        fc.res = np.asarray(arrays["res"], dtype=np.float32)
        fc.hist = np.asarray(arrays["hist"], dtype=np.float32)
        fc.anchor = anchor
        fc.last_idx, fc.first_idx, fc.origin = ints["last_idx"], ints["first_idx"], ints["origin"]
        fc.n_observed, fc.since_fit = ints["n_observed"], ints["since_fit"]
        return fc
