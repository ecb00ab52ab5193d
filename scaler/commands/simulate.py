"""`scaler simulate`: replay a workload through Spillway, every baseline and the hindsight oracle."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from scaler.adapters.kafka_range import replay_from_kafka
from scaler.commands.export import add_range_flags, parse_time, range_settings
from scaler.core.policy import ModelPolicy, PolicyFile
from scaler.core.policy_file import PolicyError, load_policy_file
from scaler.settings import SettingsError
from scaler.sim import as_run, events_trace, report, servegen, synthetic, traces
from scaler.sim import workload as wl
from scaler.sim.baselines import BASELINES, peak_instances, warm_replicas
from scaler.sim.coldstart import ColdStarts
from scaler.sim.engine import simulate
from scaler.sim.feasibility import feasibility
from scaler.sim.oracle import hindsight_oracle
from scaler.sim.protocol import Controller
from scaler.sim.results import SimResult, Summary
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

  # Replica cold starts drawn between 1.5 and 8 minutes (5th-95th percentiles) instead of fixed
  scaler simulate --scenario diurnal --cold-start-range 90,480

  # Your own traffic: events exported by `scaler export`, or read straight from the topics
  scaler simulate --trace yesterday.jsonl --trace-format events --policy policies/prod.yaml
  scaler simulate --from-kafka --bootstrap-servers kafka:9092 --since 2026-11-30T00:00Z \\
      --until 2026-12-01T00:00Z --policy policies/prod.yaml
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
    source.add_argument(
        "--trace", type=Path, metavar="PATH", help="Azure CSV file, ServeGen directory or events file"
    )
    source.add_argument(
        "--from-kafka",
        action="store_true",
        help="replay the request (and metric) topics over --since..--until (no consumer group is joined)",
    )
    parser.add_argument(
        "--trace-format",
        choices=("azure", "servegen", "events"),
        help="format of --trace (default: servegen for a directory, azure for a file); events: the "
        "daemon's request/metric events as JSON lines (scaler export writes them)",
    )
    add_range_flags(parser, required=False)
    parser.add_argument("--policy", type=Path, metavar="FILE", help=f"policy file (default {DEFAULT_POLICY})")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="which model of the policy file (default: the first; for events: every model with events)",
    )
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
    parser.add_argument(
        "--cold-start-range",
        type=cold_start_range,
        metavar="P5,P95",
        help="draw each replica's cold start from a lognormal whose 5th-95th percentiles are P5-P95 "
        "seconds, seeded by --seed (e.g. 90,480: the published 1.5-8 minutes), so the daemon's "
        "learned lead times are exercised (default: the policy's cold_start_seconds for every replica)",
    )
    parser.set_defaults(func=run)


def cold_start_range(text: str) -> tuple[float, float]:
    """Return (p5, p95) seconds from ``P5,P95``; raise argparse.ArgumentTypeError if it is not that."""
    try:
        p5, p95 = (float(part) for part in text.split(","))
        ColdStarts.between(p5, p95)
    except ValueError as exc:
        detail = str(exc) if "cold starts" in str(exc) else "need two numbers of seconds"
        raise argparse.ArgumentTypeError(f"{text!r}: {detail} (e.g. 90,480)") from None
    return p5, p95


def load_policies(path: Path | None) -> PolicyFile:
    """Return the policy file at ``path`` (default: policies/default.yaml, else built-in defaults).

    Raises UsageError for a missing file, PolicyError (with its problems) for an invalid one.
    """
    if path is None and DEFAULT_POLICY.is_file():
        path = DEFAULT_POLICY
    if path is None:
        return PolicyFile(models=[ModelPolicy(name="llama-3.1-8b-instruct")])
    if not path.is_file():
        raise UsageError(f"--policy {path}: no such file")
    return load_policy_file(path)


def select_policy(path: Path | None, model: str | None) -> ModelPolicy:
    """Return the chosen model's policy; raises UsageError or PolicyError (with its problems)."""
    policies = load_policies(path)
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


def truncate(workload: wl.Workload | wl.RateWorkload, seconds: float) -> wl.Workload | wl.RateWorkload:
    """Return the first ``seconds`` of ``workload`` (all of it if shorter); raises UsageError if <= 0."""
    if not seconds > 0:
        raise UsageError(f"--duration {seconds:g}: must be > 0 seconds")
    return workload.first(seconds)


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
    if args.fluid:
        workload = workload.as_rates()
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
    built: list[Controller] = [SpillwayController(policy, workload)]
    built.extend(BASELINES[n](policy, workload) for n in names)
    return built


def warn(message: str) -> None:
    """Print one line of a warning or error to stderr."""
    print(message, file=sys.stderr)


