"""The vLLM bridge against real HTTP endpoints (prometheus_client exposing vLLM's metrics, both name
generations, and malformed ones), the real broker, and a daemon whose decisions follow what it scraped."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Broker, free_port
from integration_fixtures import kafka_settings, policy_yaml, read_topic, sample, settings_env
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from scaler.adapters.vllm import BridgeOptions, VllmBridge, counts
from scaler.app import build_kafka_daemon
from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import load_policies
from scaler.core.types import Decision, DemandForecast, Observed
from tests.kube_cluster import KubeCluster, bind_role, until

pytestmark = pytest.mark.integration

MODEL = "llama-8b"
SLOW_SECONDS = 8  # the /slow endpoint answers after this; the bridge times out after 1 s
LATE_SECONDS = 0.4  # the /late endpoint answers after this, well within the timeout
# a valid 3.4 MB scrape: vLLM's gauges among 40,000 lines of metrics the bridge does not read
BIG_BODY = (
    f'vllm:num_requests_running{{model_name="{MODEL}"}} 9\n'
    + "".join(
        f'python_gc_objects_collected_total{{generation="{i}",pod="vllm-0"}} {i}.0\n' for i in range(40_000)
    )
).encode()


def _vllm(*, running: float, waiting: float, kv: float, old_names: bool) -> tuple[object, int]:
    """Serve one vLLM server's gauges with prometheus_client; return (server, port)."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    Gauge("vllm:num_requests_running", "Requests in the batch.", labels, registry=registry).labels(
        MODEL, "0"
    ).set(running)
    Gauge("vllm:num_requests_waiting", "Requests waiting.", labels, registry=registry).labels(MODEL, "0").set(
        waiting
    )
    kv_name = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
    Gauge(kv_name, "KV-cache usage, 0..1.", labels, registry=registry).labels(MODEL, "0").set(kv)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server, int(server.server_port)


