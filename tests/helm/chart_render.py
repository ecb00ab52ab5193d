"""Render the Spillway chart in-process with the Helm SDK and split the output into manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "spillway"
KUBE_VERSION = "1.31.0"  # the oldest Kubernetes the chart's manifests are validated against

EVERYTHING_ON: dict[str, Any] = {
    "replicaCount": 3,
    "actuate": True,
    "dryRun": True,
    "actuator": {"timeoutSeconds": 5, "attempts": 3, "minIntervalSeconds": 30, "failureThreshold": 2},
    "prometheus": {"url": "http://prometheus-operated.monitoring:9090"},
    "logLevel": "debug",
    "image": {"repository": "registry.example/spillway/scaler", "digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": ["pull-secret"],
    "kafka": {
        "bootstrapServers": ["kafka-0.kafka:9093", "kafka-1.kafka:9093"],
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "spillway", "existingSecret": "kafka-sasl"},
        "tls": {"existingSecret": "kafka-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
    },
    "aws": {
        "region": "us-east-1",
        "endpointUrl": "https://vpce-0abc.lambda.us-east-1.vpce.amazonaws.com",
        "existingSecret": "aws-static",
    },
    "alerts": {"existingSecret": "spillway-alerts"},
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/spillway"}
    },
    "rbac": {
        "namespaces": ["inference-a", "inference-b"],
        "targets": {"deployments": ["llama-8b", "mistral-7b"], "statefulsets": ["llama-70b"]},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}, {"ports": [{"port": 9093}, {"port": 443}]}],
    },
    "extraEnv": [{"name": "SCALER_MAX_SKEW_SECONDS", "value": "120"}],
    "podAnnotations": {"example.com/team": "ml-platform"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "spillway"}},
        }
    ],
}

MINIMAL: dict[str, Any] = {
    "replicaCount": 1,
    "kafka": {"bootstrapServers": ["kafka.data:9092"]},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "rbac": {"create": False},
    "podDisruptionBudget": {"enabled": False},
    "networkPolicy": {"enabled": False},
    "policies": {
        "existingConfigMap": "sre-policies",
        "existingConfigMapKeys": ["llama.yaml", "mistral.yaml"],
    },
}

# every setting the chart renders moved off its default (with EVERYTHING_ON's secrets and targets)
OVERRIDES: dict[str, Any] = {
    **EVERYTHING_ON,
    "http": {"port": 8081},
    "logLevel": "warning",
    "dryRun": False,
    "keda": {
        "enabled": True,
        "port": 9443,
        "tls": {"existingSecret": "spillway-keda-tls", "clientCaKey": "ca.crt"},
    },
    "fencing": {"leases": "on", "durationSeconds": 20, "renewSeconds": 4.5, "marginSeconds": 3},
    "actuator": {"timeoutSeconds": 2.5, "attempts": 6, "minIntervalSeconds": 0.5, "failureThreshold": 5},
    "kafka": {
        **EVERYTHING_ON["kafka"],
        "groupId": "spillway-prod",
        "topics": {
            "requests": "prod.requests",
            "metrics": "prod.metrics",
            "decisions": "prod.decisions",
            "deadletter": "prod.deadletter",
            "state": "prod.state",
        },
        "createTopics": False,
        "topicPartitions": 12,
        "sessionTimeoutMs": 30000,
    },
    "policies": {
        "files": {"a.yaml": "version: 1\nmodels: []\n", "b.yaml": "version: 1\nmodels: []\n"},
        "pollSeconds": 7.5,
    },
}


def render(values: dict[str, Any], *, namespace: str = "ml") -> dict[str, str]:
    """Return the chart rendered with ``values`` as {template path: text}; raises the SDK's HelmError."""
    from helm_python import Chart  # noqa: PLC0415  # the SDK loads a 240 MB native library

    return Chart.load(CHART).render(values, name="spillway", namespace=namespace)


def manifests(values: dict[str, Any], *, namespace: str = "ml") -> list[dict[str, Any]]:
    """Return every Kubernetes object the chart renders with ``values`` (NOTES.txt left out)."""
    found: list[dict[str, Any]] = []
    for path, text in sorted(render(values, namespace=namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Return the single object of ``kind``; raises AssertionError when there is not exactly one."""
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]
