"""``scaler run``: the autoscaler daemon."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from scaler.settings import Settings, SettingsError, load_settings, unknown_env

DESCRIPTION = """\
Run the Spillway autoscaler daemon.

Consumes request and replica-metric events from Kafka (keyed by model), forecasts each model's
demand, and publishes one decision per model and interval to the decisions topic: desired
replicas, warm standby, pre-warmed serverless instances and routing weights, with the reason.
Events that fail validation go to the dead-letter topic with theirs. Several daemons in one
consumer group split the models between them.

Every flag can also be set in the --config file (as its setting name, e.g. kafka_group_id) or
in the environment (SCALER_<SETTING>, e.g. SCALER_KAFKA_GROUP_ID). Flags win over the environment,
which wins over the file. The SASL password is read only from SCALER_KAFKA_SASL_PASSWORD or
--sasl-password-file.
"""

EPILOG = """\
Examples:
  # Advisory mode against a local broker: decisions are published and logged, nothing is scaled
  scaler run --policy policies/llama-8b.yaml --bootstrap-servers 127.0.0.1:9092 --dry-run

  # An hour of synthetic traffic through the real loop in a minute, no Kafka needed
  scaler run --sandbox --speed 60 --duration 3600

  # Settings from a file, the password from the environment
  SCALER_KAFKA_SASL_PASSWORD=... scaler run --config /etc/spillway/scaler.yaml

Fencing: a decision is published or applied only while this process holds the model's partition in
the group's current generation, with a live session, and (with Kubernetes) its Lease with margin.