class _Broken(http.server.BaseHTTPRequestHandler):
    """Malformed /metrics: garbage, a body over the cap, a slow answer, a NaN gauge."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        if self.path == "/late":
            time.sleep(LATE_SECONDS)
        body = {
            "/garbage": b"<html><body>502 Bad Gateway</body></html>",
            "/huge": b"# padding\n" * 200_000,  # 2 MB
            "/slow": f'vllm:num_requests_running{{model_name="{MODEL}"}} 1\n'.encode(),
            "/nan": f'vllm:num_requests_running{{model_name="{MODEL}"}} NaN\n'.encode(),
            "/big": BIG_BODY,
            "/late": f'vllm:num_requests_running{{model_name="{MODEL}"}} 5\n'.encode(),
        }.get(self.path, b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the bridge gave up on it
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the base class's name
        pass


class Endpoints(dict[str, str]):
    """Target URLs by name (two vLLM servers and four malformed ones); ``big_and_late`` are two healthy
    ones kept apart (a big valid body, a late answer); :meth:`stop` takes one HTTP server down."""

    def __init__(self, urls: dict[str, str], servers: dict[str, object], big_and_late: list[str]) -> None:
        super().__init__(urls)
        self.servers = servers
        self.big_and_late = big_and_late

    def stop(self, name: str) -> None:
        server = self.servers.pop(name)
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    new, new_port = _vllm(running=7, waiting=3, kv=0.42, old_names=False)
    old, old_port = _vllm(running=2, waiting=0, kv=0.9, old_names=True)
    broken = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    broken.daemon_threads = True
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{broken.server_port}"
    urls = {
        "new": f"http://127.0.0.1:{new_port}/metrics",
        "old": f"http://127.0.0.1:{old_port}/metrics",
        **{name: f"{base}/{name}" for name in ("garbage", "huge", "slow", "nan")},
    }
    found = Endpoints(urls, {"new": new, "old": old, "broken": broken}, [f"{base}/big", f"{base}/late"])
    yield found
    for name in list(found.servers):
        found.stop(name)


def _scrape_once(bridge: VllmBridge) -> tuple[list[Any], float]:
    """Return the events of one scrape of every target by ``bridge``, and the seconds it took."""

    async def run() -> tuple[list[Any], float]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            events = await bridge.scrape_once(session, now=time.time())
            return list(events), time.monotonic() - started

    return asyncio.run(run())


def test_malformed_targets_are_counted_and_never_hold_up_the_others(
    endpoints: dict[str, str], tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    bridge = VllmBridge(
        targets=list(endpoints.values()),
        kafka=kafka_settings("127.0.0.1:9").kafka,
        options=BridgeOptions(interval_seconds=1, timeout_seconds=1.0, max_bytes=1024 * 1024),
        registry=registry,
    )

    events, elapsed = _scrape_once(bridge)
    by_replica = {e.replica: e for e in events}
    new, old = (endpoints[k].split("/")[2] for k in ("new", "old"))
    assert sorted(by_replica) == sorted([new, old])
    assert (by_replica[new].running, by_replica[new].waiting, by_replica[new].kv_cache_usage) == (7, 3, 0.42)
    assert (by_replica[old].running, by_replica[old].kv_cache_usage) == (2, 0.9)
    assert counts(registry) == {
        (endpoints["garbage"], "not_exposition"): 1.0,
        (endpoints["huge"], "too_big"): 1.0,
        (endpoints["slow"], "timeout"): 1.0,
        (endpoints["nan"], "bad_value"): 1.0,
    }
    # the slow endpoint was cut at its 1 s timeout: waiting for it would take SLOW_SECONDS; the margin
    # is for a loaded machine
    assert elapsed < SLOW_SECONDS - 3
    print(f"one scrape of 6 targets (one {SLOW_SECONDS} s slow, 1 s timeout): {elapsed:.2f} s")


def test_a_big_valid_scrape_does_not_hold_up_a_healthy_target(endpoints: Endpoints) -> None:
    registry = CollectorRegistry()
    bridge = VllmBridge(
        targets=endpoints.big_and_late,
        kafka=kafka_settings("127.0.0.1:9").kafka,
        options=BridgeOptions(interval_seconds=1, timeout_seconds=1.0, max_bytes=4 * 1024 * 1024),
        registry=registry,
    )

    events, elapsed = _scrape_once(bridge)
    # both read, neither counted as failed: the big body is read off the event loop, skipping what the
    # bridge does not use, while the other target's answer arrives
    assert counts(registry) == {}
    assert sorted((e.running, e.ready) for e in events) == [(5, True), (9, True)]
    print(
        f"one scrape of a {len(BIG_BODY) / 1e6:.1f} MB body and a {LATE_SECONDS} s late one: {elapsed:.2f} s"
    )


def _ready_planner(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner that asks for one more replica than the bridge reports ready."""
    return Decision(
        at=now,
        replicas=observed.replicas_ready + 1,
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason=f"{observed.replicas_ready} ready",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={},
    )