def _consoles() -> tuple[Console, Console]:
    """Return the (stdout, stderr) rich consoles; a pipe or file gets a wide one (no squeezed tables)."""
    from rich.console import Console  # noqa: PLC0415  # the [sim] extra: run() checked it is installed

    out = Console()
    if not out.is_terminal:
        out = Console(width=220)
    return out, Console(stderr=True)


def _input_error(exc: PolicyError | UsageError, *, policy: Path | None) -> int:
    """Print what is wrong with the input (each policy problem on its own line); return exit code 1."""
    if isinstance(exc, PolicyError):
        warn(f"error: --policy {policy}: invalid policy file")
        for problem in exc.problems:
            warn(f"  {problem}")
    else:
        warn(f"error: {exc}")
    return 1


def run(args: argparse.Namespace) -> int:
    """Run the simulation for the parsed ``args``; return the exit code (1 on bad input or no [sim] extra)."""
    missing = missing_extra(plot=args.plot is not None)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    if args.from_kafka or args.trace_format == "events":
        return run_events(args)
    if args.since or args.until or args.bootstrap_servers:
        print(
            "error: --since, --until and --bootstrap-servers need --trace-format events or --from-kafka",
            file=sys.stderr,
        )
        return 1
    out, err = _consoles()
    try:
        policy = select_policy(args.policy, args.model)
        names = select_baselines(args.baselines)
        workload = load_workload(args, warn=warn)
        if isinstance(workload, wl.RateWorkload) and policy.serverless_profile.per_token:
            raise UsageError(
                f"backend {policy.serverless_backend} bills per token and the fluid model (--fluid, "
                "per-second counts) has serverless instances only: run the per-request model"
            )
    except (PolicyError, UsageError) as exc:
        return _input_error(exc, policy=args.policy)
    results, oracle = run_policies(workload, policy=policy, args=args, names=names, warn=warn, err=err)
    summaries = [r.summary for r in results]
    kind = "fluid" if isinstance(workload, wl.RateWorkload) else "per-request"
    title = (
        f"{workload.name}: {workload.requests:,} requests over {workload.duration / 3600:.1f} h "
        f"({kind} model), policy {policy.name}, SLO {policy.slo.attainment:.0%} within target"
    )
    out.print(report.render_table(summaries, oracle=oracle.summary, title=title))
    fits = feasibility(workload, policy=policy)
    out.print(fits.line(policy=policy.name), markup=False, highlight=False)
    try:
        if args.json is not None:
            doc = json.loads(report.to_json(summaries, oracle=oracle.summary, workload=workload.name))
            doc["feasibility"] = fits.as_dict()
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
            warn(f"wrote {args.json}")
        if args.plot is not None:
            report.plot([*results, oracle], path=args.plot, title=title)
            warn(f"wrote {args.plot}")
    except OSError as exc:
        warn(f"error: cannot write output: {exc}")
        return 1
    return 0


# -- replaying the daemon's own events (--trace-format events, --from-kafka) -------------------------


def load_replay(
    args: argparse.Namespace, *, models: Sequence[str], warn: Callable[[str], None]
) -> events_trace.EventsReplay:
    """Return the events the flags name (a file or a Kafka range) of the policy file's ``models``.

    Only ``--model``'s events are kept when it is given. Raises UsageError if the input is unusable.
    """
    only = [args.model] if args.model else None
    if args.duration is not None:
        raise UsageError("--duration: not with events; choose the range with --since/--until")
    try:
        if args.from_kafka:
            if not (args.bootstrap_servers and args.since and args.until):
                raise UsageError("--from-kafka needs --bootstrap-servers, --since and --until")
            settings, topics, since, until = range_settings(args)
            reading = replay_from_kafka(
                kafka=settings.kafka, topics=topics, known_models=models, since=since, until=until, only=only
            )
            replay = asyncio.run(reading)
        else:
            if args.trace is None:
                raise UsageError("--trace-format events needs --trace FILE (or use --from-kafka)")
            start = parse_time(args.since, flag="--since") if args.since else None
            end = parse_time(args.until, flag="--until") if args.until else None
            replay = events_trace.load_events(
                args.trace, known_models=models, since=start, until=end, only=only
            )
    except SettingsError as exc:
        raise UsageError("; ".join(exc.problems)) from exc
    except (traces.TraceError, ValueError, ConnectionError, LookupError) as exc:
        raise UsageError(str(exc)) from exc
    for problem in replay.problems:
        warn(f"warning: {problem} (skipped)")
    if replay.bad > len(replay.problems):
        warn(f"warning: {replay.bad - len(replay.problems):,} more events skipped")
    return replay


