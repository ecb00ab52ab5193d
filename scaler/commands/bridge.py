"""``scaler bridge vllm``: scrape vLLM ``/metrics`` endpoints and publish replica metric events to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from scaler.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from scaler.adapters.vllm import Discovery, VllmBridge
    from scaler.settings import ActuatorSettings, KubernetesSettings

DESCRIPTION = """\
Scrape vLLM servers' Prometheus /metrics and publish one replica metric event per server and model
to the metrics topic (llm.metrics, keyed by model), every --interval seconds:
running and waiting requests, KV-cache usage (vllm:kv_cache_usage_perc, or the older
vllm:gpu_cache_usage_perc), and readiness (the scrape succeeded). The model is the model_name label.

A target that fails (HTTP error, timeout, a body over --max-bytes, not Prometheus text, NaN or
out-of-range gauges) is logged and counted, and published as not ready for the models it served;
the other targets go on. Kafka connection and security settings are read like scaler run's
(SCALER_KAFKA_* variables, --config FILE).

Rates: from the counters vllm:request_success (summed over finished_reason), vllm:prompt_tokens and
vllm:generation_tokens, each event carries the replica's requests, prompt and generated tokens per
second since its previous scrape (none on the first; a counter that went down is a restart, never a
negative rate). The daemon counts them as demand for models that publish no request events.

Discovery: --selector lists the pods matching it in --namespace every --refresh seconds, with the
daemon's Kubernetes settings (SCALER_KUBERNETES_*: host and token/CA files, kubeconfig and context,
or in-cluster), and scrapes the Ready ones at http://POD_IP:PORT/PATH (replica = pod name). A pod
that leaves the list is published not ready once; on an API error the last good list is kept.
"""

EPILOG = """\
Examples:
  scaler bridge vllm --targets http://10.0.0.7:8000/metrics,http://10.0.0.8:8000/metrics \\
      --bootstrap-servers kafka:9092 --interval 5
  SCALER_KUBERNETES_IN_CLUSTER=true scaler bridge vllm --selector app=vllm --namespace llm --port http