def test_the_bridge_feeds_the_daemon_and_its_decisions_follow_the_scrapes(
    broker: Broker, endpoints: Endpoints, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text(policy_yaml([MODEL]))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=5.0)
    log = tmp_path / "bridge.log"
    bridge_port = free_port()
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaler",
            "bridge",
            "vllm",
            "--targets",
            ",".join(endpoints.values()),
            "--bootstrap-servers",
            broker.bootstrap,
            "--interval",
            "1",
            "--timeout",
            "1",
            "--max-bytes",
            str(1024 * 1024),
            "--listen",
            f"127.0.0.1:{bridge_port}",
        ],
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )

    async def run() -> tuple[list[int], int, int, list[object], str]:
        daemon = build_kafka_daemon(
            settings=settings, policies=load_policies((policy,)), planner=_ready_planner
        )
        task = asyncio.create_task(daemon.run(install_signals=False))
        replicas: list[int] = []
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and (not replicas or replicas[-1] != 3):  # 2 ready + 1
            records = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=seen + 1, seconds=5
            )
            seen = len(records)
            replicas = [json.loads(r.value)["desired"]["replicas"] for r in records]
        endpoints_down = time.monotonic()
        endpoints.stop("new")  # one vLLM server goes away: the bridge reports it not ready
        while time.monotonic() - endpoints_down < 30 and replicas[-1] != 2:
            records = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=seen + 1, seconds=5
            )
            seen = len(records)
            replicas = [json.loads(r.value)["desired"]["replicas"] for r in records]
        metrics = await read_topic(broker.bootstrap, settings.kafka_metrics_topic, at_least=4)
        topic = settings.kafka_metrics_topic
        consumed = int(sample(daemon.metrics, "scaler_events_consumed_total", topic=topic))
        rejected = sum(
            int(s.value)
            for m in daemon.metrics.registry.collect()
            for s in m.samples
            if s.name == "scaler_events_rejected_total"
        )
        daemon.request_stop(signal.SIGTERM)
        await task
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bridge_port}/metrics") as r:
            exposition = await r.text()
        return replicas, consumed, rejected, metrics, exposition

    try:
        replicas, consumed, rejected, metric_records, exposition = asyncio.run(run())
    finally:
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert bridge.returncode == 0, log.read_text()[-3000:]
    assert 3 in replicas, replicas  # both vLLM servers ready
    assert replicas[-1] == 2, replicas  # one went away: the daemon saw it not ready
    assert consumed >= 4
    assert rejected == 0
    events = [json.loads(r.value) for r in metric_records]  # type: ignore[attr-defined]
    assert {e["model"] for e in events} == {MODEL}
    kv = {e["replica"]: e["kv_cache_usage"] for e in events if e["ready"]}
    assert kv[endpoints["new"].split("/")[2]] == 0.42  # vllm:kv_cache_usage_perc
    assert kv[endpoints["old"].split("/")[2]] == 0.9  # vllm:gpu_cache_usage_perc
    failed = {(e["target"], e["reason"]) for e in lines if e["event"] == "scrape_failed"}
    for name, reason in (
        ("garbage", "not_exposition"),
        ("huge", "too_big"),
        ("slow", "timeout"),
        ("nan", "bad_value"),
    ):
        assert (endpoints[name], reason) in failed
    assert (endpoints["new"], "unreachable") in failed
    counted = f'scaler_bridge_scrape_errors_total{{reason="too_big",target="{endpoints["huge"]}"}}'
    assert any(line.startswith(counted) and float(line.split()[-1]) >= 1 for line in exposition.splitlines())
    assert lines[-1]["event"] == "stopped"
    assert not math.isnan(sum(kv.values()))


# -- rates from moving counters, targets discovered by label selector on the real apiserver ----------


class _MovingCounters:
    """A prometheus_client collector of one vLLM server whose counters climb at ``rate`` requests/s
    (100 prompt and 50 generated tokens each), computed at every scrape; ``restart`` zeroes them."""

    def __init__(self, rate: float, *, malformed: bool = False) -> None:
        self.lock = threading.Lock()
        self.rate = rate
        self.malformed = malformed
        self.base = 0.0
        self.since = time.time()

    def requests(self) -> float:
        with self.lock:
            return self.base + self.rate * (time.time() - self.since)

    def set_rate(self, rate: float) -> None:
        with self.lock:
            now = time.time()
            self.base += self.rate * (now - self.since)
            self.rate, self.since = rate, now

    def restart(self) -> None:
        with self.lock:
            self.base, self.since = 0.0, time.time()

    def collect(self) -> Iterator[Any]:
        labels = ["model_name", "engine"]
        for name, value in (("vllm:num_requests_running", 4.0), ("vllm:num_requests_waiting", 1.0)):
            gauge = GaugeMetricFamily(name, "vLLM gauge.", labels=labels)
            gauge.add_metric([MODEL, "0"], value)
            yield gauge
        served = self.requests()
        stop = CounterMetricFamily(
            "vllm:request_success", "Requests served.", labels=[*labels, "finished_reason"]
        )
        stop.add_metric([MODEL, "0", "stop"], math.floor(served * 0.75))
        stop.add_metric([MODEL, "0", "length"], served - math.floor(served * 0.75))
        yield stop
        for name, per in (("vllm:prompt_tokens", 100), ("vllm:generation_tokens", 50)):
            tokens = CounterMetricFamily(name, "Tokens.", labels=labels)
            tokens.add_metric([MODEL, "0"], math.nan if self.malformed and per == 50 else served * per)
            yield tokens


def _serve(collector: _MovingCounters) -> tuple[object, int]:
    registry = CollectorRegistry()
    registry.register(collector)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server, int(server.server_port)


