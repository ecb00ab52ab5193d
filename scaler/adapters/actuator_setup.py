"""Build the actuators ``scaler run`` uses, from the settings (kept apart: it imports both clients)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, KubernetesPort, RetryPolicy, ServerlessPort
from scaler.core.policy import ModelPolicy
from scaler.settings import ActuatorSettings, AwsSettings, KubernetesSettings


def build_actuators(
    *,
    actuator: ActuatorSettings,
    kubernetes: KubernetesSettings,
    aws: AwsSettings,
    actuate: bool,
    dry_run: bool,
    policies: Mapping[str, ModelPolicy],
    registry: CollectorRegistry,
) -> Actuators | None:
    """Return the actuators, or None when ``actuate`` is off (``dry_run``: they only log changes).

    The Kubernetes client is made when a Kubernetes setting is given or a policy names a
    Kubernetes target; the serverless one (each backend's adapter from the registry) when a policy
    names a serverless target or an AWS setting is given. Raises ValueError naming the source when
    the Kubernetes configuration cannot be loaded.
    """
    if not actuate:
        return None
    # boto3 and the kubernetes client: imported only when acting
    from scaler.adapters import kubernetes as kube_client  # noqa: PLC0415
    from scaler.adapters import serverless as backends  # noqa: PLC0415

    targets = [p.targets for p in policies.values() if p.targets is not None]
    kube: KubernetesPort | None = None
    wants_kube = any(t.kubernetes is not None for t in targets)
    if (
        wants_kube
        or kubernetes.host
        or kubernetes.kubeconfig
        or kubernetes.context
        or kubernetes.in_cluster
    ):
        api = kube_client.api_client_for(kubernetes)
        kube = kube_client.KubernetesActuator(api, request_timeout=actuator.timeout_seconds)
    serverless: ServerlessPort | None = None
    wants_serverless = any(t.serverless is not None for t in targets)
    if wants_serverless or aws.endpoint_url or aws.region:
        serverless = backends.ServerlessBackends(  # each target goes to its backend's adapter (REGISTRY)
            endpoint_url=aws.endpoint_url,
            region=aws.region,
            timeout_seconds=actuator.timeout_seconds,
        )
    structlog.get_logger("scaler.actuator").info(
        "actuators", kubernetes=kube is not None, serverless=serverless is not None, dry_run=dry_run
    )
    return Actuators(
        kubernetes=kube,
        serverless=serverless,
        metrics=ActuatorMetrics(registry),
        dry_run=dry_run,
        retry=RetryPolicy(
            attempts=actuator.attempts,
            timeout_seconds=actuator.timeout_seconds,
            cap_seconds=min(5.0, actuator.timeout_seconds),
        ),
        min_interval_seconds=actuator.min_interval_seconds,
        failure_threshold=actuator.failure_threshold,
    )
