"""Benchmark the numba Holt-Winters forecaster against seasonal-naive, statsmodels and statsforecast.

Prints, per trace: MASE (ours, seasonal-naive, statsmodels ExponentialSmoothing, statsforecast
AutoETS and MSTL), one-sided coverage of the p90 and p95 quantiles (ours, and statsforecast's from
the upper ends of its 80 % and 90 % prediction intervals, ``level=[80, 90]``), and wall times,
ours and statsmodels as the median of several repeats, statsforecast of one run (numba compile
paid beforehand and reported apart),
numba's first call reported apart: a whole rolling evaluation (fit + online updates + forecasts)
and a single fit on the training part plus one forecast ("fit_ms"; ours fits all three series,
requests and both token counts, where the trace has tokens). Then the per-call cost of observe()
and forecast() at the daemon's default settings.

Rolling scheme (the same for both): fit on the training part, then at every origin forecast the next
``horizon`` buckets and observe one bucket. Ours refits its params every ``refit_every`` buckets
from its retained history (as in the daemon). statsmodels is refitted (optimized) at the same
cadence on the history so far, and between refits re-filtered with its fixed params and initial
states over the history so far (it has no online update). statsforecast is refitted at the same
cadence and between refits applies its fitted model to the history so far with ``forward`` (no
refit). MSTL (trend by AutoETS without season) needs a season, so it runs only where there is one.

``--ours-only`` skips the baselines and the timings (a quick check of our accuracy figures alone).
``--daemon-cold`` instead runs the daemon's own forecaster (default policy: 60 s buckets, 30-bucket
horizon, daily season) cold over the 14 days of ServeGen as ``bench/policies.py`` feeds it, and
prints per day the mean absolute error over the horizon (divided by the daily-naive one-step MAE)
and the p90 coverage.

    .venv/bin/python bench/forecast.py [--traces DIR] [--json OUT] [--repeats N] [--ours-only | --daemon-cold]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaler.core.types import FloatArray  # noqa: E402
from scaler.forecast.models import DemandForecaster  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    y: FloatArray  # requests per bucket
    prompt: FloatArray
    output: FloatArray
    bucket_seconds: int
    train: int
    horizon: int
    seasons: tuple[int, ...]
    naive_period: int  # period of the seasonal-naive baseline and the MASE scale


def load_servegen(traces: Path) -> FloatArray:
    path = traces / "servegen-m-large" / "language_m-large_total_rate_10min.csv"
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1))
    return np.asarray(data[:, 1] * 600.0)


def load_azure(traces: Path, kind: str, bucket: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    path = traces / "azure-llm-2023" / f"AzureLLMInferenceTrace_{kind}.csv"
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str)
    stamps = raw[:, 0].astype("datetime64[us]")
    secs = (stamps - stamps.min()).astype(np.int64) / 1e6
    idx = (secs // bucket).astype(np.int64)
    n = int(idx.max()) + 1
    reqs = np.bincount(idx, minlength=n).astype(np.float64)
    prompt = np.bincount(idx, weights=raw[:, 1].astype(np.float64), minlength=n).astype(np.float64)
    output = np.bincount(idx, weights=raw[:, 2].astype(np.float64), minlength=n).astype(np.float64)
    return reqs, prompt, output


def mase_scale(y: FloatArray, period: int) -> float:
    return float(np.mean(np.abs(y[period:] - y[:-period])))


def rolling_ours(case: Case) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (mean, p90, p95) forecasts, shape (origins, horizon), in requests per bucket."""
    bs = case.bucket_seconds
    fc = DemandForecaster(bucket_seconds=bs, horizon_buckets=case.horizon, season_buckets=case.seasons)
    n, tr = case.y.size, case.train
    fc.seed(start=0.0, requests=case.y[:tr], prompt_tokens=case.prompt[:tr], output_tokens=case.output[:tr])
    levels = list(fc.levels)
    k90, k95 = levels.index(0.9), levels.index(0.95)
    origins = n - tr
    mean = np.empty((origins, case.horizon))
    p90 = np.empty_like(mean)
    p95 = np.empty_like(mean)
    for j, k in enumerate(range(tr, n)):
        f = fc.forecast(now=k * bs)
        mean[j] = f.rate_mean * bs
        p90[j] = f.rate_quantiles[k90] * bs
        p95[j] = f.rate_quantiles[k95] * bs
        fc.observe(
            bucket_start=k * bs,
            requests=case.y[k],
            prompt_tokens=case.prompt[k],
            output_tokens=case.output[k],
        )
    return mean, p90, p95


