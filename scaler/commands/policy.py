"""``scaler policy validate|schema|explain``: check policy files, print their JSON Schema, explain them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scaler.core.explain import explain
from scaler.core.policy import ModelPolicy, policy_json_schema
from scaler.core.policy_file import duplicate_models, read_policy_file
from scaler.sim.feasibility import feasibility

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

_RAW = argparse.RawDescriptionHelpFormatter

POLICY_HELP = """\
Validate, explain or print the schema of Spillway policy files.

A policy file is YAML with a `models:` list; each model sets its SLO, replica capacity, lead
times, prices, bounds, behaviour, forecast and schedules (everything but the name has a default).
"""
POLICY_EPILOG = """\
Examples:
  # Check every example policy
  scaler policy validate policies/*.yaml

  # What does this policy mean in dollars and minutes?
  scaler policy explain policies/default.yaml

Use "scaler policy <command> --help" for more information about a command.
"""
VALIDATE_HELP = """\
Check policy files without applying them.

Prints "FILE: ok (N models)" for each valid file. Every problem is printed on stderr as
FILE:LINE: FIELD: MESSAGE, naming the wrong value. Files are also checked together: a model
name may be defined only once across all of them.

Exit status: 0 if every file is valid, 1 if any file has a problem, 2 for usage errors.
"""
VALIDATE_EPILOG = """\
Examples:
  # Validate one file
  scaler policy validate policies/default.yaml

  # Validate every policy the daemon will load (duplicate model names across files are errors)
  scaler policy validate policies/*.yaml
"""
SCHEMA_HELP = """\
Print the JSON Schema (draft 2020-12) of policy files.

Editors that speak yaml-language-server complete and check policy files against it: save the
output and put "# yaml-language-server: $schema=<path to the saved file>" on a file's first line.
"""
SCHEMA_EPILOG = """\
Examples:
  # Save the schema for your editor
  scaler policy schema > policy.schema.json
"""
EXPLAIN_HELP = """\
Show what a policy means: the effective settings with defaults filled in, when a replica pays
off against serverless, the demand quantile replicas are sized to, what one replica serves, what
standby and floors cost per hour, lead times against the forecast horizon, and the schedules.
With --trace, also the attainable ceiling on that workload: the share of its requests whose
prefill alone fits the TTFT target, and one line saying so when the SLO cannot be met there.
"""
EXPLAIN_EPILOG = """\
Examples:
  # Explain every model in a file
  scaler policy explain policies/business-hours.yaml

  # Explain one model
  scaler policy explain policies/steady-high-volume.yaml --model llama-3.1-8b-chat

  # ...with the lead times a running daemon learned, beside the configured ones
  scaler policy explain policies/default.yaml --metrics http://127.0.0.1:8080/metrics

  # ...and say which share of a trace's requests its SLO can reach at all
  scaler policy explain policies/default.yaml \\
      --trace ../shared/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv
"""


def register(subparsers: Any) -> None:
    """Add ``policy`` and its subcommands to the top-level ``subparsers``."""
    policy = subparsers.add_parser(
        "policy",
        help="Validate, explain or print the schema of policy files",
        description=POLICY_HELP,
        epilog=POLICY_EPILOG,
        formatter_class=_RAW,
    )
    policy.set_defaults(func=lambda args: _usage(policy))
    verbs = policy.add_subparsers(title="commands", metavar="COMMAND")

    validate = verbs.add_parser(
        "validate", help="Check policy files", description=VALIDATE_HELP, epilog=VALIDATE_EPILOG,
        formatter_class=_RAW,
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="policy files (YAML)")
    validate.set_defaults(func=validate_command)

    schema = verbs.add_parser(
        "schema", help="Print the JSON Schema of policy files", description=SCHEMA_HELP, epilog=SCHEMA_EPILOG,
        formatter_class=_RAW,
    )
    schema.set_defaults(func=schema_command)

    explained = verbs.add_parser(
        "explain", help="Explain what a policy implies", description=EXPLAIN_HELP, epilog=EXPLAIN_EPILOG,
        formatter_class=_RAW,
    )
    explained.add_argument("file", type=Path, metavar="FILE", help="policy file (YAML)")
    explained.add_argument("--model", metavar="NAME", help="explain only this model (default: all)")
    explained.add_argument(
        "--trace",
        type=Path,
        metavar="PATH",
        help="also report the SLO's attainable ceiling on this workload (Azure CSV or ServeGen directory)",
    )
    explained.add_argument(
        "--metrics",
        metavar="URL",
        help="a daemon's /metrics: show the lead times it learned (scaler_lead_time_seconds)",
    )
    explained.set_defaults(func=explain_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def validate_command(args: argparse.Namespace) -> int:
    """Validate ``args.files``; return 0 if all are valid, else 1 (problems go to stderr)."""
    results = [read_policy_file(path) for path in args.files]
    problems = [p for r in results for p in r.problems] + duplicate_models(results)
    for result in results:
        if result.policy is not None:
            count = len(result.policy.models)
            print(f"{result.source}: ok ({count} model{'s' if count != 1 else ''})")
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID if problems else EXIT_OK


def schema_command(args: argparse.Namespace) -> int:
    """Print the policy file JSON Schema; return 0."""
    sys.stdout.write(json.dumps(policy_json_schema(), indent=2) + "\n")
    return EXIT_OK


def explain_command(args: argparse.Namespace) -> int:
    """Explain the models in ``args.file``; return 0, 1 for an invalid file, 2 for an unknown --model."""
    result = read_policy_file(args.file)
    if result.policy is None:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    models = result.policy.models
    if args.model is not None:
        models = [m for m in models if m.name == args.model]
        if not models:
            names = ", ".join(m.name for m in result.policy.models)
            message = f"no model {args.model!r} in {result.source} (it has: {names})"
            print(f"scaler policy explain: {message}", file=sys.stderr)
            return EXIT_USAGE
    learned: dict[str, dict[str, dict[float | None, float]]] = {}
    if args.metrics is not None:
        try:
            learned = learned_lead_times(args.metrics)
        except ValueError as exc:
            print(f"scaler policy explain: --metrics: {exc}", file=sys.stderr)
            return EXIT_USAGE
    explained = (explain(m, learned=learned.get(m.name) if args.metrics else None) for m in models)
    print("\n".join(e.render() for e in explained), end="")
    if args.trace is not None:
        return _ceilings(args.trace, models)
    return EXIT_OK


def learned_lead_times(url: str, *, timeout: float = 5.0) -> dict[str, dict[str, dict[float | None, float]]]:
    """Return model -> kind -> quantile -> learned lead time read from a daemon's ``/metrics`` at ``url``
    (quantile None: a daemon that labels none, which learned one lead time per kind).

    Raises ValueError when the URL is not http(s), cannot be read, or is not the Prometheus text format.
    """
    import urllib.error  # noqa: PLC0415 - only with --metrics
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked
            text = response.read(8 * 1024 * 1024).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"cannot read {url}: {exc}") from None
    learned: dict[str, dict[str, dict[float | None, float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name != "scaler_lead_time_seconds":
                continue
            for sample in family.samples:
                if sample.labels.get("source") == "learned":
                    model, kind = sample.labels.get("model", ""), sample.labels.get("kind", "")
                    label = sample.labels.get("quantile")
                    quantile = float(label) if label else None
                    learned.setdefault(model, {}).setdefault(kind, {})[quantile] = float(sample.value)
    except ValueError as exc:
        raise ValueError(f"{url} is not Prometheus text: {exc}") from None
    return learned


def _ceilings(trace: Path, models: list[ModelPolicy]) -> int:
    """Print each model's attainable ceiling on ``trace``; return 0, or 2 if the trace is unusable."""
    from scaler.commands.simulate import UsageError, load_trace  # noqa: PLC0415 - only with --trace

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        workload = load_trace(trace, fmt=None, seed=0, warn=warn)
    except UsageError as exc:
        print(f"scaler policy explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"\nOn {workload.name} ({workload.requests:,} requests):")
    for model in models:
        print(f"  {model.name}: {feasibility(workload, policy=model).line(policy=model.name)}")
    return EXIT_OK
