"""Which pods become vLLM targets (the pure part of ``--selector``): Ready, with an IP, not deleting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from scaler.adapters.vllm_discovery import targets_of


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
