"""Build the actuators ``scaler run`` uses, from the settings (kept apart: it imports both clients)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, KubernetesPort, RetryPolicy, ServerlessPort
from scaler.core.policy import ModelPolicy
from scaler.settings import Settings


def build_actuators(
    *, settings: Settings, policies: Mapping[str, ModelPolicy], registry: CollectorRegistry
) -> Actuators | None:
    """Return the actuators, or None when ``settings.actuate`` is off.

    The Kubernetes client is made when a Kubernetes setting is given or a policy names a
    Kubernetes target; the serverless one (each backend's adapter from the registry) when a policy
    names a serverless target or an AWS setting is given. Raises ValueError naming the source when
    the Kubernetes configuration cannot be loaded.
    """
    if not settings.actuate:
        return None
    # boto3 and the kubernetes client: imported only when acting
    from scaler.adapters import kubernetes  # noqa: PLC0415
    from scaler.adapters import serverless as backends  # noqa: PLC0415

    targets = [p.targets for p in policies.values() if p.targets is not None]
    kube: KubernetesPort | None = None
    wants_kube = any(t.kubernetes is not None for t in targets)
    if (
        wants_kube
        or settings.kubernetes_host
        or settings.kubernetes_kubeconfig
        or settings.kubernetes_context
        or settings.kubernetes_in_cluster
    ):
        api = kubernetes.load_api_client(
            host=settings.kubernetes_host,
            token_file=_path(settings.kubernetes_token_file),
            ca_file=_path(settings.kubernetes_ca_file),
            kubeconfig=_path(settings.kubernetes_kubeconfig),
            context=settings.kubernetes_context,
            in_cluster=settings.kubernetes_in_cluster,
        )
        kube = kubernetes.KubernetesActuator(api, request_timeout=settings.actuator_timeout_seconds)
    serverless: ServerlessPort | None = None
    wants_serverless = any(t.serverless is not None for t in targets)
    if wants_serverless or settings.aws_endpoint_url or settings.aws_region:
        serverless = backends.ServerlessBackends(  # each target goes to its backend's adapter (REGISTRY)
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
            timeout_seconds=settings.actuator_timeout_seconds,
        )
    structlog.get_logger("scaler.actuator").info(
        "actuators", kubernetes=kube is not None, serverless=serverless is not None, dry_run=settings.dry_run
    )
    return Actuators(
        kubernetes=kube,
        serverless=serverless,
        metrics=ActuatorMetrics(registry),
        dry_run=settings.dry_run,
        retry=RetryPolicy(
            attempts=settings.actuator_attempts,
            timeout_seconds=settings.actuator_timeout_seconds,
            cap_seconds=min(5.0, settings.actuator_timeout_seconds),
        ),
        min_interval_seconds=settings.actuator_min_interval_seconds,
        failure_threshold=settings.actuator_failure_threshold,
    )


def _path(value: Path | None) -> str | None:
    return str(value) if value is not None else None