def warn_models_without_events(
    replay: events_trace.EventsReplay, *, models: Sequence[str], warn: Callable[[str], None]
) -> list[str]:
    """Warn (a line for ``warn`` and a structured log line on stderr) about the policy models with no
    arrival in the replay, which get no table; return them, in policy-file order."""
    missing = [m for m in dict.fromkeys(models) if m not in replay.models]
    if missing:
        span = f"{_stamp(replay.origin)} to {_stamp(replay.origin + replay.duration)}"
        warn(f"warning: no arrival events from {span} for {', '.join(missing)}: not simulated")
        _stderr_log().warning(
            "replay_models_without_events",
            models=missing,
            since=replay.origin,
            until=replay.origin + replay.duration,
        )
    return missing


def _stderr_log() -> structlog.typing.FilteringBoundLogger:
    """Return a structlog logger writing JSON lines to the current stderr, as the daemon logs, without
    configuring structlog for the process (stdout holds the tables)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return logger.bind(command="simulate")


def _stamp(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _output_path(path: Path, model: str, *, several: bool) -> Path:
    return path.with_name(f"{path.stem}-{model}{path.suffix}") if several else path


def replay_model(
    part: events_trace.ModelReplay,
    *,
    policy: ModelPolicy,
    args: argparse.Namespace,
    names: Sequence[str],
    warn: Callable[[str], None],
    err: Console,
) -> tuple[list[SimResult], SimResult, Summary | None]:
    """Return the runs of Spillway and ``names`` on one model's events, the oracle's, and the "as run" row."""
    workload: wl.Workload | wl.RateWorkload = part.workload.as_rates() if args.fluid else part.workload
    results, oracle = run_policies(workload, policy=policy, args=args, names=names, warn=warn, err=err)
    return results, oracle, as_run.as_run_summary(part, policy=policy)


def run_policies(
    workload: wl.Workload | wl.RateWorkload,
    *,
    policy: ModelPolicy,
    args: argparse.Namespace,
    names: Sequence[str],
    warn: Callable[[str], None],
    err: Console,
) -> tuple[list[SimResult], SimResult]:
    """Return the runs of Spillway and the baselines ``names`` on ``workload``, and the relaxed oracle's."""
    check_capacity(workload, policy=policy, warn=warn)
    initial = None if args.cold_start else warm_replicas(workload, policy=policy)
    spread = args.cold_start_range
    draws = None if spread is None else ColdStarts.between(*spread, seed=args.seed)
    show = not args.no_progress and err.is_terminal and workload.requests >= PROGRESS_MIN_REQUESTS
    results: list[SimResult] = []
    with _progress(show, err) as progress:
        for controller in controllers(policy, workload, names):
            hook = progress(controller.name) if progress is not None else None
            results.append(
                simulate(
                    workload,
                    controller,
                    policy=policy,
                    on_progress=hook,
                    initial_replicas=initial,
                    cold_starts=draws,
                )
            )
        oracle = hindsight_oracle(workload, policy=policy, initial_replicas=initial)
    return results, oracle


def run_events(args: argparse.Namespace) -> int:
    """Replay recorded events, one table per model (with an "as run" row when replicas were recorded)."""
    out, err = _consoles()
    try:
        policies = load_policies(args.policy)
        names = select_baselines(args.baselines)
        known = [m.name for m in policies.models]
        if args.model is not None and args.model not in known:
            raise UsageError(f"--model {args.model}: not in the policy file (it has: {', '.join(known)})")
        replay = load_replay(args, models=known, warn=warn)
    except (PolicyError, UsageError) as exc:
        return _input_error(exc, policy=args.policy)
    by_name = {m.name: m for m in policies.models}
    warn_models_without_events(replay, models=[args.model] if args.model else known, warn=warn)
    several = len(replay.models) > 1
    docs: dict[str, object] = {}
    span = f"{_stamp(replay.origin)} to {_stamp(replay.origin + replay.duration)}"
    for model, part in replay.models.items():
        policy = by_name[model]
        results, oracle, recorded = replay_model(
            part, policy=policy, args=args, names=names, warn=warn, err=err
        )
        summaries = [r.summary for r in results]
        kind = "fluid" if args.fluid else "per-request"
        title = (
            f"{part.workload.name}: {part.workload.requests:,} requests, {span} ({kind} model), "
            f"policy {policy.name}, SLO {policy.slo.attainment:.0%} within target"
        )
        out.print(report.render_table(summaries, oracle=oracle.summary, title=title, as_run=recorded))
        docs[model] = json.loads(
            report.to_json(summaries, oracle=oracle.summary, workload=part.workload.name, as_run=recorded)
        )
        try:
            if args.plot is not None:
                path = _output_path(args.plot, model, several=several)
                report.plot([*results, oracle], path=path, title=title)
                warn(f"wrote {path}")
        except OSError as exc:
            warn(f"error: cannot write output: {exc}")
            return 1
    if args.json is not None:
        doc = next(iter(docs.values())) if not several else {"version": report.JSON_VERSION, "models": docs}
        try:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            warn(f"error: cannot write output: {exc}")
            return 1
        warn(f"wrote {args.json}")
    return 0
