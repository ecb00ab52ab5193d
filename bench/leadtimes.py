"""Learned lead times against fixed ones, with cold starts drawn from a wide distribution (prints figures).

The simulated cluster draws every replica's cold start from :class:`scaler.sim.coldstart.ColdStarts`
(default: lognormal with 5th-95th percentiles 1.5-8 min, seeded). For each guess an SRE might write
(120 s: too short, 300 s: the default, 600 s: too long) the daemon's controller runs twice: with the
guess fixed (``lead_times.learn: false``) and learning from it as the prior (``learn: true``: of the
pods' creation -> Ready it reads back, the policy's ``lifetime_quantile`` (default 0: the fastest
start seen) starts the replica lifetime and the p90 is what the cold-start coverage spans, both within
[guess/4, 4 x guess]; ``--lifetime-quantile 0.5`` starts it at the median, the previous default,
``0.9`` at the p90 for both, as before). Each line compares the two on cost and SLO attainment;
"at equal attainment" is the cheapest fixed guess whose attainment is at least the learned run's.
A tight serverless quota is where the cold start matters: the replicas must be up before the load,
spill-over cannot absorb it.

Workloads, read in place (``--traces``, else $SCALER_TRACES_DIR, else ../shared/traces): Azure LLM
2023 conv and code (per-request), the synthetic ramp and diurnal scenarios, and ServeGen m-large
days 2-3 (fluid, the forecaster seeded with day 1); every run starts warm as ``scaler simulate`` does.

    .venv/bin/python bench/leadtimes.py [--traces DIR] [--seeds 2] [--first-seed 0]
        [--json bench-leadtimes.json] [--only azure-code-quota2 --only 'servegen-days2-3-quota10$']
        [--lifetime-quantile 0.5] [--fixed 120 ...] [--prior 300 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.core.policy import ModelPolicy
from scaler.sim import servegen, traces
from scaler.sim import workload as wl
from scaler.sim.baselines import warm_replicas
from scaler.sim.coldstart import ColdStarts
from scaler.sim.engine import simulate
from scaler.sim.results import Summary
from scaler.sim.spillway import SpillwayController
from scaler.sim.synthetic import synthetic

DAY = 86_400
GUESSES = (120.0, 300.0, 600.0)  # what an SRE might write: too short, the default, too long


LIFETIME_QUANTILE: list[float | None] = [None]  # --lifetime-quantile (None: the policy default)
FIXED = list(GUESSES)  # --fixed: the guesses run fixed
PRIORS = list(GUESSES)  # --prior: the guesses learned from
FIRST_SEED = [0]  # --first-seed


def _policy(*, learn: bool, cold: float, bounds: dict[str, int]) -> ModelPolicy:
    lead: dict[str, object] = {"cold_start_seconds": cold, "learn": learn}
    if LIFETIME_QUANTILE[0] is not None:
        lead["lifetime_quantile"] = LIFETIME_QUANTILE[0]
    return ModelPolicy.model_validate(
        {
            "name": "llama-3.1-8b-instruct",
            "lead_times": lead,
            "bounds": bounds,
        }
    )


def _run(
    workload: wl.Workload | wl.RateWorkload,
    *,
    policy: ModelPolicy,
    cold_starts: ColdStarts,
    warmup: wl.RateWorkload | None,
) -> tuple[Summary, float, tuple[float, float] | None]:
    """Return the summary, the wall time and the last learned (coverage, typical) cold start of one run."""
    controller = SpillwayController(policy, workload)
    if warmup is not None:
        controller.warm_up(warmup)
    t0 = time.perf_counter()
    result = simulate(
        workload, controller, policy=policy, initial_replicas=warm_replicas(workload, policy=policy),
        cold_starts=cold_starts,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    end = controller.controller.lead_times(now=workload.duration)[0]
    learned = (end.learned, end.typical) if end.learned is not None else None
    return result.summary, wall, learned


def _row(name: str, summary: Summary, extra: str = "") -> str:
    return (
        f"  {name:<22} cost ${summary.cost.total:>9,.2f}  attainment {summary.slo_attainment:8.3%}  "
        f"serverless {summary.served_serverless / max(summary.requests, 1):6.1%}  "
        f"actions {summary.scaling_actions:>4}  {extra}"
    )


def compare(
    workload: wl.Workload | wl.RateWorkload,
    *,
    title: str,
    seeds: int,
    bounds: dict[str, int],
    draws: ColdStarts,
    warmup: wl.RateWorkload | None = None,
) -> dict[str, object]:
    """Run, for each guess, the guess fixed and learning from it; print and return the figures."""
    out: dict[str, object] = {"title": title, "bounds": bounds, "seeds": []}
    for seed in range(FIRST_SEED[0], FIRST_SEED[0] + seeds):
        seeded = dataclasses.replace(draws, seed=seed)
        print(f"{title}, bounds {bounds}, seed {seed}:", flush=True)
        fixed: dict[float, Summary] = {}
        learned: dict[float, tuple[Summary, tuple[float, float] | None]] = {}
        for cold in sorted(set(FIXED) | set(PRIORS)):
            for learn in [learn for learn, runs in ((False, FIXED), (True, PRIORS)) if cold in runs]:
                policy = _policy(learn=learn, cold=cold, bounds=bounds)
                run, wall, value = _run(workload, policy=policy, cold_starts=seeded, warmup=warmup)
                if learn:
                    learned[cold] = (run, value)
                    shown = (
                        f"ends at {value[0]:.0f} s coverage, {value[1]:.0f} s typical"
                        if value is not None
                        else "never learned"
                    )
                    print(_row(f"learned from {cold:.0f} s", run, f"{shown}, {wall:.1f} s wall"), flush=True)
                else:
                    fixed[cold] = run
                    print(_row(f"fixed {cold:.0f} s", run, f"{wall:.1f} s wall"), flush=True)
        rows: dict[str, object] = {}
        for cold, run in fixed.items():
            if cold not in learned:
                rows[f"fixed {cold}"] = {"cost": run.cost.total, "attainment": run.slo_attainment}
        for cold, (run, value) in learned.items():
            as_good = [(f.cost.total, c) for c, f in fixed.items() if f.slo_attainment >= run.slo_attainment]
            cheapest = min(as_good) if as_good else None
            base = fixed.get(cold)
            line = (
                f"prior {cold:.0f} s: "
                + (
                    f"learned vs fixed {run.cost.total / base.cost.total - 1:+.2%} cost, "
                    f"{(run.slo_attainment - base.slo_attainment) * 100:+.3f} attainment points; "
                    if base is not None
                    else ""
                )
                + (
                    f"vs the cheapest fixed guess at least as good ({cheapest[1]:.0f} s) "
                    f"{run.cost.total / cheapest[0] - 1:+.2%} cost"
                    if cheapest is not None
                    else "no fixed guess reaches its attainment"
                )
            )
            print(f"  => {line}")
            rows[str(cold)] = {
                "fixed": {"cost": base.cost.total, "attainment": base.slo_attainment} if base else None,
                "learned": {
                    "cost": run.cost.total,
                    "attainment": run.slo_attainment,
                    "value": value[0] if value is not None else None,
                    "typical": value[1] if value is not None else None,
                },
                "line": line,
            }
        out["seeds"].append({"seed": seed, "priors": rows})  # type: ignore[attr-defined]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", help="traces directory")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="the first cold-start seed run")
    parser.add_argument("--json", type=Path, default=Path("bench-leadtimes.json"))
    parser.add_argument("--skip-servegen", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY",
        help="run only rows whose key contains KEY (e.g. azure-code-quota2, servegen; KEY$: exactly KEY); "
        "repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--lifetime-quantile", type=float, default=None,
        help="lead_times.lifetime_quantile of the learning runs (default: the policy's; 0.9: the p90 for "
        "both, as before)",
    )  # fmt: skip
    parser.add_argument(
        "--fixed", action="append", type=float, metavar="SECONDS",
        help="guesses run fixed (repeatable; default 120, 300, 600; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--prior", action="append", type=float, metavar="SECONDS",
        help="guesses learned from (repeatable; default 120, 300, 600; 0: none)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    LIFETIME_QUANTILE[0] = args.lifetime_quantile
    FIRST_SEED[0] = args.first_seed
    FIXED[:] = GUESSES if args.fixed is None else [cold for cold in args.fixed if cold > 0]
    PRIORS[:] = GUESSES if args.prior is None else [cold for cold in args.prior if cold > 0]

    def wanted(key: str) -> bool:
        return not args.only or any(
            key == part[:-1] if part.endswith("$") else part in key for part in args.only
        )

    root = traces.traces_dir(args.traces, env=os.environ)
    draws = ColdStarts()
    out: dict[str, object] = {}
    for kind in ("conv", "code"):
        if not any(wanted(f"azure-{kind}-quota{q}") for q in (16, 2)):
            continue
        path = root / "azure-llm-2023" / f"AzureLLMInferenceTrace_{kind}.csv"
        workload = traces.load_azure(path).workload
        for quota in (16, 2):
            if not wanted(f"azure-{kind}-quota{quota}"):
                continue
            out[f"azure-{kind}-quota{quota}"] = compare(
                workload, title=f"Azure {kind}", seeds=args.seeds, bounds={"serverless_quota": quota},
                draws=draws,
            )  # fmt: skip
    if not args.skip_synthetic:
        for name in ("ramp", "diurnal"):
            if not any(wanted(f"{name}-quota{q}") for q in (16, 0)):
                continue
            scenario = synthetic(name, seed=0)
            for quota in (16, 0):
                if not wanted(f"{name}-quota{quota}"):
                    continue
                out[f"{name}-quota{quota}"] = compare(
                    scenario, title=f"synthetic {name}", seeds=args.seeds,
                    bounds={"serverless_quota": quota}, draws=draws,
                )  # fmt: skip
    if not args.skip_servegen and any(wanted(f"servegen-days2-3-quota{q}") for q in (100, 10)):
        rates = servegen.load_servegen_rates(root / "servegen-m-large", seed=0)
        day1, days23 = _cut(rates, 0, DAY), _cut(rates, DAY, 3 * DAY)
        for quota in (100, 10):
            if not wanted(f"servegen-days2-3-quota{quota}"):
                continue
            out[f"servegen-days2-3-quota{quota}"] = compare(
                days23, title="ServeGen m-large days 2-3 (fluid, seeded with day 1)", seeds=args.seeds,
                bounds={"max_replicas": 200, "serverless_quota": quota}, draws=draws, warmup=day1,
            )  # fmt: skip
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


def _cut(rates: wl.RateWorkload, start: int, stop: int) -> wl.RateWorkload:
    return wl.RateWorkload(
        name=f"{rates.name}[{start // DAY + 1}-{stop // DAY}d]",
        counts=rates.counts[start:stop],
        mean_prompt_tokens=rates.mean_prompt_tokens,
        mean_output_tokens=rates.mean_output_tokens,
    )


if __name__ == "__main__":
    raise SystemExit(main())
