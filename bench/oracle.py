"""The oracles on the default scenario and the real traces: relaxed bound, tight lower and upper bounds, time.

Runs, from the traces directory (``--traces``, else $SCALER_TRACES_DIR, else ../shared/traces):

* the default scenario (synthetic ``mixed``, per-request model), default policy;
* Azure LLM 2023 conv and code (per-request model), default policy;
* ServeGen m-large, 14 days (fluid model), default policy with ``max_replicas`` 200 and
  ``serverless_quota`` 100 (as bench/policies.py).

Every run starts warm as ``scaler simulate`` does. Per trace it prints the relaxed bound
(:func:`scaler.sim.oracle.hindsight_oracle`), the tight oracle's lower bound (HiGHS's proven bound
on the coarse MILP) and upper bound (the cheapest replay through the cluster model that met the SLO,
with its attainment and the replays it took), their ratio, the attainable ceiling, and the wall time
of each part. ``--lp`` also solves the LP relaxation. :func:`oracle_figures` is what
bench/policies.py can call for its rows.

    .venv/bin/python bench/oracle.py [--traces DIR] [--json OUT] [--skip-servegen] [--lp]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaler.core.policy import ModelPolicy  # noqa: E402
from scaler.sim import servegen, synthetic, traces  # noqa: E402
from scaler.sim import workload as wl  # noqa: E402
from scaler.sim.baselines import warm_replicas  # noqa: E402
from scaler.sim.oracle import hindsight_oracle  # noqa: E402
from scaler.sim.tight_oracle import tight_oracle  # noqa: E402


def oracle_figures(
    workload: wl.Workload | wl.RateWorkload, *, policy: ModelPolicy, initial: int | None, lp: bool = False
) -> dict[str, object]:
    """Return the relaxed bound, the tight oracle's bounds and their wall times for one workload."""
    t0 = time.perf_counter()
    relaxed = hindsight_oracle(workload, policy=policy, initial_replicas=initial).summary
    t1 = time.perf_counter()
    tight = tight_oracle(workload, policy=policy, initial_replicas=initial, with_lp=lp)
    t2 = time.perf_counter()
    upper = tight.upper.summary if tight.upper is not None else None
    return {
        "workload": workload.name,
        "requests": workload.requests,
        "relaxed_bound": relaxed.cost.total,
        "relaxed_seconds": t1 - t0,
        "tight_lower": tight.lower,
        "tight_lower_optimal": tight.optimal,
        "lp_relaxation": tight.lp if lp else None,
        "tight_upper": upper.cost.total if upper is not None else None,
        "tight_upper_attainment": upper.slo_attainment if upper is not None else None,
        "tight_upper_by_round": [(r.summary.cost.total, r.summary.slo_attainment) for r in tight.replays],
        "replays": len(tight.replays),
        "upper_over_lower": tight.gap,
        "step_seconds": tight.step,
        "ceiling": tight.feasibility.ceiling,
        "goal": tight.feasibility.judged_goal,
        "tight_seconds": t2 - t1,
    }


def _money(value: object) -> str:
    return f"${value:,.2f}" if isinstance(value, float) else "none met the SLO"


def print_row(name: str, fig: dict[str, object]) -> None:
    """Print one trace's figures as a Markdown table row."""
    upper = fig["tight_upper"]
    att = fig["tight_upper_attainment"]
    ratio = fig["upper_over_lower"]
    cells = [
        name,
        f"{fig['requests']:,}",
        f"{_money(fig['relaxed_bound'])} ({fig['relaxed_seconds']:.1f} s)",
        _money(fig["tight_lower"]) + ("" if fig["tight_lower_optimal"] else " (time limit)"),
        f"{_money(upper)} at {att:.2%}" if isinstance(att, float) else _money(upper),
        f"{ratio:.3f}" if isinstance(ratio, float) and math.isfinite(ratio) else "-",
        f"{fig['ceiling']:.2%}",
        f"{fig['tight_seconds']:.1f} s ({fig['replays']} replays, {fig['step_seconds']:.0f} s steps)",
    ]
    if fig["lp_relaxation"] is not None:
        cells.insert(4, _money(fig["lp_relaxation"]))
    print("| " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    default = os.environ.get("SCALER_TRACES_DIR", str(REPO.parent / "shared" / "traces"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--traces", type=Path, default=Path(default), help="trace directory (default: %(default)s)"
    )
    ap.add_argument("--json", type=Path, default=Path("bench-oracle.json"), help="figures as JSON")
    ap.add_argument("--skip-servegen", action="store_true", help="skip the 14-day ServeGen run")
    ap.add_argument("--lp", action="store_true", help="also solve the LP relaxation")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic and ServeGen arrivals")
    args = ap.parse_args()
    if not args.traces.is_dir():
        print(f"error: trace directory {args.traces} not found (set --traces or SCALER_TRACES_DIR)")
        return 2
    policy = ModelPolicy(name="llama-3.1-8b-instruct")
    head = ["trace", "requests", "relaxed bound (time)", "tight lower"]
    head += ["LP relaxation"] if args.lp else []
    head += ["tight upper (attainment)", "upper / lower", "ceiling", "tight oracle time"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    out: dict[str, object] = {}
    runs: list[tuple[str, wl.Workload | wl.RateWorkload, ModelPolicy]] = [
        ("default scenario (mixed, per-request)", synthetic.synthetic("mixed", seed=args.seed), policy)
    ]
    for kind in ("conv", "code"):
        path = args.traces / "azure-llm-2023" / f"AzureLLMInferenceTrace_{kind}.csv"
        runs.append((f"Azure {kind} (per-request)", traces.load_azure(path).workload, policy))
    for name, workload, pol in runs:
        out[name] = fig = oracle_figures(
            workload, policy=pol, initial=warm_replicas(workload, policy=pol), lp=args.lp
        )
        print_row(name, fig)
    if not args.skip_servegen:
        big = ModelPolicy.model_validate(
            {"name": "m-large", "bounds": {"max_replicas": 200, "serverless_quota": 100}}
        )
        rates = servegen.load_servegen_rates(args.traces / "servegen-m-large", seed=args.seed)
        name = "ServeGen m-large 14 days (fluid)"
        initial = warm_replicas(rates, policy=big)
        out[name] = fig = oracle_figures(rates, policy=big, initial=initial, lp=args.lp)
        print_row(name, fig)
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
