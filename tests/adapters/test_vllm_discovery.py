"""Which pods become vLLM targets (``--selector``): Ready, with an IP, not deleting; listed on the real
apiserver, with its errors named."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from scaler import cli
from scaler.adapters.kubernetes import load_api_client
from scaler.adapters.vllm import DiscoveryError
from scaler.adapters.vllm_discovery import PodDiscovery, targets_of
from tests.conftest import free_port
from tests.kube_cluster import KubeCluster, bind_role


def _pod(
    name: str,
    *,
    ip: str | None = "10.0.0.7",
    ready: str | None = "True",
    deleting: bool = False,
    ports: dict[str, int] | None = None,
) -> client.V1Pod:
    conditions = [] if ready is None else [client.V1PodCondition(type="Ready", status=ready)]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name, deletion_timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) if deleting else None
        ),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="vllm",
                    ports=[
                        client.V1ContainerPort(name=n, container_port=p) for n, p in (ports or {}).items()
                    ],
                )
            ]
        ),
        status=client.V1PodStatus(pod_ip=ip, conditions=conditions),
    )


@pytest.mark.parametrize(
    ("pod", "port", "expected"),
    [
        (_pod("vllm-0"), 8000, {"http://10.0.0.7:8000/metrics": "vllm-0"}),
        (_pod("vllm-0", ports={"http": 8080}), "http", {"http://10.0.0.7:8080/metrics": "vllm-0"}),
        (_pod("vllm-0", ports={"grpc": 9000}), "http", {}),  # no port of that name
        (_pod("vllm-0", ip=None), 8000, {}),  # not scheduled yet
        (_pod("vllm-0", ready="False"), 8000, {}),  # loading the model
        (_pod("vllm-0", ready=None), 8000, {}),
        (_pod("vllm-0", deleting=True), 8000, {}),  # terminating
        (_pod("vllm-0", ip="fd00::7"), 8000, {"http://[fd00::7]:8000/metrics": "vllm-0"}),
    ],
)
def test_only_ready_pods_with_an_ip_and_the_port_become_targets(
    pod: client.V1Pod, port: int | str, expected: dict[str, str]
) -> None:
    assert targets_of([pod], port=port, path="/metrics") == expected


def test_several_pods_each_on_its_own_named_port() -> None:
    pods: list[Any] = [
        _pod("b", ip="127.0.0.1", ports={"http": 9001}),
        _pod("a", ip="127.0.0.1", ports={"http": 9000}),
        _pod("c", ready="False", ports={"http": 9002}),
    ]
    assert targets_of(pods, port="http", path="/m") == {
        "http://127.0.0.1:9000/m": "a",
        "http://127.0.0.1:9001/m": "b",
    }


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "give --targets URLs and/or a --selector"),
        (["--selector", "app=vllm", "--refresh", "0"], {}, "--refresh must be > 0"),
        (["--selector", "app=vllm", "--port", "70000"], {}, "--port '70000' is not a port number"),
        (
            ["--selector", "app=vllm"],
            {"SCALER_KUBERNETES_KUBECONFIG": "/nonexistent/kubeconfig"},
            "kubernetes: cannot load kubeconfig /nonexistent/kubeconfig",
        ),
    ],
)
def test_bad_discovery_arguments_exit_2_naming_the_problem(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["bridge", "vllm", *argv]) == 2
    assert message in capsys.readouterr().err


def _discover(api: Any, namespace: str) -> dict[str, str]:
    found = PodDiscovery(api, namespace=namespace, selector="app=vllm", port="http", request_timeout=3.0)
    return asyncio.run(found.targets())


def test_pods_listed_on_the_real_apiserver_and_its_errors_named(
    kube: KubeCluster, kube_namespace: str
) -> None:
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        for name, app in (("vllm-0", "vllm"), ("vllm-1", "vllm"), ("web-0", "web")):
            container = {"name": "vllm", "image": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}
            manifest = {
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [container]},
            }
            core.create_namespaced_pod(kube_namespace, manifest)  # type: ignore[arg-type]
        ready = [{"type": "Ready", "status": "True"}]
        for name in ("vllm-0", "web-0"):  # vllm-1 stays unscheduled: no IP, not Ready
            status = {"phase": "Running", "podIP": "10.1.2.3", "conditions": ready}
            core.patch_namespaced_pod_status(name, kube_namespace, {"status": status})
    bind_role(
        kube,
        namespace=kube_namespace,
        user="scaler",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    )
    token, ca = str(kube.token_file("scaler")), str(kube.ca_file)
    with load_api_client(
        host=kube.url, token_file=token, ca_file=ca, kubeconfig=None, in_cluster=False
    ) as api:
        assert _discover(api, kube_namespace) == {"http://10.1.2.3:8000/metrics": "vllm-0"}
        with pytest.raises(DiscoveryError) as caught:
            _discover(api, "kube-system")  # the Role is of one namespace only
        assert caught.value.reason == "forbidden"
    plain = str(kube.token_file("plain"))
    with load_api_client(
        host=kube.url, token_file=plain, ca_file=ca, kubeconfig=None, in_cluster=False
    ) as api:
        with pytest.raises(DiscoveryError) as caught:
            _discover(api, kube_namespace)
        assert caught.value.reason == "forbidden"
    closed = f"https://127.0.0.1:{free_port()}"
    with load_api_client(host=closed, token_file=token, ca_file=ca, kubeconfig=None, in_cluster=False) as api:
        with pytest.raises(DiscoveryError) as caught:
            _discover(api, kube_namespace)
        assert caught.value.reason == "unreachable"
