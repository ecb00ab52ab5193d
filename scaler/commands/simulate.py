"""`scaler simulate`: replay a workload through Spillway, every baseline and the hindsight oracle."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scaler.core.policy import ModelPolicy, PolicyFile
from scaler.core.policy_file import PolicyError, load_policy_file
from scaler.sim import report, servegen, synthetic, traces
from scaler.sim import workload as wl
from scaler.sim.baselines import BASELINES, opening_instances, peak_instances
from scaler.sim.engine import simulate
from scaler.sim.oracle import hindsight_oracle
from scaler.sim.protocol import Controller
from scaler.sim.results import SimResult
from scaler.sim.spillway import SpillwayController

if TYPE_CHECKING:  # rich and matplotlib come with the [sim] extra, which the daemon's image leaves out
    from rich.console import Console

DEFAULT_POLICY = Path("policies/default.yaml")
PROGRESS_MIN_REQUESTS = 200_000  # show a progress bar only for runs at least this large

DESCRIPTION = """\
Replay a workload through Spillway's planner, the baselines and the hindsight oracle (the cheapest
schedule that meets the SLO knowing the future), in virtual time, and print what each would cost
and how often it would miss the latency SLO.

Without --trace it runs a bundled synthetic scenario. Without --policy it reads policies/default.yaml
from the current directory, or, when that file is absent, the built-in policy defaults (the same
figures). Per-request simulation is used for request traces (Azure, synthetic); ServeGen rate files
and --fluid use the per-second fluid model. Every policy and the oracle start warm, with the replicas
the opening minute keeps busy (a trace is cut from a running service); --cold-start starts them from
min_replicas instead.
"""

EPILOG = """\
Examples:
  # The bundled scenario with the default policy, against every baseline
  scaler simulate

  # A real trace, only two baselines, with a plot and every figure as JSON
  scaler simulate --trace ../shared/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv \\
      --baselines hpa,serverless-only --plot conv.png --json conv.json

  # Two weeks of ServeGen rates (fluid model), your own policy file, one of its models
  scaler simulate --trace ../shared/traces/servegen-m-large --policy my.yaml --model llama-70b
"""


def missing_extra(*, plot: bool) -> str | None:
    """Return a one-line error naming the [sim] extra when rich (or, for ``plot``, matplotlib) is absent."""
    try:
        import rich  # noqa: F401, PLC0415

        if plot:
            import matplotlib  # noqa: F401, PLC0415
    except ImportError as exc:
        return (
            f"error: scaler simulate needs {exc.name or 'rich'}, from the 'sim' extra: "
            "pip install 'spillway-scaler[sim]'"
        )
    return None


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line and the command exits 1."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="Replay a workload through Spillway, the baselines and the hindsight oracle",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--scenario", metavar="NAME", help=f"synthetic scenario: {', '.join(synthetic.SCENARIOS)}"
    )
    source.add_argument("--trace", type=Path, metavar="PATH", help="Azure CSV file or ServeGen directory")
    parser.add_argument(
        "--trace-format",
        choices=("azure", "servegen"),
        help="format of --trace (default: servegen for a directory, azure for a file)",
    )
    parser.add_argument("--policy", type=Path, metavar="FILE", help=f"policy file (default {DEFAULT_POLICY})")
    parser.add_argument("--model", metavar="NAME", help="which model of the policy file (default: the first)")
    parser.add_argument(
        "--baselines",
        metavar="LIST",
        default=",".join(BASELINES),
        help=f"comma-separated baselines, or 'none' (default: all: {','.join(BASELINES)})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="simulate only the first SECONDS of the workload (default: all of it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic and ServeGen arrivals")
    parser.add_argument(
        "--fluid", action="store_true", help="use the per-second fluid model for any workload"
    )
    parser.add_argument("--plot", type=Path, metavar="OUT", help="write a PNG plot (only when given)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure as JSON")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="start every policy from min_replicas (default: warm, with the replicas the opening "
        "minute keeps busy, as a trace cut from a running service would)",
    )
    parser.set_defaults(func=run)


def select_policy(path: Path | None, model: str | None) -> ModelPolicy:
    """Return the chosen model's policy; raises UsageError or PolicyError (with its problems)."""
    if path is None and DEFAULT_POLICY.is_file():
        path = DEFAULT_POLICY
    if path is None:
        policies = PolicyFile(models=[ModelPolicy(name="llama-3.1-8b-instruct")])
    else:
        if not path.is_file():
            raise UsageError(f"--policy {path}: no such file")
        policies = load_policy_file(path)
    if model is None:
        return policies.models[0]
    for candidate in policies.models:
        if candidate.name == model:
            return candidate
    names = ", ".join(m.name for m in policies.models)
    raise UsageError(f"--model {model}: not in the policy file (it has: {names})")


