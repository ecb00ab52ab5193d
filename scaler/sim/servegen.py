"""ServeGen per-client rate files: parsed into arrays, then sampled as requests or per-second counts.

ServeGen (Xiang et al., arXiv:2505.09999, Apache-2.0) gives, per client and 10-minute window, the
request rate, the coefficient of variation (CV) of inter-arrival times and a fitted distribution
(``Gamma`` or ``Weibull`` with parameters ``arg1, arg2``). Checked on m-large (99,839 active rows):

* Gamma rows: ``arg1`` is the shape and equals ``1/cv²`` exactly; ``arg2`` is the scale, and the
  implied mean ``arg1*arg2`` is ``1/rate`` within 0.2% in the median row, but 35% or less of it in 5% of rows.
* Weibull rows: ``arg1`` is the shape and ``arg2`` the scale, but the implied mean is ``1/rate``
  only loosely (median ratio 1.17, 5-95% range 0.63-2.9) and the implied CV is 0.33-1.2 times ``cv``.

So the samplers ignore ``arg1, arg2``: they keep each row's family and take the shape from ``cv``
and the scale from ``rate``, which makes the mean and CV of every window the ones the file states.
The files carry no token counts: requests get lognormal sizes, by default the Azure conv fit
(:data:`scaler.sim.workload.AZURE_CONV_TOKENS`, means 1,155 prompt / 211 output tokens).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from scaler.sim.traces import TraceError, TraceProblem, check_bad_fraction, read_text
from scaler.sim.workload import (
    AZURE_CONV_TOKENS,
    FloatArray,
    IntArray,
    RateWorkload,
    TokenSizes,
    Workload,
    sample_tokens,
)

SERVEGEN_WINDOW = 600.0  # seconds per row of a raw file
IDLE, GAMMA, WEIBULL = 0, 1, 2
_FAMILIES = {"Gamma": GAMMA, "Weibull": WEIBULL}
_CHUNK = re.compile(r"chunk-(\d+)-trace\.csv")
_SERVEGEN_FIELDS = 6
_TOKEN_STREAM = 0x70CE5  # seeds the token-size stream apart from the per-window arrival streams


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServeGenTrace:
    """ServeGen rate files as arrays: row ``i`` is client ``clients[i]``, column ``w`` starts at ``600*w`` s.

    ``rate`` is requests/second, ``cv`` the inter-arrival coefficient of variation, ``family`` one of
    IDLE, GAMMA, WEIBULL (idle and missing windows have rate 0). ``problems`` lists skipped rows.
    """

    name: str
    clients: IntArray
    rate: FloatArray
    cv: FloatArray
    family: npt.NDArray[np.int8]
    problems: tuple[TraceProblem, ...]

    @property
    def duration(self) -> float:
        """Return the span of the trace in seconds (windows times 600)."""
        return float(self.rate.shape[1]) * SERVEGEN_WINDOW


_Row = tuple[int, float, float, int]


def _servegen_row(line: str, number: int, name: str) -> _Row | TraceProblem:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != _SERVEGEN_FIELDS:
        return TraceProblem(
            number, f"expected 6 fields timestamp_s,rate,cv,pattern,arg1,arg2, got {len(parts)}", name
        )
    values: list[float] = []
    for field, text in zip(("timestamp_s", "rate", "cv"), parts[:3], strict=True):
        try:
            value = float(text)
        except ValueError:
            return TraceProblem(number, f"{field} {text!r} is not a number", name)
        if not (math.isfinite(value) and value >= 0.0):
            return TraceProblem(number, f"{field} {text!r} must be finite and non-negative", name)
        values.append(value)
    stamp, rate, cv = values
    index = round(stamp / SERVEGEN_WINDOW)
    if abs(stamp - index * SERVEGEN_WINDOW) > 1e-6:
        return TraceProblem(number, f"timestamp_s {parts[0]} is not a multiple of 600 s", name)
    if rate == 0.0:
        return index, 0.0, 0.0, IDLE
    family = _FAMILIES.get(parts[3])
    if family is None:
        return TraceProblem(number, f"pattern {parts[3]!r} with rate {rate:g} is not Gamma or Weibull", name)
    if cv == 0.0:
        return TraceProblem(number, f"cv is 0 with rate {rate:g}; expected a positive value", name)
    return index, rate, cv, family


def _read_servegen_file(path: Path) -> tuple[list[_Row], list[TraceProblem]]:
    rows: list[_Row] = []
    problems: list[TraceProblem] = []
    seen: dict[int, int] = {}
    count = 0
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        count += 1
        parsed = _servegen_row(line, number, path.name)
        if isinstance(parsed, TraceProblem):
            problems.append(parsed)
        elif parsed[0] in seen:
            message = f"window at {parsed[0] * SERVEGEN_WINDOW:g} s repeats line {seen[parsed[0]]}"
            problems.append(TraceProblem(number, message, path.name))
        else:
            seen[parsed[0]] = number
            rows.append(parsed)
    if not rows:
        detail = f"; first problem: {problems[0]}" if problems else ""
        raise TraceError(f"{path}: no usable rows{detail}")
    check_bad_fraction(path, problems, count)
    return rows, problems


def read_servegen(path: Path) -> ServeGenTrace:
    """Return the ServeGen ``chunk-<client>-trace.csv`` files in ``path`` (or in ``path/raw``) as arrays.

    Raises TraceError naming the directory or file if the directory is missing or holds no chunk
    files, or a file is unreadable, has no usable row, or more than 5% bad rows.
    """
    if not path.is_dir():
        raise TraceError(f"{path}: no such directory (expected ServeGen chunk-<client>-trace.csv files)")
    files = {int(m.group(1)): p for p in path.iterdir() if (m := _CHUNK.fullmatch(p.name))}
    if not files and (path / "raw").is_dir():
        return read_servegen(path / "raw")
    if not files:
        raise TraceError(f"{path}: no ServeGen chunk-<client>-trace.csv files")
    clients = sorted(files)
    parsed = [_read_servegen_file(files[client]) for client in clients]
    windows = 1 + max(row[0] for rows, _ in parsed for row in rows)
    rate = np.zeros((len(clients), windows))
    cv = np.zeros((len(clients), windows))
    family = np.zeros((len(clients), windows), dtype=np.int8)
    for i, (rows, _) in enumerate(parsed):
        table = np.array(rows, dtype=np.float64)
        index = table[:, 0].astype(np.int64)
        rate[i, index], cv[i, index], family[i, index] = table[:, 1], table[:, 2], table[:, 3]
    return ServeGenTrace(
        name=path.parent.name if path.name == "raw" else path.name,
        clients=np.array(clients, dtype=np.int64),
        rate=rate,
        cv=cv,
        family=family,
        problems=tuple(problem for _, problems in parsed for problem in problems),
    )


def _weibull_shape_table() -> tuple[FloatArray, FloatArray]:
    shapes = np.geomspace(0.02, 2000.0, 4000)
    log_moment = np.array([math.lgamma(1 + 2 / c) - 2 * math.lgamma(1 + 1 / c) for c in shapes])
    return np.log(log_moment[::-1]), np.log(shapes[::-1])  # ascending in log(log(1 + cv²))


_WEIBULL_X, _WEIBULL_Y = _weibull_shape_table()


def weibull_shape(cv: float) -> float:
    """Return the Weibull shape ``k`` whose coefficient of variation is ``cv`` (clipped to [0.02, 2000]).

    Solves ``1 + cv² = Γ(1 + 2/k) / Γ(1 + 1/k)²`` by interpolation on a log-spaced table.
    """
    return float(np.exp(np.interp(math.log(math.log1p(cv * cv)), _WEIBULL_X, _WEIBULL_Y)))


def window_arrivals(
    rng: np.random.Generator, *, family: int, rate: float, cv: float, window: float = SERVEGEN_WINDOW
) -> FloatArray:
    """Return sorted arrival times in ``[0, window)`` of a stationary renewal process.

    Inter-arrival times follow ``family`` (GAMMA or WEIBULL) with mean ``1/rate`` and coefficient of
    variation ``cv``. The first arrival is the forward recurrence time (uniform fraction of a
    length-biased interval), so the expected count is exactly ``rate * window``.
    """
    if family == GAMMA:
        k = 1.0 / (cv * cv)
        scale = 1.0 / (rate * k)
        first = rng.uniform() * rng.gamma(k + 1.0, scale)  # length-biased Gamma(k) is Gamma(k+1)

        def draw(n: int) -> FloatArray:
            return rng.gamma(k, scale, n)
    else:
        c = weibull_shape(cv)
        lam = 1.0 / (rate * math.exp(math.lgamma(1.0 + 1.0 / c)))
        first = rng.uniform() * lam * rng.gamma(1.0 + 1.0 / c) ** (1.0 / c)  # length-biased Weibull

        def draw(n: int) -> FloatArray:
            return lam * rng.weibull(c, n)

    if first >= window:
        return np.zeros(0)
    expected = rate * window
    batch = int(expected + 4.0 * max(cv, 1.0) * math.sqrt(expected) + 16)
    chunks = [np.array([first])]
    end = first
    while end < window:
        times = end + np.cumsum(draw(batch))
        chunks.append(times)
        end = float(times[-1])
    arrivals = np.concatenate(chunks)
    return arrivals[arrivals < window]


def _select(
    trace: ServeGenTrace, *, start: float, end: float | None, clients: Sequence[int] | None
) -> tuple[float, IntArray]:
    """Return the checked end time and the row indices of ``clients``; raise ValueError naming the problem."""
    stop = trace.duration if end is None else end
    if not 0.0 <= start < stop <= trace.duration:
        raise ValueError(f"need 0 <= start < end <= {trace.duration:g} s, got start={start:g}, end={stop:g}")
    if clients is None:
        return stop, np.arange(trace.clients.shape[0], dtype=np.int64)
    known = {int(client): i for i, client in enumerate(trace.clients)}
    missing = sorted(set(clients) - known.keys())
    if missing:
        raise ValueError(f"clients {missing} are not in ServeGen trace {trace.name!r}")
    return stop, np.array([known[client] for client in clients], dtype=np.int64)


def servegen_requests(
    trace: ServeGenTrace,
    *,
    seed: int,
    start: float = 0.0,
    end: float | None = None,
    clients: Sequence[int] | None = None,
    tokens: TokenSizes = AZURE_CONV_TOKENS,
) -> Workload:
    """Return individual requests of ``clients`` (default all) in ``[start, end)`` seconds of ``trace``.

    Each client's active windows are sampled with :func:`window_arrivals` from a generator seeded by
    ``(seed, client, window)``, so a window's arrivals do not depend on the range asked for.
    Arrivals are shifted to start at 0; token sizes are lognormal draws from ``tokens``.
    Raises ValueError for a negative seed, a range outside the trace or an unknown client.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    stop, rows = _select(trace, start=start, end=end, clients=clients)
    first, last = int(start // SERVEGEN_WINDOW), math.ceil(stop / SERVEGEN_WINDOW)
    parts: list[FloatArray] = [np.zeros(0)]
    for row in rows:
        client = int(trace.clients[row])
        for w in range(first, last):
            if trace.family[row, w] == IDLE:
                continue
            rng = np.random.default_rng([seed, client, w])
            times = w * SERVEGEN_WINDOW + window_arrivals(
                rng,
                family=int(trace.family[row, w]),
                rate=float(trace.rate[row, w]),
                cv=float(trace.cv[row, w]),
            )
            parts.append(times[(times >= start) & (times < stop)] - start)
    arrivals = np.sort(np.concatenate(parts))
    prompt, output = sample_tokens(tokens, arrivals.shape[0], np.random.default_rng([seed, _TOKEN_STREAM]))
    return Workload(
        name=f"servegen:{trace.name}[{start:g}s,{stop:g}s)",
        arrivals=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        duration=stop - start,
    )


def servegen_rates(
    trace: ServeGenTrace,
    *,
    seed: int,
    start: float = 0.0,
    end: float | None = None,
    clients: Sequence[int] | None = None,
    tokens: TokenSizes = AZURE_CONV_TOKENS,
) -> RateWorkload:
    """Return per-second arrival counts of ``clients`` (default all) over whole seconds ``[start, end)``.

    Per window the clients' renewal processes are summed: mean ``R = Σ rate`` and variance
    ``V = Σ rate·cv²`` per second (the renewal-process count variance), and each second's count is an
    independent Gamma draw with that mean and variance (fractional counts, for the fluid model).
    Generators are seeded by ``(seed, window)``. Raises ValueError as :func:`servegen_requests` does.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    stop, rows = _select(trace, start=start, end=end, clients=clients)
    mean = trace.rate[rows].sum(axis=0)
    variance = (trace.rate[rows] * trace.cv[rows] ** 2).sum(axis=0)
    first_second, stop_second = math.floor(start), math.ceil(stop)
    per_window = int(SERVEGEN_WINDOW)
    counts = np.zeros(stop_second - first_second)
    for w in range(first_second // per_window, math.ceil(stop_second / per_window)):
        lo, hi = max(w * per_window, first_second), min((w + 1) * per_window, stop_second)
        if mean[w] <= 0.0:
            continue
        rng = np.random.default_rng([seed, w])
        draws = rng.gamma(mean[w] ** 2 / variance[w], variance[w] / mean[w], per_window)
        counts[lo - first_second : hi - first_second] = draws[lo - w * per_window : hi - w * per_window]
    return RateWorkload(
        name=f"servegen:{trace.name}[{first_second}s,{stop_second}s)",
        counts=counts,
        mean_prompt_tokens=tokens.mean_prompt,
        mean_output_tokens=tokens.mean_output,
    )


def load_servegen_requests(
    path: Path,
    *,
    seed: int,
    start: float = 0.0,
    end: float | None = None,
    clients: Sequence[int] | None = None,
    tokens: TokenSizes = AZURE_CONV_TOKENS,
) -> Workload:
    """Return :func:`servegen_requests` of the files in ``path``; raise TraceError or ValueError as they do.

    Skipped rows are dropped silently here: to show them, call :func:`read_servegen` and use its problems.
    """
    trace = read_servegen(path)
    return servegen_requests(trace, seed=seed, start=start, end=end, clients=clients, tokens=tokens)


def load_servegen_rates(
    path: Path,
    *,
    seed: int,
    start: float = 0.0,
    end: float | None = None,
    clients: Sequence[int] | None = None,
    tokens: TokenSizes = AZURE_CONV_TOKENS,
) -> RateWorkload:
    """Return :func:`servegen_rates` of the files in ``path``; raise TraceError or ValueError as they do."""
    return servegen_rates(
        read_servegen(path), seed=seed, start=start, end=end, clients=clients, tokens=tokens
    )
