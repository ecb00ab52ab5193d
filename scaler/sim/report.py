"""Report of a simulation: a table (rich), every figure as JSON, and a plot (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scaler.sim.results import SimResult, Summary

if TYPE_CHECKING:
    from rich.table import Table

JSON_VERSION = 1


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value < 1.0:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def _triple(a: float, b: float, c: float) -> str:
    return " / ".join(_seconds(v) for v in (a, b, c))


def cost_ratio(summary: Summary, oracle: Summary | None) -> float | None:
    """Return ``summary``'s total cost over the oracle's, or None without an oracle (or a free one)."""
    if oracle is None or oracle.cost.total <= 0:
        return None
    return summary.cost.total / oracle.cost.total


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2%}"


def render_table(
    results: Sequence[Summary],
    *,
    oracle: Summary | None,
    title: str | None = None,
    as_run: Summary | None = None,
) -> Table:
    """Return a rich Table: the "as run" row (if given) first, one row per policy, the oracle's row last.

    Figures the row's source cannot know (NaN, e.g. queue waits of a recorded run) show as "-".

    Columns: total cost, cost / oracle, SLO attainment, p50/p95/p99 queue wait and TTFT, share
    served by serverless, idle replica-hours, scaling actions.
    """
    from rich.table import Table  # noqa: PLC0415 - the [sim] extra: the daemon imports this module without it

    table = Table(title=title, title_justify="left")
    table.add_column("policy", style="bold")
    table.add_column("cost", justify="right")
    table.add_column("x oracle", justify="right")
    table.add_column("SLO met", justify="right")
    table.add_column("wait p50/p95/p99", justify="right")
    table.add_column("TTFT p50/p95/p99", justify="right")
    table.add_column("serverless", justify="right")
    table.add_column("idle replica-h", justify="right")
    table.add_column("actions", justify="right")
    rows = [*([as_run] if as_run is not None else []), *results, *([oracle] if oracle is not None else [])]
    for row in rows:
        ratio = cost_ratio(row, oracle)
        dropped = f" ({row.dropped:,} dropped)" if row.dropped else ""
        table.add_row(
            row.policy,
            _money(row.cost.total),
            "-" if ratio is None else f"{ratio:.2f}",
            f"{_share(row.slo_attainment)}{dropped}",
            _triple(row.wait_p50, row.wait_p95, row.wait_p99),
            _triple(row.ttft_p50, row.ttft_p95, row.ttft_p99),
            f"{row.serverless_share:.1%}",
            "-" if math.isnan(row.idle_replica_hours) else f"{row.idle_replica_hours:,.1f}",
            f"{row.scaling_actions:,}",
        )
    return table


def _finite(value: object) -> object:
    """Return ``value`` with NaN/inf floats (anywhere inside) replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(
    results: Sequence[Summary], *, oracle: Summary | None, workload: str = "", as_run: Summary | None = None
) -> str:
    """Return a JSON document holding every figure of every row (NaN written as null).

    Shape: ``{"version", "workload", "policies": [row...], "oracle": row | null}``, each row being
    :meth:`Summary.as_dict` plus ``cost_vs_oracle``; with ``as_run``, also ``"as_run": row``.
    """

    def row(summary: Summary) -> dict[str, object]:
        return {**summary.as_dict(), "cost_vs_oracle": cost_ratio(summary, oracle)}

    doc = {
        "version": JSON_VERSION,
        "workload": workload or (results[0].workload if results else ""),
        "policies": [row(s) for s in results],
        "oracle": row(oracle) if oracle is not None else None,
    }
    if as_run is not None:
        doc["as_run"] = row(as_run)
    return json.dumps(_finite(doc), indent=2, allow_nan=False)


def plot(results: Sequence[SimResult], *, path: Path, title: str | None = None) -> None:
    """Write a PNG of three stacked panels sharing the time axis to ``path``.

    Panels: arrival rate (req/s); capacity per policy (replicas ready solid, standby dashed,
    serverless instances dotted); SLO misses per minute per policy. Raises OSError if the file
    cannot be written, ValueError when there is nothing to plot.
    """
    if not results:
        raise ValueError("plot: no results to plot")
    import matplotlib  # noqa: PLC0415 - heavy import, only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    first = results[0].timeline
    hours = first.t / 3600.0
    use_hours = hours.shape[0] > 0 and hours[-1] >= 3.0
    scale, unit = (3600.0, "h") if use_hours else (60.0, "min")
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(12, 9), height_ratios=[1, 2, 1.3])
    try:
        load_ax, cap_ax, miss_ax = axes
        load_ax.plot(first.t / scale, first.arrival_rate, color="black", linewidth=0.9)
        load_ax.set_ylabel("arrivals (req/s)")
        load_ax.set_title(title or f"{results[0].summary.workload}: load, capacity and SLO misses")
        colours = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if c != "#7f7f7f"]
        for k, result in enumerate(results):
            tl = result.timeline
            name = result.summary.policy
            # the oracle in black, Spillway (first) bold, baselines thinner so the two stand out
            colour = "black" if name == "oracle" else colours[k % len(colours)]
            width = 2.0 if k == 0 else 1.0
            alpha = 1.0 if k == 0 or name == "oracle" else 0.75
            style = {"color": colour, "alpha": alpha}
            x = tl.t / scale
            cap_ax.plot(x, tl.replicas_ready, linewidth=width, label=f"{name}", **style)
            if tl.standby_ready.any():
                cap_ax.plot(x, tl.standby_ready, linestyle="--", linewidth=width * 0.7, **style)
            if tl.serverless_instances.any():
                cap_ax.plot(x, tl.serverless_instances, linestyle=":", linewidth=width, **style)
            per_minute = tl.slo_misses * (60.0 / tl.step)
            miss_ax.plot(x, per_minute, linewidth=width, label=name, **style)
        cap_ax.set_ylabel("instances")
        cap_ax.plot([], [], color="grey", label="replicas ready (solid)")
        cap_ax.plot([], [], color="grey", linestyle="--", label="warm standby (dashed)")
        cap_ax.plot([], [], color="grey", linestyle=":", label="serverless instances (dotted)")
        cap_ax.legend(loc="upper left", fontsize="small", ncol=3)
        miss_ax.set_ylabel("SLO misses / min")
        miss_ax.set_yscale("symlog", linthresh=10.0)  # a few misses stay visible next to a burst of thousands
        miss_ax.set_xlabel(f"time ({unit})")
        miss_ax.legend(loc="upper left", fontsize="small", ncol=3)
        for ax in axes:
            ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
