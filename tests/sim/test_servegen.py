"""ServeGen rate files: parsing with problems, renewal sampling, per-second counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.sim.servegen import (
    GAMMA,
    IDLE,
    WEIBULL,
    load_servegen_rates,
    load_servegen_requests,
    read_servegen,
    servegen_rates,
    servegen_requests,
    weibull_shape,
    window_arrivals,
)
from scaler.sim.traces import SERVEGEN_RAW, TraceError

REAL_TRACES = Path("/work/shared/traces")

Row = tuple[float, float, float, str]  # timestamp_s, rate, cv, pattern


def write_client(directory: Path, client: int, rows: Sequence[Row | str]) -> Path:
    """Write ``chunk-<client>-trace.csv``: tuples as rows with dummy fit parameters, strings verbatim."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        row if isinstance(row, str) else f"{row[0]:g},{row[1]},{row[2]},{row[3]},0.5,2.0" for row in rows
    ]
    path = directory / f"chunk-{client}-trace.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def steady(windows: int, *, rate: float, cv: float, pattern: str) -> list[Row]:
    return [(600.0 * w, rate, cv, pattern) for w in range(windows)]


def weibull_cv(shape: float) -> float:
    return math.sqrt(math.exp(math.lgamma(1 + 2 / shape) - 2 * math.lgamma(1 + 1 / shape)) - 1)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Three clients over six windows: Gamma, Weibull with an idle hole, and one always idle."""
    raw = tmp_path / "raw"
    write_client(raw, 3, steady(6, rate=2.0, cv=1.5, pattern="Gamma"))
    weibull = steady(6, rate=1.0, cv=2.0, pattern="Weibull")
    weibull[2] = (1200.0, 0.0, 0.0, "")
    write_client(raw, 11, weibull)
    write_client(raw, 7, steady(6, rate=0.0, cv=0.0, pattern=""))
    return raw


def test_read_servegen_lays_clients_and_windows_out_as_arrays(small: Path) -> None:
    trace = read_servegen(small.parent)  # the parent of raw/ is accepted too
    assert trace.clients.tolist() == [3, 7, 11]
    assert trace.rate.shape == (3, 6)
    assert trace.duration == 3600.0
    assert trace.family[0].tolist() == [GAMMA] * 6
    assert trace.family[1].tolist() == [IDLE] * 6
    assert trace.family[2].tolist() == [WEIBULL, WEIBULL, IDLE, WEIBULL, WEIBULL, WEIBULL]
    assert trace.rate[2, 2] == 0.0
    assert trace.problems == ()


def test_missing_windows_are_idle(tmp_path: Path) -> None:
    write_client(tmp_path, 1, [(0.0, 1.0, 1.0, "Gamma"), (1800.0, 1.0, 1.0, "Gamma")])
    trace = read_servegen(tmp_path)
    assert trace.family[0].tolist() == [GAMMA, IDLE, IDLE, GAMMA]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("600,1.0,1.0,Gamma,0.5", "expected 6 fields"),
        ("600,fast,1.0,Gamma,0.5,2.0", "rate 'fast' is not a number"),
        ("600,-1.0,1.0,Gamma,0.5,2.0", "rate '-1.0' must be finite and non-negative"),
        ("600,1.0,inf,Gamma,0.5,2.0", "cv 'inf' must be finite"),
        ("650,1.0,1.0,Gamma,0.5,2.0", "timestamp_s 650 is not a multiple of 600 s"),
        ("600,1.0,1.0,Lognormal,0.5,2.0", "pattern 'Lognormal' with rate 1 is not Gamma or Weibull"),
        ("600,1.0,1.0,,0.5,2.0", "pattern '' with rate 1 is not Gamma or Weibull"),
        ("600,1.0,0,Gamma,0.5,2.0", "cv is 0 with rate 1"),
        ("0,1.0,1.0,Gamma,0.5,2.0", "window at 0 s repeats line 1"),
    ],
)
def test_bad_rows_are_skipped_and_reported_with_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    rows: list[Row | str] = [*steady(40, rate=1.0, cv=1.0, pattern="Gamma")]
    rows[1] = row
    write_client(tmp_path, 5, rows)
    trace = read_servegen(tmp_path)
    assert len(trace.problems) == 1
    problem = trace.problems[0]
    assert (problem.file, problem.line) == ("chunk-5-trace.csv", 2)
    assert message in problem.message
    assert trace.family[0, 2:].tolist() == [GAMMA] * 38


def test_a_file_with_too_many_bad_rows_refuses_the_directory(tmp_path: Path) -> None:
    write_client(tmp_path, 1, steady(10, rate=1.0, cv=1.0, pattern="Gamma"))
    write_client(tmp_path, 2, [*steady(10, rate=1.0, cv=1.0, pattern="Gamma"), "x,y,z,Gamma,1,1"])
    with pytest.raises(TraceError, match=r"chunk-2-trace\.csv: 1 of 11 rows cannot be read"):
        read_servegen(tmp_path)


def test_unusable_directories_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such directory"):
        read_servegen(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("not a trace")
    with pytest.raises(TraceError, match=f"{tmp_path}: no ServeGen chunk"):
        read_servegen(tmp_path)
    (tmp_path / "chunk-4-trace.csv").write_text("")
    with pytest.raises(TraceError, match=r"chunk-4-trace\.csv: no usable rows"):
        read_servegen(tmp_path)


@pytest.mark.parametrize("shape", [0.1, 0.3, 1.0, 2.0, 10.0, 300.0])
def test_weibull_shape_inverts_the_coefficient_of_variation(shape: float) -> None:
    assert weibull_shape(weibull_cv(shape)) == pytest.approx(shape, rel=1e-3)


def test_weibull_with_cv_one_is_the_exponential() -> None:
    assert weibull_shape(1.0) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(("family", "cv"), [(GAMMA, 0.5), (GAMMA, 2.5), (WEIBULL, 0.5), (WEIBULL, 2.5)])
def test_inter_arrivals_have_the_stated_mean_and_cv(family: int, cv: float) -> None:
    times = window_arrivals(np.random.default_rng(1), family=family, rate=2.0, cv=cv, window=200_000.0)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(0.5, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize("family", [GAMMA, WEIBULL])
def test_window_counts_average_rate_times_window_even_when_bursty(family: int) -> None:
    # A renewal process started with an arrival at 0 would over-count by about (cv²-1)/2 = 7.5 here.
    rng = np.random.default_rng(2)
    counts = [window_arrivals(rng, family=family, rate=0.05, cv=4.0).shape[0] for _ in range(3000)]
    assert np.mean(counts) == pytest.approx(30.0, rel=0.06)


@settings(max_examples=30, deadline=None)
@given(
    family=st.sampled_from([GAMMA, WEIBULL]),
    rate=st.floats(1e-3, 30.0),
    cv=st.floats(0.01, 150.0),
    seed=st.integers(0, 2**32),
)
def test_window_arrivals_are_sorted_inside_the_window(family: int, rate: float, cv: float, seed: int) -> None:
    times = window_arrivals(np.random.default_rng(seed), family=family, rate=rate, cv=cv)
    assert np.all(np.diff(times) >= 0)
    assert np.all((times >= 0) & (times < 600.0))


def test_sampled_requests_follow_the_window_rates(small: Path) -> None:
    workload = load_servegen_requests(small, seed=4)
    per_window = np.histogram(workload.arrivals, bins=np.arange(0.0, 3601.0, 600.0))[0]
    expected = np.array([1800.0, 1800.0, 1200.0, 1800.0, 1800.0, 1800.0])
    # count sd per window: sqrt(600·Σ rate·cv²) ≈ 83 → 5 sd ≈ 400
    assert np.all(np.abs(per_window - expected) < 400)
    assert per_window.sum() == pytest.approx(expected.sum(), rel=0.06)
    assert np.all(np.diff(workload.arrivals) >= 0)
    assert workload.duration == 3600.0
    assert workload.prompt_tokens.shape == workload.arrivals.shape


def test_idle_windows_produce_no_requests(tmp_path: Path) -> None:
    write_client(
        tmp_path, 1, [(0.0, 5.0, 1.0, "Gamma"), (600.0, 0.0, 0.0, ""), (1200.0, 5.0, 3.0, "Weibull")]
    )
    workload = load_servegen_requests(tmp_path, seed=0)
    assert workload.requests > 0
    assert not np.any((workload.arrivals >= 600.0) & (workload.arrivals < 1200.0))


def test_requests_repeat_with_the_seed_and_change_with_another(small: Path) -> None:
    trace = read_servegen(small)
    first = servegen_requests(trace, seed=9)
    again = servegen_requests(trace, seed=9)
    other = servegen_requests(trace, seed=10)
    assert np.array_equal(first.arrivals, again.arrivals)
    assert np.array_equal(first.prompt_tokens, again.prompt_tokens)
    assert first.arrivals.shape != other.arrivals.shape or not np.array_equal(first.arrivals, other.arrivals)


def test_a_range_is_the_same_slice_of_the_whole_trace(small: Path) -> None:
    trace = read_servegen(small)
    whole = servegen_requests(trace, seed=3)
    part = servegen_requests(trace, seed=3, start=900.0, end=2100.0)
    inside = whole.arrivals[(whole.arrivals >= 900.0) & (whole.arrivals < 2100.0)]
    assert np.allclose(part.arrivals, inside - 900.0)
    assert part.duration == 1200.0


def test_clients_select_whose_requests_are_drawn(small: Path) -> None:
    trace = read_servegen(small)
    only_idle = servegen_requests(trace, seed=0, clients=[7])
    gamma_only = servegen_requests(trace, seed=0, clients=[3])
    assert only_idle.requests == 0
    assert gamma_only.requests == pytest.approx(2.0 * 3600, rel=0.06)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -1.0}, "need 0 <= start < end"),
        ({"start": 600.0, "end": 600.0}, "need 0 <= start < end"),
        ({"end": 4000.0}, r"end <= 3600 s"),
        ({"clients": [3, 99]}, r"clients \[99\] are not in ServeGen trace"),
        ({"seed": -1}, "seed must be non-negative"),
    ],
)
def test_bad_arguments_are_refused_by_name(small: Path, kwargs: dict[str, object], message: str) -> None:
    trace = read_servegen(small)
    arguments: dict[str, object] = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        servegen_requests(trace, **arguments)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        servegen_rates(trace, **arguments)  # type: ignore[arg-type]


def test_rates_have_the_window_mean_and_renewal_variance(small: Path) -> None:
    rates = load_servegen_rates(small, seed=1)
    windows = rates.counts.reshape(6, 600)
    mean = np.array([3.0, 3.0, 2.0, 3.0, 3.0, 3.0])
    variance = np.array([2 * 1.5**2 + 4.0] * 2 + [2 * 1.5**2] + [2 * 1.5**2 + 4.0] * 3)
    assert rates.duration == 3600.0
    assert np.all(np.abs(windows.mean(axis=1) - mean) < 5 * np.sqrt(variance / 600))
    assert windows.var(axis=1) == pytest.approx(variance, rel=0.35)
    assert rates.counts.min() >= 0.0


def test_rates_are_zero_when_every_client_is_idle(tmp_path: Path) -> None:
    write_client(tmp_path, 1, [(0.0, 1.0, 1.0, "Gamma"), (600.0, 0.0, 0.0, "")])
    rates = load_servegen_rates(tmp_path, seed=0)
    assert rates.counts[600:].tolist() == [0.0] * 600
    assert rates.counts[:600].sum() > 0


def test_rates_repeat_with_the_seed_and_a_range_is_a_slice(small: Path) -> None:
    trace = read_servegen(small)
    whole = servegen_rates(trace, seed=5)
    assert np.array_equal(whole.counts, servegen_rates(trace, seed=5).counts)
    assert not np.array_equal(whole.counts, servegen_rates(trace, seed=6).counts)
    part = servegen_rates(trace, seed=5, start=900.0, end=2100.0)
    assert np.array_equal(part.counts, whole.counts[900:2100])


@pytest.mark.skipif(not (REAL_TRACES / SERVEGEN_RAW).is_dir(), reason="real traces not present")
def test_real_servegen_rates_match_the_published_mean() -> None:
    trace = read_servegen(REAL_TRACES / SERVEGEN_RAW)
    assert trace.problems == ()
    assert trace.rate.shape == (162, 2016)
    rates = servegen_rates(trace, seed=0)
    assert rates.duration == 14 * 86_400
    assert rates.counts.mean() * 60 == pytest.approx(11_751, rel=0.01)
    per_minute_by_window = rates.counts.reshape(-1, 600).sum(axis=1) / 10
    assert per_minute_by_window.max() == pytest.approx(34_980, rel=0.05)
    assert per_minute_by_window.min() == pytest.approx(2_901, rel=0.05)
