"""Spillway against every baseline and the hindsight oracle on the real traces (prints figures; not a test).

Runs, from the traces directory (``--traces``, else $SCALER_TRACES_DIR, else ../shared/traces):

* the default scenario of ``scaler simulate`` (synthetic ``mixed``), per-request model;
* Azure LLM 2023 conv and code, per-request model, and the same traces through the fluid model
  (per-second counts, mean token sizes) to show how far the two models are apart;
* ServeGen m-large, fluid model: all 14 days with Spillway starting cold, and days 8-14 with
  Spillway's forecaster seeded with days 1-7 (history before the start, nothing from the future).

ServeGen's peak (~35,000 requests/min) needs ~100 default replicas, so the ServeGen runs use the
default policy with ``max_replicas`` 200 and ``serverless_quota`` 100; the Azure runs use the defaults.
Each table has Spillway (the daemon's controller), ``spillway-perfect`` (the same controller fed the
true future demand: :mod:`scaler.sim.perfect_forecast`), every baseline and the relaxed bound;
below it the tight oracle's lower and upper bounds (:mod:`scaler.sim.tight_oracle`, not for the
fluid copies of Azure), the split of Spillway's gap to the upper bound into forecast error
(Spillway minus perfect-forecast Spillway) and control, the check against Spillway's targets
(SLO attainment >= 99 %, cost <= 1.15x the oracle, cheaper than every baseline that reaches the
same attainment), and the wall and CPU time of each run. Every figure goes to ``--json``
(default bench-policies.json).

    .venv/bin/python bench/policies.py [--traces DIR] [--json OUT] [--skip-servegen]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from scaler.core.policy import ModelPolicy
from scaler.sim import report, servegen, traces
from scaler.sim import workload as wl
from scaler.sim.baselines import BASELINES, warm_replicas
from scaler.sim.engine import simulate
from scaler.sim.oracle import hindsight_oracle
from scaler.sim.perfect_forecast import PerfectForecaster
from scaler.sim.results import SimResult, Summary
from scaler.sim.spillway import SpillwayController
from scaler.sim.synthetic import DEFAULT_SCENARIO, synthetic
from scaler.sim.tight_oracle import TightOracle, tight_oracle

DAY = 86_400
TARGET_ATTAINMENT = 0.99
TARGET_RATIO = 1.15
PERFECT = "spillway-perfect"  # Spillway's controller fed the true future demand


def check_targets(spillway: Summary, baselines: list[Summary], oracle: Summary) -> list[str]:
    """Return one line per target saying whether Spillway reached it, and by how much it missed."""
    lines = []
    att = spillway.slo_attainment
    lines.append(
        f"SLO attainment {att:.3%} (target >= 99%): {'met' if att >= TARGET_ATTAINMENT else 'MISSED'}"
    )
    ratio = spillway.cost.total / oracle.cost.total if oracle.cost.total > 0 else float("inf")
    verdict = "met" if ratio <= TARGET_RATIO else f"MISSED by {ratio / TARGET_RATIO - 1:.1%}"
    lines.append(f"cost {ratio:.3f}x oracle (target <= {TARGET_RATIO}x): {verdict}")
    rivals = [b for b in baselines if b.slo_attainment >= att]
    dearer = [b.policy for b in rivals if b.cost.total <= spillway.cost.total]
    if not rivals:
        lines.append("no baseline reaches Spillway's attainment")
    elif dearer:
        lines.append(f"MISSED: as good and not dearer: {', '.join(dearer)}")
    else:
        names = ", ".join(b.policy for b in rivals)
        lines.append(f"cheaper than every baseline at the same attainment ({names}): met")
    return lines


def run_all(
    workload: wl.Workload | wl.RateWorkload,
    *,
    policy: ModelPolicy,
    title: str,
    console: Console,
    warmup: wl.Workload | wl.RateWorkload | None = None,
    tight: bool = True,
) -> dict[str, object]:
    """Run Spillway, every baseline and the oracle on ``workload``; print and return the figures."""
    results: list[SimResult] = []
    walls: dict[str, float] = {}
    cpus: dict[str, float] = {}  # CPU seconds: the figure that does not depend on what else the machine runs
    spillway = SpillwayController(policy, workload)
    if warmup is not None:
        spillway.warm_up(warmup)
    perfect = SpillwayController(  # the same controller, fed the true future demand
        policy,
        workload,
        name=PERFECT,
        forecaster=PerfectForecaster.from_workload(workload, policy=policy),
    )
    controllers = [spillway, perfect, *(make(policy, workload) for make in BASELINES.values())]
    initial = warm_replicas(workload, policy=policy)  # every trace is cut from a running service
    for controller in controllers:
        t0, c0 = time.perf_counter(), time.process_time()
        results.append(simulate(workload, controller, policy=policy, initial_replicas=initial))
        walls[controller.name] = time.perf_counter() - t0
        cpus[controller.name] = time.process_time() - c0
    t0 = time.perf_counter()
    oracle = hindsight_oracle(workload, policy=policy, initial_replicas=initial).summary
    walls["oracle"] = time.perf_counter() - t0
    summaries = [r.summary for r in results]
    console.print(report.render_table(summaries, oracle=oracle, title=title))
    checks = check_targets(summaries[0], summaries[2:], oracle)
    tight_figures: dict[str, object] = {}
    if tight:
        t0 = time.perf_counter()
        found = tight_oracle(workload, policy=policy, initial_replicas=initial)
        walls["tight-oracle"] = time.perf_counter() - t0
        checks += tight_lines(summaries[0], summaries[1], found)
        upper = found.upper.summary if found.upper is not None else None
        tight_figures = {
            "tight_lower": found.lower,
            "tight_lower_optimal": found.optimal,
            "tight_upper": upper.cost.total if upper is not None else None,
            "tight_upper_attainment": upper.slo_attainment if upper is not None else None,
            "ceiling": found.feasibility.ceiling,
        }
    for line in checks:
        console.print(f"  {line}", markup=False)
    console.print("  wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in walls.items()), markup=False)
    console.print("  CPU time: " + ", ".join(f"{k} {v:.1f} s" for k, v in cpus.items()), markup=False)
    doc = json.loads(report.to_json(summaries, oracle=oracle, workload=workload.name))
    return {
        **doc,
        "title": title,
        "wall_seconds": walls,
        "cpu_seconds": cpus,
        "targets": checks,
        **tight_figures,
    }


def tight_lines(spillway: Summary, perfect: Summary, found: TightOracle) -> list[str]:
    """Return the tight oracle's bounds and the split of Spillway's gap to it: forecast vs control."""
    lines = [f"tight oracle: lower bound ${found.lower:,.2f} ({'optimal' if found.optimal else 'bound'})"]
    if found.upper is None:
        return [*lines, "tight oracle: no repaired schedule met the SLO (no upper bound)"]
    upper = found.upper.summary
    lines.append(f"tight oracle: upper bound ${upper.cost.total:,.2f} at {upper.slo_attainment:.3%}")
    ratio = spillway.cost.total / upper.cost.total
    verdict = "met" if ratio <= TARGET_RATIO else f"MISSED by {ratio / TARGET_RATIO - 1:.1%}"
    lines.append(f"cost {ratio:.3f}x the tight oracle's upper bound (target <= {TARGET_RATIO}x): {verdict}")
    gap = spillway.cost.total - upper.cost.total
    forecast = spillway.cost.total - perfect.cost.total
    lines.append(
        f"gap to the tight upper bound ${gap:,.2f}: forecast error ${forecast:,.2f} "
        f"(perfect-forecast Spillway ${perfect.cost.total:,.2f} at {perfect.slo_attainment:.3%}), "
        f"control ${gap - forecast:,.2f}"
    )
    return lines


def fluid_gap(per_request: dict[str, object], fluid: dict[str, object]) -> list[str]:
    """Return per-policy lines comparing the fluid model's cost and attainment with the per-request one."""
    lines = []
    pairs = zip(per_request["policies"], fluid["policies"], strict=True)  # type: ignore[call-overload]
    for a, b in pairs:
        cost_gap = b["cost"]["total"] / a["cost"]["total"] - 1 if a["cost"]["total"] else 0.0
        att_gap = (b["slo_attainment"] - a["slo_attainment"]) * 100
        lines.append(f"{a['policy']:<16} cost {cost_gap:+.1%}, attainment {att_gap:+.2f} points")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", help="traces directory")
    parser.add_argument("--json", type=Path, default=Path("bench-policies.json"))
    parser.add_argument("--skip-servegen", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = traces.traces_dir(args.traces, env=os.environ)
    console = Console(width=220)
    out: dict[str, object] = {}
    policy = ModelPolicy(name="llama-3.1-8b-instruct")
    default = synthetic(DEFAULT_SCENARIO, seed=args.seed)
    out["default-scenario"] = run_all(
        default, policy=policy, title=f"default scenario ({DEFAULT_SCENARIO})", console=console
    )
    for kind in ("conv", "code"):
        path = root / "azure-llm-2023" / f"AzureLLMInferenceTrace_{kind}.csv"
        workload = traces.load_azure(path).workload
        per_request = run_all(workload, policy=policy, title=f"Azure {kind} (per-request)", console=console)
        fluid = run_all(
            workload.as_rates(), policy=policy, title=f"Azure {kind} (fluid)", console=console, tight=False
        )
        console.print(f"fluid vs per-request on Azure {kind}:")
        for line in fluid_gap(per_request, fluid):
            console.print(f"  {line}", markup=False)
        out[f"azure-{kind}"] = per_request
        out[f"azure-{kind}-fluid"] = fluid
    if not args.skip_servegen:
        big = ModelPolicy.model_validate(
            {"name": "m-large", "bounds": {"max_replicas": 200, "serverless_quota": 100}}
        )
        t0 = time.perf_counter()
        rates = servegen.load_servegen_rates(root / "servegen-m-large", seed=args.seed)
        console.print(
            f"ServeGen rates loaded in {time.perf_counter() - t0:.1f} s: {rates.requests:,} requests"
        )
        out["servegen-14d-cold"] = run_all(
            rates, policy=big, title="ServeGen m-large, 14 days, Spillway cold (fluid)", console=console
        )
        history = wl.RateWorkload(
            name=rates.name,
            counts=rates.counts[: 7 * DAY],
            mean_prompt_tokens=rates.mean_prompt_tokens,
            mean_output_tokens=rates.mean_output_tokens,
        )
        second_week = wl.RateWorkload(
            name=f"{rates.name} days 8-14",
            counts=rates.counts[7 * DAY :],
            mean_prompt_tokens=rates.mean_prompt_tokens,
            mean_output_tokens=rates.mean_output_tokens,
        )
        out["servegen-week2-seeded"] = run_all(
            second_week,
            policy=big,
            title="ServeGen m-large, days 8-14, Spillway seeded with days 1-7 (fluid)",
            console=console,
            warmup=history,
        )
        walls = out["servegen-14d-cold"]["wall_seconds"]  # type: ignore[index]
        cpus = out["servegen-14d-cold"]["cpu_seconds"]  # type: ignore[index]
        console.print(
            f"14-day ServeGen through Spillway: {walls['spillway']:.1f} s wall, {cpus['spillway']:.1f} s CPU "
            "(target < 120 s)"
        )
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
