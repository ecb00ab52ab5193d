"""The `scaler` command line: kubectl-style verbs, each in its own module under scaler.commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scaler import __version__
from scaler.commands import bridge, export, policy, run, simulate

# each module exposes register(subparsers), which adds its parser and sets args.func
COMMANDS = (simulate, export, run, policy, bridge)

DESCRIPTION = """\
Spillway shifts LLM inference capacity between Kubernetes GPU replicas and serverless burst
capacity, ahead of forecast load, at the lowest cost that meets the latency SLO.

Basic commands:
  simulate    Replay a workload through Spillway, the baselines and the hindsight oracle
  export      Write a time range of the request and metric topics to a file, for simulate
  run         Run the autoscaler daemon (Kafka in, decisions out; --sandbox for a local demo)
  bridge      Publish other systems' metrics as Spillway events (bridge vllm: vLLM /metrics)

Policy commands:
  policy      Validate, explain or print the schema of policy files
"""

EPILOG = """\
Examples:
  # See what Spillway would do on the bundled scenario, against every baseline
  scaler simulate

  # Check policy files before committing them
  scaler policy validate policies/*.yaml

Use "scaler <command> --help" for more information about a command.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="scaler",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scaler {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = func(args)
    return code