def rolling_statsmodels(case: Case, refit_every: int) -> FloatArray:
    """Return statsmodels ExponentialSmoothing mean forecasts, shape (origins, horizon)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: PLC0415 - optional dev dependency

    season = max(case.seasons) if case.seasons else None
    kind = "add" if season else None
    n, tr = case.y.size, case.train
    out = np.empty((n - tr, case.horizon))
    params: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, k in enumerate(range(tr, n)):
            hist = case.y[:k]
            if j % refit_every == 0:
                res = ExponentialSmoothing(
                    hist, trend="add", damped_trend=True, seasonal=kind, seasonal_periods=season
                ).fit()
                params = dict(res.params)
            else:
                init = {"initial_seasonal": params["initial_seasons"]} if season else {}
                res = ExponentialSmoothing(
                    hist,
                    trend="add",
                    damped_trend=True,
                    seasonal=kind,
                    seasonal_periods=season,
                    initialization_method="known",
                    initial_level=params["initial_level"],
                    initial_trend=params["initial_trend"],
                    **init,
                ).fit(
                    smoothing_level=params["smoothing_level"],
                    smoothing_trend=params["smoothing_trend"],
                    smoothing_seasonal=params["smoothing_seasonal"] if season else None,
                    damping_trend=params["damping_trend"],
                    optimized=False,
                )
            out[j] = res.forecast(case.horizon)
    return np.maximum(out, 0.0)


def statsforecast_model(kind: str, seasons: tuple[int, ...]) -> Any:
    """Return an unfitted statsforecast model: ``autoets`` (with the longest season) or ``mstl``."""
    from statsforecast.models import MSTL, AutoETS  # noqa: PLC0415 - optional dev dependency

    if kind == "mstl":
        return MSTL(season_length=list(seasons), trend_forecaster=AutoETS(model="ZZN"))
    return AutoETS(season_length=max(seasons) if seasons else 1)


def rolling_statsforecast(
    case: Case, refit_every: int, kind: str
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return statsforecast's (mean, p90, p95) forecasts, shape (origins, horizon)."""
    n, tr, h = case.y.size, case.train, case.horizon
    mean = np.empty((n - tr, h))
    p90, p95 = np.empty_like(mean), np.empty_like(mean)
    model: Any = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, k in enumerate(range(tr, n)):
            hist = case.y[:k]
            if j % refit_every == 0:
                model = statsforecast_model(kind, case.seasons)
                model.fit(hist)
                out = model.predict(h, level=[80, 90])
            else:
                out = model.forward(y=hist, h=h, level=[80, 90])
            mean[j], p90[j], p95[j] = out["mean"], out["hi-80"], out["hi-90"]
    return np.maximum(mean, 0.0), p90, p95


def statsforecast_first_call_seconds() -> float:
    """Return the wall time of statsforecast's import and first fits (numba compile or cache load)."""
    t0 = time.perf_counter()
    z = 10.0 + np.arange(48, dtype=np.float64) % 8
    for kind, seasons in (("autoets", (8,)), ("mstl", (8,)), ("autoets", ())):
        model = statsforecast_model(kind, seasons)
        model.fit(z)
        model.predict(2, level=[80, 90])
        model.forward(y=z, h=2, level=[80, 90])
    return time.perf_counter() - t0