Endpoints (default 127.0.0.1:8080): /healthz, /readyz, /metrics.
With --keda-listen HOST:PORT: KEDA's external scaler (gRPC) of each owned model's desired replicas.
Exit codes: 0 stopped cleanly (SIGTERM or SIGINT), 1 failed at run time, 2 bad settings or policies.
"""

# flag -> (setting, help); every flag defaults to None so unset flags never override env or file
FLAGS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("--bootstrap-servers", "kafka_bootstrap_servers", "Kafka bootstrap servers, comma-separated.", {}),
    ("--group-id", "kafka_group_id", "Consumer group shared by the daemon's replicas.", {}),
    ("--requests-topic", "kafka_requests_topic", "Topic of request events.", {}),
    ("--metrics-topic", "kafka_metrics_topic", "Topic of replica metric events.", {}),
    ("--decisions-topic", "kafka_decisions_topic", "Topic decisions are published to.", {}),
    ("--deadletter-topic", "kafka_deadletter_topic", "Topic invalid events are sent to.", {}),
    ("--state-topic", "kafka_state_topic", "Compacted topic of per-model checkpoints.", {}),
    ("--security-protocol", "kafka_security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", {}),
    ("--sasl-mechanism", "kafka_sasl_mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.", {}),
    ("--sasl-username", "kafka_sasl_username", "SASL user name.", {}),
    ("--sasl-password-file", "kafka_sasl_password_file", "File holding the SASL password.", {}),
    ("--ssl-cafile", "kafka_ssl_cafile", "CA bundle for TLS to the brokers.", {}),
    ("--ssl-certfile", "kafka_ssl_certfile", "Client certificate for mutual TLS.", {}),
    ("--ssl-keyfile", "kafka_ssl_keyfile", "Client key for mutual TLS.", {}),
    ("--session-timeout-ms", "kafka_session_timeout_ms", "Consumer group session timeout.", {"type": int}),
    ("--listen", "http_listen", "HOST:PORT of /healthz, /readyz, /metrics (default 127.0.0.1:8080).", {}),
    ("--log-level", "log_level", "debug, info, warning or error (default info).", {}),
    ("--checkpoint-interval", "checkpoint_interval_seconds", "Seconds between checkpoints.", {"type": float}),
    (
        "--checkpoint-dir",
        "checkpoint_dir",
        "Directory spooling checkpoints locally (kept when the broker is down, read on start).",
        {"type": Path},
    ),
    ("--kubernetes-host", "kubernetes_host", "Kubernetes API URL (else in-cluster/kubeconfig).", {}),
    ("--kubernetes-token-file", "kubernetes_token_file", "Token file for --kubernetes-host.", {"type": Path}),
    ("--kubernetes-ca-file", "kubernetes_ca_file", "CA bundle verifying --kubernetes-host.", {"type": Path}),
    ("--kubeconfig", "kubernetes_kubeconfig", "Kubeconfig file for the actuators.", {"type": Path}),
    ("--kubernetes-context", "kubernetes_context", "Kubeconfig context (default: current-context).", {}),
    (
        "--fencing-leases",
        "fencing_leases",
        "A Lease per partition: auto (on when actuating Kubernetes), on or off.",
        {},
    ),
    ("--lease-namespace", "lease_namespace", "Namespace of the fencing Leases (default: the pod's).", {}),
    ("--aws-endpoint-url", "aws_endpoint_url", "AWS endpoint URL for the actuators.", {}),
    ("--aws-region", "aws_region", "Default AWS region of serverless targets.", {}),
    ("--keda-listen", "keda_listen", "HOST:PORT of the KEDA external scaler (gRPC; default off).", {}),
    ("--keda-tls-certfile", "keda_tls_certfile", "TLS certificate of the KEDA scaler.", {"type": Path}),
    ("--keda-tls-keyfile", "keda_tls_keyfile", "TLS key of the KEDA scaler.", {"type": Path}),
    (
        "--keda-tls-client-cafile",
        "keda_tls_client_cafile",
        "CA of KEDA's client certificates (mutual TLS).",
        {"type": Path},
    ),
)


def register(subparsers: Any) -> None:
    """Add the ``run`` command to the CLI."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        add_help=False,
        help="Run the autoscaler daemon",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="scaler run [flags]",
    )
    flags = parser.add_argument_group("Flags")
    flags.add_argument("-h", "--help", action="help", help="Show this help and exit.")
    flags.add_argument("--config", type=Path, metavar="FILE", help="YAML file of settings.")
    flags.add_argument(
        "--policy",
        action="append",
        type=Path,
        metavar="FILE",
        dest="policy_files",
        help="Policy file (repeat for several).",
    )
    flags.add_argument(
        "--dry-run",
        action="store_const",
        const=True,
        default=None,
        help="Advisory mode: publish and log decisions, act on nothing.",
    )
    flags.add_argument(
        "--actuate",
        action="store_const",
        const=True,
        default=None,
        help="Change the resources named in the policies' targets (with --dry-run: log the changes only).",
    )
    sandbox = parser.add_argument_group("Sandbox (no Kafka: the same daemon on a synthetic workload)")
    sandbox.add_argument(
        "--sandbox",
        action="store_true",
        help="Replay a synthetic workload in memory; decisions act on simulated replicas and serverless.",
    )
    sandbox.add_argument(
        "--speed", type=float, default=60.0, metavar="X", help="Virtual seconds per real second (default 60)."
    )
    sandbox.add_argument(
        "--duration",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="Virtual seconds to run (default 3600).",
    )
    sandbox.add_argument(
        "--base-rate", type=float, default=20.0, metavar="RPS", help="Mean requests/s per model (default 20)."
    )
    for flag, setting, text, extra in FLAGS:
        flags.add_argument(
            flag, dest=setting, default=None, metavar=setting.split("_")[-1].upper(), help=text, **extra
        )
    parser.set_defaults(func=handler)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Return settings from ``args`` flags, the environment and the --config file; raise SettingsError."""
    flags: dict[str, Any] = {setting: getattr(args, setting, None) for _, setting, _, _ in FLAGS}
    flags["dry_run"] = args.dry_run
    flags["actuate"] = args.actuate
    flags["policy_files"] = args.policy_files
    servers = flags["kafka_bootstrap_servers"]
    if servers is not None:
        flags["kafka_bootstrap_servers"] = [s.strip() for s in servers.split(",") if s.strip()]
    return load_settings(config_file=args.config, env=os.environ, flags=flags)


def handler(args: argparse.Namespace) -> int:
    """Run the daemon until it is stopped; return the exit code."""
    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415  # keep `scaler --help` fast
    from scaler.core.policy_file import PolicyError, load_policies  # noqa: PLC0415

    misspelt = unknown_env(os.environ)  # warned about once, here; their values are never shown
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        for variable, nearest in misspelt:
            print(f"warning: {_unknown(variable, nearest)}", file=sys.stderr)
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    scaler_logging.configure(level=settings.log_level)
    log = scaler_logging.get_logger()
    for variable, nearest in misspelt:
        log.warning("unknown_setting_variable", variable=variable, did_you_mean=nearest)
    log.info("settings", **settings.loggable())  # secrets and passwords in URLs masked
    if args.sandbox:
        return _sandbox(args, settings)
    if not settings.policy_files:
        print("error: no policy files: pass --policy FILE (or set policy_files)", file=sys.stderr)
        return 2
    try:
        policies = load_policies(settings.policy_files)
    except PolicyError as exc:
        for policy_problem in exc.problems:
            print(f"error: {policy_problem}", file=sys.stderr)
        return 2
    from scaler import app  # noqa: PLC0415  # imports aiokafka, numba

    try:
        daemon = app.build_kafka_daemon(settings=settings, policies=policies)
    except ValueError as exc:
        print(f"error: the daemon cannot start: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(daemon.run())


def _unknown(variable: str, nearest: str | None) -> str:
    """Return the warning line for a ``SCALER_*`` variable that is not a setting."""
    hint = f"; did you mean {nearest}?" if nearest else " (see scaler run --help)"
    return f"{variable} is not a setting and is ignored{hint}"


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    """Run the daemon on the in-memory ports; print a per-model summary; return the exit code."""
    from scaler import app  # noqa: PLC0415  # imports numba
    from scaler.core.policy import ModelPolicy  # noqa: PLC0415
    from scaler.core.policy_file import PolicyError, load_policies  # noqa: PLC0415

    if args.speed <= 0 or args.duration <= 0 or args.base_rate < 0:
        print("error: --speed and --duration must be > 0 and --base-rate >= 0", file=sys.stderr)
        return 2
    try:
        policies = load_policies(settings.policy_files) if settings.policy_files else {}
    except PolicyError as exc:
        for policy_problem in exc.problems:
            print(f"error: {policy_problem}", file=sys.stderr)
        return 2
    if not policies:
        policies = {"llama-3.1-8b": ModelPolicy(name="llama-3.1-8b")}
    daemon, source, sink = app.build_sandbox_daemon(
        settings=settings, policies=policies, speed=args.speed, base_rate=args.base_rate
    )
    code = asyncio.run(app.run_for(daemon, virtual_seconds=args.duration))
    print(f"sandbox: {source.produced} events replayed over {args.duration:g} virtual seconds")
    columns = ("decisions", "bursts", "replicas", "standby", "serverless", "spill")
    print(f"{'model':<28} " + " ".join(f"{c:>10}" for c in columns))
    for model in sorted(policies):
        mine = [p for m, p in sink.decisions if m == model]
        bursts = sum(1 for p in mine if p.get("trigger") == "burst")
        last = mine[-1] if mine else {}
        desired = last.get("desired", {})
        routing = last.get("routing", {})
        assert isinstance(desired, dict)
        assert isinstance(routing, dict)
        print(
            f"{model:<28} {len(mine):>10} {bursts:>10} {desired.get('replicas', '-'):>10} "
            f"{desired.get('standby', '-'):>10} {desired.get('serverless_provisioned', '-'):>10} "
            f"{routing.get('serverless', '-'):>10}"
        )
    return code
