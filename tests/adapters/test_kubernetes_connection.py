"""Connection settings of the Kubernetes actuator, and its permanent errors, against a real kube-apiserver.

Sources: host + token file + CA file, or kubeconfig + context (in-cluster needs a pod). A bad token
(401), an identity without rights (403), a CA that did not sign the server's certificate (TLS) and a
missing target (404) are permanent: not retried, reported once per target, the kind unavailable.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, RetryPolicy
from scaler.adapters.kubernetes import KubernetesActuator, describe_rules, load_api_client
from scaler.core.types import Unavailable
from scaler.settings import SettingsError, load_settings
from tests.adapters.actuator_fixtures import policy
from tests.kube_cluster import KubeCluster, bind_role, create_deployment, make_ca

RETRY = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=3.0)


@pytest.fixture
def namespace(kube: KubeCluster, kube_namespace: str) -> str:
    """The test's namespace with Deployment chat (2 replicas), user scaler bound to the actuator's rules."""
    create_deployment(kube, namespace=kube_namespace, name="chat", replicas=2)
    bind_role(kube, namespace=kube_namespace, user="scaler", rules=describe_rules())
    return kube_namespace


def _read(api: Any, namespace: str, name: str = "chat") -> int:
    acts = KubernetesActuator(api, request_timeout=3.0)
    target = policy(kubernetes={"namespace": namespace, "name": name}).targets.kubernetes
    return asyncio.run(acts.read(target, name=name)).desired


@pytest.mark.integration
def test_host_with_token_file_and_ca_file_reads_the_target(kube: KubeCluster, namespace: str) -> None:
    api = load_api_client(
        host=kube.url,
        token_file=str(kube.token_file("scaler")),
        ca_file=str(kube.ca_file),
        kubeconfig=None,
        in_cluster=False,
    )
    assert _read(api, namespace) == 2


@pytest.mark.integration
def test_a_rotated_token_file_is_read_again(kube: KubeCluster, namespace: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-token\n")
    api = load_api_client(
        host=kube.url, token_file=str(token), ca_file=str(kube.ca_file), kubeconfig=None, in_cluster=False
    )
    acts = _actuators(api)
    pol = policy(kubernetes={"namespace": namespace, "name": "chat"})
    assert asyncio.run(acts.read(pol)).replicas is None  # 401
    token.write_text(kube.token_file("scaler").read_text())
    capacity = asyncio.run(acts.read(pol))
    assert capacity.replicas is not None
    assert capacity.replicas.desired == 2
    assert acts.unavailable("chat") == Unavailable.NONE


@pytest.mark.integration
def test_kubeconfig_with_a_context_reads_the_target(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    path = kube.kubeconfig("scaler", path=tmp_path / "config")
    api = load_api_client(host=None, kubeconfig=str(path), context="test", in_cluster=False)
    assert _read(api, namespace) == 2
    with pytest.raises(ValueError, match=r"kubeconfig .*config.*nowhere"):
        load_api_client(host=None, kubeconfig=str(path), context="nowhere", in_cluster=False)


def test_unreadable_token_or_ca_files_are_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"kubernetes_token_file .*missing"):
        load_api_client(host="https://127.0.0.1:1", token_file=missing, kubeconfig=None, in_cluster=False)
    with pytest.raises(ValueError, match=r"kubernetes_ca_file .*missing"):
        load_api_client(host="https://127.0.0.1:1", ca_file=missing, kubeconfig=None, in_cluster=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"kubernetes_token_file .*empty"):
        load_api_client(host="https://127.0.0.1:1", token_file=str(empty), kubeconfig=None, in_cluster=False)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"kubernetes_host": "https://k:6443", "kubernetes_kubeconfig": "k.yaml"}, "conflict"),
        ({"kubernetes_host": "https://k:6443", "kubernetes_context": "prod"}, "conflict"),
        ({"kubernetes_in_cluster": True, "kubernetes_kubeconfig": "k.yaml"}, "conflict"),
        ({"kubernetes_in_cluster": True, "kubernetes_host": "https://k:6443"}, "conflict"),
        ({"kubernetes_token_file": "t"}, "need kubernetes_host"),
        ({"kubernetes_ca_file": "ca.crt", "kubernetes_kubeconfig": "k.yaml"}, "need kubernetes_host"),
        ({"kubernetes_host": "http://k:8080", "kubernetes_token_file": "t"}, "https://"),
    ],
)
def test_conflicting_connection_settings_are_refused(given: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(config_file=None, env={}, flags=given)


@pytest.mark.parametrize(
    "given",
    [
        {"kubernetes_host": "https://k:6443", "kubernetes_token_file": "t", "kubernetes_ca_file": "ca.crt"},
        {"kubernetes_kubeconfig": "k.yaml", "kubernetes_context": "prod"},
        {"kubernetes_context": "prod"},
        {"kubernetes_in_cluster": True},
        {"kubernetes_host": "http://127.0.0.1:8001"},  # kubectl proxy: no credentials of our own
    ],
)
def test_one_connection_source_is_accepted(given: dict[str, Any]) -> None:
    settings = load_settings(config_file=None, env={}, flags=given)
    assert {k: str(getattr(settings, k)) for k in given} == {k: str(v) for k, v in given.items()}


def test_scaler_run_exits_2_on_conflicting_connection_flags(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "scaler", "run", "--actuate", "--policy", str(tmp_path / "p.yaml"),
            "--kubernetes-host", "https://127.0.0.1:6443", "--kubeconfig", str(tmp_path / "config"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "kubernetes_host and kubernetes_kubeconfig/kubernetes_context conflict" in result.stderr


def _actuators(api: Any, registry: CollectorRegistry | None = None) -> Actuators:
    return Actuators(
        kubernetes=KubernetesActuator(api, request_timeout=3.0),
        serverless=None,
        metrics=ActuatorMetrics(registry or CollectorRegistry()),
        dry_run=False,
        retry=RETRY,
        failure_threshold=3,
        seed=1,
    )


def _client(kube: KubeCluster, case: str, tmp_path: Path) -> Any:
    ca_file = kube.ca_file
    token = "scaler"
    if case == "wrong CA":
        ca_file, _key = make_ca(tmp_path, name="other-ca")
    elif case == "bad token":
        (tmp_path / "bad").write_text("no-such-token\n")
        bad = str(tmp_path / "bad")
        return load_api_client(
            host=kube.url, token_file=bad, ca_file=str(ca_file), kubeconfig=None, in_cluster=False
        )
    elif case == "no rights":
        token = "plain"
    return load_api_client(
        host=kube.url,
        token_file=str(kube.token_file(token)),
        ca_file=str(ca_file),
        kubeconfig=None,
        in_cluster=False,
    )


PERMANENT = {  # case -> (target name, what the report says)
    "bad token": ("chat", "HTTP 401 Unauthorized: the API refused the credentials"),
    "no rights": ("chat", "HTTP 403 Forbidden: forbidden by RBAC"),
    "wrong CA": ("chat", "TLS verification of the API server failed"),
    "missing target": ("ghost", "HTTP 404 Not Found: not found (check the policy's targets"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(PERMANENT))
def test_permanent_errors_are_not_retried_and_reported_once(
    kube: KubeCluster, namespace: str, tmp_path: Path, case: str
) -> None:
    name, message = PERMANENT[case]
    registry = CollectorRegistry()
    acts = _actuators(_client(kube, case, tmp_path), registry)
    pol = policy(kubernetes={"namespace": namespace, "name": name})
    target = f"Deployment/{namespace}/{name}"
    with structlog.testing.capture_logs() as logs:
        capacities = [asyncio.run(acts.read(pol)) for _ in range(3)]
    assert [c.replicas for c in capacities] == [None, None, None]
    reports = [e for e in logs if e["event"] == "actuation_failed_permanently"]
    assert len(reports) == 1, logs
    assert reports[0]["target"] == target
    assert message in reports[0]["error"]
    assert not [e for e in logs if e["event"] in ("actuation_failed", "capacity_unavailable")]
    assert acts.unavailable("chat") == Unavailable.KUBERNETES  # at once, not after failure_threshold
    labels = {"kind": "replicas", "target": target}
    assert registry.get_sample_value("scaler_actuator_retries_total", labels) == 0  # never retried
    assert registry.get_sample_value("scaler_actuator_failures_total", labels) == 3
    flagged = {"model": "chat", "kind": "kubernetes"}
    assert registry.get_sample_value("scaler_capacity_unavailable", flagged) == 1