def rolling_naive(case: Case) -> FloatArray:
    n, tr, m = case.y.size, case.train, case.naive_period
    out = np.empty((n - tr, case.horizon))
    for j, k in enumerate(range(tr, n)):
        for h in range(case.horizon):
            back = m * (h // m + 1)
            out[j, h] = case.y[k + h - back]
    return out


def targets(case: Case) -> tuple[FloatArray, FloatArray]:
    """Return (actuals, mask) of shape (origins, horizon); mask False where the target is past the data."""
    n, tr = case.y.size, case.train
    act = np.full((n - tr, case.horizon), np.nan)
    for j, k in enumerate(range(tr, n)):
        stop = min(k + case.horizon, n)
        act[j, : stop - k] = case.y[k:stop]
    return act, ~np.isnan(act)


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def evaluate_ours(case: Case) -> dict[str, float | str]:
    """Return our MASE, the seasonal-naive MASE and our p90/p95 coverage on ``case`` (no baselines run)."""
    act, ok = targets(case)
    scale = mase_scale(case.y[: case.train], case.naive_period)
    mean, p90, p95 = rolling_ours(case)
    naive = rolling_naive(case)
    return {
        "trace": case.name,
        "seasons": ",".join(map(str, case.seasons)) or "none",
        "mase_ours": float(np.mean(np.abs(mean[ok] - act[ok])) / scale),
        "mase_seasonal_naive": float(np.mean(np.abs(naive[ok] - act[ok])) / scale),
        "cover_p90": float(np.mean(act[ok] <= p90[ok])),
        "cover_p95": float(np.mean(act[ok] <= p95[ok])),
    }


def evaluate(case: Case, repeats: int) -> dict[str, float | str]:
    refit_every = DemandForecaster(
        bucket_seconds=case.bucket_seconds, horizon_buckets=case.horizon, season_buckets=case.seasons
    ).refit_every
    act, ok = targets(case)
    scale = mase_scale(case.y[: case.train], case.naive_period)
    mean, p90, p95 = rolling_ours(case)
    sm = rolling_statsmodels(case, refit_every)
    naive = rolling_naive(case)

    def mase(pred: FloatArray) -> float:
        return float(np.mean(np.abs(pred[ok] - act[ok])) / scale)

    def fit_once_ours() -> None:
        fc = DemandForecaster(
            bucket_seconds=case.bucket_seconds, horizon_buckets=case.horizon, season_buckets=case.seasons
        )
        tr = case.train
        fc.seed(
            start=0.0, requests=case.y[:tr], prompt_tokens=case.prompt[:tr], output_tokens=case.output[:tr]
        )
        fc.forecast(now=tr * case.bucket_seconds)

    def fit_once_statsmodels() -> None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: PLC0415 - optional dev dependency

        season = max(case.seasons) if case.seasons else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExponentialSmoothing(
                case.y[: case.train],
                trend="add",
                damped_trend=True,
                seasonal="add" if season else None,
                seasonal_periods=season,
            )
            model.fit().forecast(case.horizon)

    sf: dict[str, float | str] = {}
    for kind in ("autoets", "mstl"):
        if kind == "mstl" and not case.seasons:
            sf.update({f"mase_{kind}": "n/a", f"cover_p90_{kind}": "n/a", f"cover_p95_{kind}": "n/a"})
            sf.update({f"seconds_{kind}": "n/a", f"fit_ms_{kind}": "n/a"})
            continue
        t0 = time.perf_counter()
        m_sf, p90_sf, p95_sf = rolling_statsforecast(case, refit_every, kind)
        sf[f"seconds_{kind}"] = time.perf_counter() - t0
        sf[f"mase_{kind}"] = mase(m_sf)
        sf[f"cover_p90_{kind}"] = float(np.mean(act[ok] <= p90_sf[ok]))
        sf[f"cover_p95_{kind}"] = float(np.mean(act[ok] <= p95_sf[ok]))

        def fit_once_sf(kind: str = kind) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = statsforecast_model(kind, case.seasons)
                model.fit(case.y[: case.train])
                model.predict(case.horizon, level=[80, 90])

        sf[f"fit_ms_{kind}"] = timed(fit_once_sf, max(1, repeats // 2)) * 1e3
    t_fit_ours = timed(fit_once_ours, repeats)
    t_fit_sm = timed(fit_once_statsmodels, repeats)
    t_ours = timed(lambda: rolling_ours(case), repeats)
    t_sm = timed(lambda: rolling_statsmodels(case, refit_every), max(1, repeats // 2))
    return {
        "trace": case.name,
        "buckets": f"{case.y.size} x {case.bucket_seconds}s",
        "train": case.train,
        "horizon": case.horizon,
        "seasons": ",".join(map(str, case.seasons)) or "none",
        "mase_ours": mase(mean),
        "mase_seasonal_naive": mase(naive),
        "mase_statsmodels": mase(sm),
        "cover_p90": float(np.mean(act[ok] <= p90[ok])),
        "cover_p95": float(np.mean(act[ok] <= p95[ok])),
        "seconds_ours": t_ours,
        "seconds_statsmodels": t_sm,
        "speedup": t_sm / t_ours,
        "us_per_origin_ours": t_ours / (case.y.size - case.train) * 1e6,
        "fit_ms_ours": t_fit_ours * 1e3,
        "fit_ms_statsmodels": t_fit_sm * 1e3,
        "fit_speedup": t_fit_sm / t_fit_ours,
        **sf,
    }


def first_call_seconds() -> float:
    """Return the wall time of the first forecaster use in this process (numba compile or cache load)."""
    t0 = time.perf_counter()
    fc = DemandForecaster(bucket_seconds=60, horizon_buckets=4, season_buckets=[8, 16])
    z = np.arange(40, dtype=np.float64) % 8
    fc.seed(start=0.0, requests=z, prompt_tokens=z, output_tokens=z)
    fc.observe(bucket_start=40 * 60.0, requests=1.0, prompt_tokens=1.0, output_tokens=1.0)
    fc.forecast(now=41 * 60.0)
    return time.perf_counter() - t0


def per_call_micros(*, seasons: tuple[int, ...], n: int = 3000) -> dict[str, float]:
    """Return microseconds per observe() (refits amortised), per forecast(), and per refit.

    Daemon defaults: 60 s buckets, 30-bucket horizon; a synthetic daily wave with Poisson noise.
    """
    rng = np.random.default_rng(0)
    longest = max(seasons) if seasons else 1440
    total = 2 * longest + n
    t = np.arange(total)
    y = rng.poisson(50 + 30 * np.sin(2 * np.pi * t / 1440)).astype(np.float64)
    fc = DemandForecaster(bucket_seconds=60, horizon_buckets=30, season_buckets=seasons)
    seed = 2 * longest
    fc.seed(start=0.0, requests=y[:seed], prompt_tokens=y[:seed] * 500, output_tokens=y[:seed] * 80)
    obs = fcast = 0.0
    for k in range(seed, total):
        t0 = time.perf_counter()
        fc.observe(bucket_start=k * 60.0, requests=y[k], prompt_tokens=y[k] * 500, output_tokens=y[k] * 80)
        t1 = time.perf_counter()
        fc.forecast(now=(k + 1) * 60.0 + 5.0)
        t2 = time.perf_counter()
        obs += t1 - t0
        fcast += t2 - t1
    refit = timed(fc.refit, 5)
    return {"observe_us": obs / n * 1e6, "forecast_us": fcast / n * 1e6, "refit_ms": refit * 1e3}


def daemon_cold(traces: Path) -> dict[str, float | str]:
    """Return per-day error and p90 coverage of the daemon's cold forecaster on ServeGen at 60 s buckets."""
    from scaler.core.policy import ModelPolicy  # noqa: PLC0415 - only this mode needs the simulator
    from scaler.sim import servegen  # noqa: PLC0415

    rates = servegen.load_servegen_rates(traces / "servegen-m-large", seed=0)
    counts = np.asarray(rates.counts, dtype=np.float64)
    n = counts.size // 60
    y = counts[: n * 60].reshape(n, 60).sum(axis=1)
    fc = DemandForecaster.from_policy(ModelPolicy(name="m-large"))
    h, k90 = fc.horizon_buckets, list(fc.levels).index(0.9)
    day = 86_400 // fc.bucket_seconds
    err, cover = np.zeros(n), np.zeros(n)
    for k in range(n):
        if k > 0:
            f = fc.forecast(now=k * 60.0)
            stop = min(k + h, n)
            act = y[k:stop]
            err[k] = np.mean(np.abs(f.rate_mean[: stop - k] * 60 - act))
            cover[k] = np.mean(act <= f.rate_quantiles[k90][: stop - k] * 60)
        fc.observe(bucket_start=k * 60.0, requests=y[k], prompt_tokens=y[k], output_tokens=y[k])
    scale = mase_scale(y, day)
    row: dict[str, float | str] = {"trace": "servegen-m-large, daemon forecaster cold, 60 s"}
    for d in range(n // day):
        part = slice(max(d * day, 1), (d + 1) * day)
        row[f"day{d + 1}_error"] = float(np.mean(err[part]) / scale)
        row[f"day{d + 1}_cover_p90"] = float(np.mean(cover[part]))
    row["days2+_error"] = float(np.mean(err[day:]) / scale)
    row["days2+_cover_p90"] = float(np.mean(cover[day:]))
    row["form"] = "seasonal" if fc.params[0, -1] > 0 else "level"
    return row


def print_table(rows: list[dict[str, float | str]], cols: list[tuple[str, str]]) -> None:
    """Print ``rows`` as a Markdown table of ``cols`` (name, format); strings print as they are."""

    def cell(value: float | str, fmt: str) -> str:
        return value if isinstance(value, str) else fmt.format(value)

    cells = [[c for c, _ in cols]] + [[cell(r[c], fmt) for c, fmt in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for n, row in enumerate(cells):
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> int:
    default = os.environ.get("SCALER_TRACES_DIR", str(REPO.parent / "shared" / "traces"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--traces", type=Path, default=Path(default), help="trace directory (default: %(default)s)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats (median; statsmodels half)")
    ap.add_argument(
        "--ours-only", action="store_true", help="our accuracy figures only: no baselines, timings"
    )
    ap.add_argument(
        "--daemon-cold", action="store_true", help="the daemon's forecaster cold on ServeGen at 60 s only"
    )
    args = ap.parse_args()
    if not args.traces.is_dir():
        print(f"error: trace directory {args.traces} not found (set --traces or SCALER_TRACES_DIR)")
        return 2
    if args.daemon_cold:
        row = daemon_cold(args.traces)
        for key, value in row.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
        if args.json:
            args.json.write_text(json.dumps({"daemon_cold": row}, indent=2))
        return 0
    y = load_servegen(args.traces)
    nan = np.full_like(y, np.nan)
    cases = [Case("servegen-m-large", y, nan, nan, 600, 1440, 6, (144,), 144)]
    for kind in ("conv", "code"):
        reqs, prompt, output = load_azure(args.traces, kind, 10)
        cases.append(Case(f"azure-2023-{kind}", reqs, prompt, output, 10, 240, 6, (), 1))
    if args.ours_only:
        ours = [evaluate_ours(c) for c in cases]
        print_table(
            ours,
            [("trace", "{}"), ("seasons", "{}"), ("mase_ours", "{:.4f}"), ("mase_seasonal_naive", "{:.4f}"),
             ("cover_p90", "{:.2%}"), ("cover_p95", "{:.2%}")],
        )  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"rows": ours}, indent=2))
        return 0
    first = first_call_seconds()
    first_sf = statsforecast_first_call_seconds()
    rows = [evaluate(c, args.repeats) for c in cases]
    cols = [
        ("trace", "{}"), ("seasons", "{}"), ("mase_ours", "{:.3f}"), ("mase_statsmodels", "{:.3f}"),
        ("mase_seasonal_naive", "{:.3f}"), ("cover_p90", "{:.1%}"), ("cover_p95", "{:.1%}"),
        ("seconds_ours", "{:.3f}"), ("seconds_statsmodels", "{:.2f}"), ("speedup", "{:.0f}x"),
        ("us_per_origin_ours", "{:.0f}"), ("fit_ms_ours", "{:.1f}"), ("fit_ms_statsmodels", "{:.0f}"),
        ("fit_speedup", "{:.0f}x"),
    ]  # fmt: skip
    print_table(rows, cols)
    sf_cols = [
        ("trace", "{}"), ("mase_ours", "{:.3f}"), ("mase_autoets", "{:.3f}"), ("mase_mstl", "{:.3f}"),
        ("cover_p90", "{:.1%}"), ("cover_p90_autoets", "{:.1%}"), ("cover_p90_mstl", "{:.1%}"),
        ("cover_p95", "{:.1%}"), ("cover_p95_autoets", "{:.1%}"), ("cover_p95_mstl", "{:.1%}"),
        ("seconds_ours", "{:.3f}"), ("seconds_autoets", "{:.2f}"), ("seconds_mstl", "{:.2f}"),
        ("fit_ms_ours", "{:.1f}"), ("fit_ms_autoets", "{:.0f}"), ("fit_ms_mstl", "{:.0f}"),
    ]  # fmt: skip
    print("\nstatsforecast (AutoETS, MSTL) in the same run:")
    print_table(rows, sf_cols)
    print(f"\nfirst forecaster call in this process (numba compile or cache load): {first:.2f} s")
    print(f"statsforecast import and first fits (numba compile or cache load): {first_sf:.2f} s")
    calls = {}
    for label, seasons in (("daily", (1440,)), ("daily+weekly", (1440, 10080))):
        calls[label] = c = per_call_micros(seasons=seasons)
        print(
            f"per call, 60 s buckets, 30-bucket horizon, {label} seasons: observe {c['observe_us']:.0f} us "
            f"(refits amortised), forecast {c['forecast_us']:.0f} us, one refit {c['refit_ms']:.1f} ms"
        )
    if args.json:
        report = {
            "first_call_seconds": first,
            "statsforecast_first_call_seconds": first_sf,
            "rows": rows,
            "per_call": calls,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
