"""The bridge's cycle over real HTTP endpoints with a scripted discovery: static and discovered targets
together, rates from the second scrape on, a listing error keeping the last list, a pod leaving once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from scaler.adapters.vllm import BridgeOptions, DiscoveryError, VllmBridge
from scaler.core.events import MetricEvent
from scaler.settings import Settings

MODEL = "llama-8b"


class ScriptedDiscovery:
    """A discovery that answers each listing with the next entry of ``script`` (an error raises)."""

    def __init__(self, script: list[dict[str, str] | DiscoveryError]) -> None:
        self.script = script
        self.calls = 0

    async def targets(self) -> dict[str, str]:
        answer = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(answer, DiscoveryError):
            raise answer
        return dict(answer)


class Server:
    """One vLLM-format endpoint whose counters the test moves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        Gauge("vllm:num_requests_running", "r", labels, registry=self.registry).labels(MODEL).set(2)
        self.success = Counter(
            "vllm:request_success", "s", [*labels, "finished_reason"], registry=self.registry
        )
        self.prompt = Counter("vllm:prompt_tokens", "p", labels, registry=self.registry)
        self.output = Counter("vllm:generation_tokens", "g", labels, registry=self.registry)
        self.http, _thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.http.server_port}/metrics"

    def serve(self, requests: int) -> None:
        self.success.labels(MODEL, "stop").inc(requests)
        self.prompt.labels(MODEL).inc(100 * requests)
        self.output.labels(MODEL).inc(10 * requests)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    found = [Server() for _ in range(3)]
    yield found
    for server in found:
        server.http.shutdown()
        server.http.server_close()


def test_static_and_discovered_targets_rates_and_a_pod_leaving_once(servers: list[Server]) -> None:
    static, pod_a, pod_b = servers
    discovery = ScriptedDiscovery(
        [
            {pod_a.url: "vllm-a", pod_b.url: "vllm-b"},
            DiscoveryError("forbidden", "HTTP 403"),  # the last good list is kept
            {pod_a.url: "vllm-a"},  # vllm-b was deleted
        ]
    )
    registry = CollectorRegistry()
    bridge = VllmBridge(
        targets=[static.url],
        kafka=Settings().kafka,
        options=BridgeOptions(interval_seconds=5, timeout_seconds=2, refresh_seconds=5),
        registry=registry,
        discovery=discovery,
    )

    async def cycles() -> list[list[MetricEvent]]:
        found = []
        async with aiohttp.ClientSession() as session:
            for k in range(4):
                for n, server in enumerate(servers):
                    server.serve(10 * (n + 1))  # 2, 4 and 6 requests/s over 5 s
                found.append(await bridge.scrape_once(session, now=1000.0 + 5 * k))
        return found

    first, second, third, fourth = asyncio.run(cycles())
    static_name = static.url.split("/")[2]
    assert sorted(e.replica for e in first) == sorted([static_name, "vllm-a", "vllm-b"])
    assert all(e.request_rate is None for e in first)  # the first scrape has no rate
    rates = {
        e.replica: (e.request_rate, e.prompt_token_rate, e.output_token_rate, e.rate_seconds) for e in second
    }
    assert rates == {
        static_name: (2.0, 200.0, 20.0, 5.0),
        "vllm-a": (4.0, 400.0, 40.0, 5.0),
        "vllm-b": (6.0, 600.0, 60.0, 5.0),
    }
    assert sorted(e.replica for e in second) == sorted(e.replica for e in first)  # listing failed: kept
    gone = [e for e in third if e.replica == "vllm-b"]
    assert [(e.ready, e.running) for e in gone] == [(False, 0)]  # published not ready once
    assert "vllm-b" not in {e.replica for e in fourth}  # then forgotten
    assert sorted(e.replica for e in fourth) == sorted([static_name, "vllm-a"])
    errors = {
        s.labels["reason"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "scaler_bridge_discovery_errors_total"
    }
    assert errors == {"forbidden": 1.0}