def select_baselines(spec: str) -> list[str]:
    """Return the baseline names in ``spec`` (comma list, 'all' or 'none'); raises UsageError."""
    if spec.strip() in ("", "none"):
        return []
    if spec.strip() == "all":
        return list(BASELINES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise UsageError(f"--baselines: unknown {', '.join(unknown)} (choose from {', '.join(BASELINES)})")
    return list(dict.fromkeys(names))


def to_rates(workload: wl.Workload) -> wl.RateWorkload:
    """Return ``workload`` as per-second arrival counts with its mean token sizes (for the fluid model)."""
    seconds = max(1, int(np.ceil(workload.duration)))
    idx = np.minimum(workload.arrivals.astype(np.int64), seconds - 1)
    counts = np.bincount(idx, minlength=seconds).astype(np.float64)
    n = max(workload.requests, 1)
    return wl.RateWorkload(
        name=workload.name,
        counts=counts,
        mean_prompt_tokens=float(workload.prompt_tokens.sum()) / n,
        mean_output_tokens=float(workload.output_tokens.sum()) / n,
    )


def truncate(workload: wl.Workload | wl.RateWorkload, seconds: float) -> wl.Workload | wl.RateWorkload:
    """Return the first ``seconds`` of ``workload`` (all of it if shorter); raises UsageError if <= 0."""
    if not seconds > 0:
        raise UsageError(f"--duration {seconds:g}: must be > 0 seconds")
    if seconds >= workload.duration:
        return workload
    if isinstance(workload, wl.RateWorkload):
        return dataclasses.replace(
            workload,
            name=f"{workload.name} first {seconds:g} s",
            counts=workload.counts[: max(1, math.ceil(seconds))],
        )
    keep = int(np.searchsorted(workload.arrivals, seconds, side="left"))
    return wl.Workload(
        name=f"{workload.name} first {seconds:g} s",
        arrivals=workload.arrivals[:keep],
        prompt_tokens=workload.prompt_tokens[:keep],
        output_tokens=workload.output_tokens[:keep],
        duration=float(seconds),
    )


def load_trace(
    trace: Path, *, fmt: str | None, seed: int, warn: Callable[[str], None]
) -> wl.Workload | wl.RateWorkload:
    """Return the trace at ``trace`` (``fmt`` azure/servegen, or guessed); raises UsageError if unusable."""
    if not trace.exists():
        raise UsageError(f"--trace {trace}: no such file or directory")
    fmt = fmt or ("servegen" if trace.is_dir() else "azure")
    if fmt == "servegen" and not trace.is_dir():
        raise UsageError(f"--trace {trace}: a ServeGen trace is a directory")
    if fmt == "azure" and trace.is_dir():
        raise UsageError(f"--trace {trace}: an Azure trace is a CSV file, not a directory")
    try:
        if fmt == "servegen":
            return servegen.load_servegen_rates(trace, seed=seed)
        loaded = traces.load_azure(trace)
    except (traces.TraceError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    for problem in loaded.problems[:5]:
        warn(f"warning: {trace}:{problem.line}: {problem.message} (row skipped)")
    if len(loaded.problems) > 5:
        warn(f"warning: {trace}: {len(loaded.problems) - 5} more rows skipped")
    return loaded.workload


def load_workload(args: argparse.Namespace, *, warn: Callable[[str], None]) -> wl.Workload | wl.RateWorkload:
    """Return the workload the flags name (scenario or trace, cut and converted as asked).

    Raises UsageError for an unknown scenario or a missing or unusable trace.
    """
    workload: wl.Workload | wl.RateWorkload
    if args.trace is None:
        name = args.scenario or synthetic.DEFAULT_SCENARIO
        if name not in synthetic.SCENARIOS:
            raise UsageError(f"--scenario {name}: unknown (choose from {', '.join(synthetic.SCENARIOS)})")
        workload = synthetic.synthetic(name, seed=args.seed)
    else:
        workload = load_trace(args.trace, fmt=args.trace_format, seed=args.seed, warn=warn)
    if args.duration is not None:
        workload = truncate(workload, args.duration)
    if args.fluid and isinstance(workload, wl.Workload):
        workload = to_rates(workload)
    return workload


def check_capacity(
    workload: wl.Workload | wl.RateWorkload, *, policy: ModelPolicy, warn: Callable[[str], None]
) -> None:
    """Warn when the workload's busiest minute needs more instances than the policy can ever run."""
    need = peak_instances(workload, policy=policy)
    bounds = policy.bounds
    most = bounds.max_replicas + bounds.serverless_quota
    if need > most:
        warn(
            f"warning: the busiest minute needs ~{need:.0f} instances but policy {policy.name} allows at "
            f"most {most} (max_replicas {bounds.max_replicas} + serverless_quota {bounds.serverless_quota}): "
            "every policy will drop requests, and the oracle (which ignores the quota) is no fair yardstick"
        )


@contextlib.contextmanager
def _progress(enabled: bool, console: Console) -> Iterator[Callable[[str], Callable[[float], None]] | None]:
    """Yield a factory of per-run progress callbacks (None when no bar is shown)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    bar = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def task(name: str) -> Callable[[float], None]:
        tid = bar.add_task(name, total=1.0)
        return lambda done: bar.update(tid, completed=done)

    with bar:
        yield task


def controllers(
    policy: ModelPolicy, workload: wl.Workload | wl.RateWorkload, names: Sequence[str]
) -> list[Controller]:
    """Return Spillway's controller followed by the named baselines, built for ``workload``."""
    built: list[Controller] = [SpillwayController(policy)]
    built.extend(BASELINES[n](policy, workload) for n in names)
    return built


def warm_start(workload: wl.Workload | wl.RateWorkload, *, policy: ModelPolicy) -> int:
    """Return the replicas ready at t=0 for a warm start: what the opening minute keeps busy, in bounds."""
    need = math.ceil(opening_instances(workload, policy=policy) - 1e-9)
    bounds = policy.bounds
    return min(max(need, bounds.min_replicas), bounds.max_replicas)


def run(args: argparse.Namespace) -> int:
    """Run the simulation for the parsed ``args``; return the exit code (1 on bad input or no [sim] extra)."""
    missing = missing_extra(plot=args.plot is not None)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    from rich.console import Console  # noqa: PLC0415

    out = Console()
    if not out.is_terminal:
        out = Console(width=220)  # a pipe or file: do not squeeze the table into 80 columns
    err = Console(stderr=True)

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        policy = select_policy(args.policy, args.model)
        names = select_baselines(args.baselines)
        workload = load_workload(args, warn=warn)
    except PolicyError as exc:
        warn(f"error: --policy {args.policy}: invalid policy file")
        for problem in exc.problems:
            warn(f"  {problem}")
        return 1
    except UsageError as exc:
        warn(f"error: {exc}")
        return 1
    check_capacity(workload, policy=policy, warn=warn)
    initial = None if args.cold_start else warm_start(workload, policy=policy)
    show = not args.no_progress and err.is_terminal and workload.requests >= PROGRESS_MIN_REQUESTS
    results: list[SimResult] = []
    with _progress(show, err) as progress:
        for controller in controllers(policy, workload, names):
            hook = progress(controller.name) if progress is not None else None
            results.append(
                simulate(workload, controller, policy=policy, on_progress=hook, initial_replicas=initial)
            )
        oracle = hindsight_oracle(workload, policy=policy, initial_replicas=initial)
    summaries = [r.summary for r in results]
    kind = "fluid" if isinstance(workload, wl.RateWorkload) else "per-request"
    title = (
        f"{workload.name}: {workload.requests:,} requests over {workload.duration / 3600:.1f} h "
        f"({kind} model), policy {policy.name}, SLO {policy.slo.attainment:.0%} within target"
    )
    out.print(report.render_table(summaries, oracle=oracle.summary, title=title))
    try:
        if args.json is not None:
            args.json.write_text(
                report.to_json(summaries, oracle=oracle.summary, workload=workload.name) + "\n"
            )
            warn(f"wrote {args.json}")
        if args.plot is not None:
            report.plot([*results, oracle], path=args.plot, title=title)
            warn(f"wrote {args.plot}")
    except OSError as exc:
        warn(f"error: cannot write output: {exc}")
        return 1
    return 0