"""


def register(subparsers: Any) -> None:
    """Add the ``bridge`` command (and its ``vllm`` source) to the CLI."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bridge", help="Publish metrics of other systems as Spillway events (vllm)"
    )
    sources = parser.add_subparsers(title="sources", metavar="SOURCE")
    vllm = sources.add_parser(
        "vllm",
        help="Scrape vLLM /metrics into llm.metrics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vllm.add_argument("--targets", metavar="URL[,URL...]", help="vLLM /metrics URLs.")
    vllm.add_argument(
        "--selector",
        metavar="LABELS",
        help="Also scrape the Ready pods matching this label selector (app=vllm).",
    )
    vllm.add_argument(
        "--namespace", default="default", metavar="NS", help="Namespace of --selector (default: default)."
    )
    vllm.add_argument(
        "--port",
        default="8000",
        metavar="PORT",
        help="Pods' metrics port: a number or a container port name (8000).",
    )
    vllm.add_argument("--path", default="/metrics", metavar="PATH", help="Pods' metrics path (/metrics).")
    vllm.add_argument(
        "--refresh", type=float, default=30.0, metavar="S", help="Seconds between pod listings (30)."
    )
    vllm.add_argument("--bootstrap-servers", metavar="SERVERS", help="Kafka bootstrap servers (a,b).")
    vllm.add_argument("--metrics-topic", metavar="TOPIC", help="Topic of metric events (llm.metrics).")
    vllm.add_argument("--config", metavar="FILE", help="YAML file of settings (the Kafka ones are used).")
    vllm.add_argument("--interval", type=float, default=5.0, metavar="S", help="Seconds between scrapes (5).")
    vllm.add_argument("--timeout", type=float, default=2.0, metavar="S", help="Most seconds per scrape (2).")
    vllm.add_argument(
        "--max-bytes", type=int, default=4 * 1024 * 1024, metavar="N", help="Largest body read (4 MiB)."
    )
    vllm.add_argument("--log-level", default=None, metavar="LEVEL", help="debug, info, warning or error.")
    vllm.add_argument(
        "--listen", metavar="HOST:PORT", help="Serve the bridge's own /metrics here (default: not served)."
    )
    vllm.set_defaults(func=handler)
    parser.set_defaults(func=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def handler(args: argparse.Namespace) -> int:
    """Run the vLLM bridge until SIGTERM/SIGINT; return the exit code (2: bad arguments)."""
    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415  # keep `scaler --help` fast
    from scaler.adapters import vllm  # noqa: PLC0415

    targets = [t.strip() for t in (args.targets or "").split(",") if t.strip()]
    flags: dict[str, Any] = {"kafka_metrics_topic": args.metrics_topic, "log_level": args.log_level}
    if args.bootstrap_servers is not None:
        flags["kafka_bootstrap_servers"] = [s.strip() for s in args.bootstrap_servers.split(",") if s.strip()]
    try:
        settings = load_settings(
            config_file=Path(args.config) if args.config else None, env=os.environ, flags=flags
        )
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    listen = _host_port(args.listen) if args.listen else None
    if args.listen and listen is None:
        print(f"error: --listen {args.listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)", file=sys.stderr)
        return 2
    if not (targets or args.selector) or min(args.interval, args.timeout, args.max_bytes, args.refresh) <= 0:
        print(
            "error: give --targets URLs and/or a --selector; "
            "--interval, --timeout, --max-bytes, --refresh must be > 0",
            file=sys.stderr,
        )
        return 2
    registry = CollectorRegistry()
    try:
        discovery = _discovery(args, settings.kubernetes, settings.actuator) if args.selector else None
        bridge = vllm.VllmBridge(
            targets=targets,
            kafka=settings.kafka,
            options=vllm.BridgeOptions(
                interval_seconds=args.interval,
                timeout_seconds=args.timeout,
                max_bytes=args.max_bytes,
                refresh_seconds=args.refresh,
            ),
            registry=registry,
            discovery=discovery,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scaler_logging.configure(level=settings.log_level)
    if listen is not None:
        try:
            start_http_server(listen[1], addr=listen[0], registry=registry)
        except OSError as exc:
            print(f"error: --listen {args.listen}: {exc.strerror}", file=sys.stderr)
            return 1
    return asyncio.run(_run(bridge))


def _discovery(
    args: argparse.Namespace, kube: KubernetesSettings, actuator: ActuatorSettings
) -> Discovery:
    """Return the pod discovery of ``--selector``; raise ValueError on a bad port or Kubernetes settings."""
    from scaler.adapters import kubernetes, vllm_discovery  # noqa: PLC0415  # the client is slow to import

    port: int | str = int(args.port) if args.port.isdigit() else args.port
    if (isinstance(port, int) and not 0 < port <= 65535) or not str(port).strip():
        raise ValueError(f"--port {args.port!r} is not a port number or a container port name")
    api = kubernetes.api_client_for(kube)
    return vllm_discovery.PodDiscovery(
        api,
        namespace=args.namespace,
        selector=args.selector,
        port=port,
        path=args.path,
        request_timeout=actuator.timeout_seconds,
    )


def _host_port(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host.strip("[]"), int(port)


async def _run(bridge: VllmBridge) -> int:
    from scaler.adapters import logging as scaler_logging  # noqa: PLC0415
    from scaler.app import SystemClock  # noqa: PLC0415

    log = scaler_logging.get_logger()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await bridge.start()
    except ConnectionError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    log.info(
        "bridge_started", targets=sorted(bridge.static), selector=getattr(bridge.discovery, "selector", None)
    )
    try:
        await bridge.run(stopping=stopping, clock=SystemClock())
    finally:
        await bridge.stop()
    log.info("stopped", code=0)
    return 0