def _create_pod(kube: KubeCluster, *, namespace: str, name: str, app: str, port: int, ready: bool) -> None:
    """Create pod ``name`` (label app) with container port "http"; Ready on 127.0.0.1 if ``ready``."""
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(
            namespace,
            {  # type: ignore[arg-type]  # the client takes a manifest as a dict too
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {
                    "containers": [
                        {"name": "vllm", "image": "vllm", "ports": [{"name": "http", "containerPort": port}]}
                    ]
                },
            },
        )
        if ready:  # what the kubelet would write: the pod's IP and its readiness
            conditions = [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]
            status = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
            core.patch_namespaced_pod_status(
                name, namespace, {"status": {**status, "conditions": conditions}}
            )


def _rate_planner(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner: one replica per 10 requests/s of the last bucket (the demand the daemon saw)."""
    rate = observed.request_rate or 0.0
    return Decision(
        at=now,
        replicas=math.ceil(rate / 10),
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason=f"{rate:.1f} requests/s",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={},
    )


def _weighted_rate(events: list[dict[str, Any]], field: str = "request_rate") -> float:
    seconds = sum(float(e["rate_seconds"]) for e in events)
    return sum(float(e[field]) * float(e["rate_seconds"]) for e in events) / seconds


def test_discovered_pods_counters_become_rates_and_the_daemon_decides_on_them(
    broker: Broker, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    ns, app = kube_namespace, "vllm"
    fast, slow, broken = _MovingCounters(10.0), _MovingCounters(5.0), _MovingCounters(3.0, malformed=True)
    servers = {name: _serve(c) for name, c in (("vllm-a", fast), ("vllm-b", slow), ("vllm-bad", broken))}
    for name, (_server, port) in servers.items():
        _create_pod(kube, namespace=ns, name=name, app=app, port=port, ready=True)
    _create_pod(kube, namespace=ns, name="vllm-loading", app=app, port=servers["vllm-a"][1], ready=False)
    _create_pod(kube, namespace=ns, name="other", app="web", port=servers["vllm-a"][1], ready=True)
    bind_role(
        kube,
        namespace=ns,
        user="scaler",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    )
    policy = tmp_path / "policies.yaml"
    policy.write_text(
        f"models:\n  - name: {MODEL}\n    behavior: {{interval_seconds: 1}}\n"
        "    forecast: {bucket_seconds: 5, horizon_seconds: 60, seasonalities_seconds: [120]}\n"
    )
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,))
    log = tmp_path / "bridge.log"
    bridge_port = free_port()
    env = {
        **os.environ,
        **settings_env(settings),
        "SCALER_KUBERNETES_HOST": kube.url,
        "SCALER_KUBERNETES_TOKEN_FILE": str(kube.token_file("scaler")),
        "SCALER_KUBERNETES_CA_FILE": str(kube.ca_file),
    }
    bridge = subprocess.Popen(
        [
            sys.executable, "-m", "scaler", "bridge", "vllm",
            "--selector", f"app={app}", "--namespace", ns, "--port", "http",
            "--interval", "1", "--timeout", "1", "--refresh", "1",
            "--listen", f"127.0.0.1:{bridge_port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip

    def logged(event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line["event"] == event]

    async def decisions_until(condition: Any, *, seconds: float, seen: list[int]) -> list[int]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            records = await read_topic(
                broker.bootstrap, settings.kafka_decisions_topic, at_least=len(seen) + 1, seconds=5
            )
            seen = [json.loads(r.value)["desired"]["replicas"] for r in records]
            at.extend(json.loads(r.value)["at"] for r in records[len(at) :])
            if condition(seen):
                break
        return seen

    at: list[float] = []  # when each decision was made

    marks: dict[str, float] = {}

    async def run() -> tuple[list[int], list[int], str]:
        daemon = build_kafka_daemon(
            settings=settings, policies=load_policies((policy,)), planner=_rate_planner
        )
        task = asyncio.create_task(daemon.run(install_signals=False))
        # 15 requests/s (the broken pod's counters carry no rate): 2 replicas, held for 3 decisions
        low = await decisions_until(lambda r: r[-3:] == [2, 2, 2], seconds=90, seen=[])
        marks["step"] = time.time()
        fast.set_rate(50.0)
        slow.set_rate(25.0)  # 75 requests/s: 8 replicas
        high = await decisions_until(lambda r: r[-2:] == [8, 8], seconds=60, seen=low)
        # the rates checked below are counter differences over scrape timestamps: a scrape read a loaded
        # second after its timestamp skews a 2 s window by 15% (a CI run read 42.9 for 50), a 13 s one by 8%
        await asyncio.sleep(max(0.0, marks["step"] + 15 - time.time()))
        marks["restart"] = time.time()
        fast.restart()  # a restarted vLLM server: its counters start again from 0
        await asyncio.sleep(3)
        with kube.api_client() as api:
            client.CoreV1Api(api).delete_namespaced_pod("vllm-b", ns)
        until(lambda: bool(logged("target_gone")), seconds=20, what="the deleted pod to leave the targets")
        with kube.api_client() as api:  # the bridge loses its RBAC: listing fails, the last list is kept
            client.RbacAuthorizationV1Api(api).delete_namespaced_role_binding("scaler-role", ns)
        until(lambda: bool(logged("discovery_failed")), seconds=20, what="a failed pod listing")
        marks["revoked"] = time.time()
        await asyncio.sleep(3)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bridge_port}/metrics") as r:
            exposition = await r.text()
        daemon.request_stop(signal.SIGTERM)
        await task
        return low, high, exposition

    try:
        low, high, exposition = asyncio.run(run())
        records = asyncio.run(
            read_topic(broker.bootstrap, settings.kafka_metrics_topic, at_least=10**9, seconds=5)
        )
    finally:
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
        for server, _port in servers.values():
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
    assert bridge.returncode == 0, log.read_text()[-3000:]
    assert low[-3:] == [2, 2, 2], low  # the daemon's decisions follow the counters, no request event exists
    assert high[-2:] == [8, 8], high
    events = [json.loads(r.value) for r in records]
    by_replica: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_replica.setdefault(e["replica"], []).append(e)
    assert sorted(by_replica) == ["vllm-a", "vllm-b", "vllm-bad"]  # Ready pods of the selector only
    a = by_replica["vllm-a"]
    assert "request_rate" not in a[0]  # the first scrape has no rate
    before = [e for e in a[1:] if e["ts"] < marks["step"]]
    after = [
        e for e in a if marks["step"] + 2 < e["ts"] - e.get("rate_seconds", 0) and e["ts"] < marks["restart"]
    ]
    assert _weighted_rate(before) == pytest.approx(10.0, rel=0.1)
    assert _weighted_rate(after) == pytest.approx(50.0, rel=0.1)
    assert _weighted_rate(after, "prompt_token_rate") == pytest.approx(5000.0, rel=0.1)
    assert _weighted_rate(after, "output_token_rate") == pytest.approx(2500.0, rel=0.1)
    assert all(e["request_rate"] >= 0 for e in events if "request_rate" in e)  # the restart: no negative rate
    assert any(e["ts"] > marks["revoked"] and e["ready"] for e in a)  # scraped on after the listing failed
    b = by_replica["vllm-b"]
    assert [e["ready"] for e in b].count(False) == 1  # the deleted pod: not ready once, then never again
    assert b[-1]["ready"] is False
    assert all(e["ready"] and "request_rate" not in e for e in by_replica["vllm-bad"])  # gauges, no rates
    assert logged("discovery_failed")[0]["reason"] == "forbidden"
    assert logged("counter_reset")[0]["target"].endswith(f":{servers['vllm-a'][1]}/metrics")
    resets = f'scaler_bridge_counter_resets_total{{target="http://127.0.0.1:{servers["vllm-a"][1]}/metrics"}}'
    assert any(line.startswith(resets) for line in exposition.splitlines()), exposition
    bad = f'reason="bad_counter",target="http://127.0.0.1:{servers["vllm-bad"][1]}/metrics"'
    assert any(bad in line for line in exposition.splitlines())
    first_eight = next(t for t, r in zip(at, high, strict=False) if r == 8 and t > marks["step"])
    took = first_eight - marks["step"]
    print(
        f"decisions {low[-3:]} at 15 requests/s, {high[-2:]} at 75 ({took:.1f} s after "
        f"the step, 5 s buckets, 1 s scrapes); vllm-a measured {_weighted_rate(before):.2f}/s (10) and "
        f"{_weighted_rate(after):.2f}/s (50); {len(events)} events"
    )
