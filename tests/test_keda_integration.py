"""KEDA's view of a real ``scaler run``: a gRPC client generated from the same .proto (as KEDA's operator
calls it) against daemons on the real tansu broker, with the real planner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from conftest import Broker, free_port, wait_for_tcp
from integration_fixtures import kafka_settings, produce, request_event, settings_env

from scaler.adapters import externalscaler_pb2 as pb
from scaler.adapters import externalscaler_pb2_grpc as pb_grpc
from scaler.adapters import kafka

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ["llama-8b", "mistral-7b", "qwen-14b"]


def _policy(models: list[str]) -> str:
    """Small replicas (5 req/s of 200 prompt tokens each) and no serverless: a burst needs replicas."""
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            "    behavior: {interval_seconds: 1}",
            "    forecast: {bucket_seconds: 1, horizon_seconds: 30, seasonalities_seconds: [60]}",
            "    replica: {prefill_tokens_per_second: 1000, decode_tokens_per_second: 500}",
            "    bounds: {min_replicas: 0, max_replicas: 40, serverless_quota: 0}",
        ]
    return "\n".join(lines) + "\n"


class Daemon:
    """A ``scaler run`` subprocess serving KEDA's external scaler on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.http_port = free_port()
        self.keda_port = free_port()
        env = {
            **env,
            "SCALER_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "SCALER_KEDA_LISTEN": f"127.0.0.1:{self.keda_port}",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scaler", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),  # a file: a pipe nobody reads would fill and stall the daemon
        )

    def wait_listening(self) -> None:
        wait_for_tcp(self.keda_port, timeout=60)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log.read_text(errors="replace")


@pytest.fixture
def env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policies.yaml"
    policy.write_text(_policy(MODELS))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=5.0)
    return {**os.environ, **settings_env(settings), "SCALER_DRY_RUN": "true"}


def _ref(model: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=model, namespace="inference", scalerMetadata={"model": model})


async def _metric(stub: pb_grpc.ExternalScalerStub, model: str) -> int | tuple[grpc.StatusCode, str]:
    """Return the model's metric value, or the status KEDA would get."""
    request = pb.GetMetricsRequest(scaledObjectRef=_ref(model), metricName=f"spillway-replicas-{model}")
    try:
        response = await stub.GetMetrics(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return int(response.metricValues[0].metricValue)


async def _send(bootstrap: str, topic: str, model: str, *, per_second: int, seconds: int, start: int) -> None:
    """Produce ``per_second`` arrivals stamped now, once a second for ``seconds``."""
    for s in range(seconds):
        now = time.time()
        events = [(model, request_event(model, now, start + s * per_second + k)) for k in range(per_second)]
        await produce(bootstrap, topic, events)
        await asyncio.sleep(1.0)


def test_keda_follows_a_burst_through_get_metrics_and_the_stream(
    broker: Broker, env: dict[str, str], tmp_path: Path
) -> None:
    daemon = Daemon(env, tmp_path / "daemon.log")
    topic = env["SCALER_KAFKA_REQUESTS_TOPIC"]
    model = MODELS[0]

    async def run() -> tuple[list[object], int, int, list[bool], float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.keda_port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            spec = await stub.GetMetricSpec(_ref(model), timeout=5)
            seen: list[object] = [(spec.metricSpecs[0].metricName, spec.metricSpecs[0].targetSize)]
            # a trickle until the model is decided: before, KEDA gets UNAVAILABLE and retries
            deadline = time.monotonic() + 60
            base: int | tuple[grpc.StatusCode, str] = await _metric(stub, model)
            sent = 0
            while not isinstance(base, int) and time.monotonic() < deadline:
                seen.append(base[0])
                await _send(broker.bootstrap, topic, model, per_second=1, seconds=1, start=sent)
                sent += 1
                base = await _metric(stub, model)
            assert isinstance(base, int), base
            stream = stub.StreamIsActive(_ref(model))
            pushes = [(await asyncio.wait_for(stream.read(), 10)).result]

            async def follow() -> None:
                while True:
                    pushes.append((await stream.read()).result)

            follower = asyncio.create_task(follow())
            burst = asyncio.create_task(
                _send(broker.bootstrap, topic, model, per_second=60, seconds=6, start=10_000)
            )
            started = time.monotonic()
            peak = base
            while time.monotonic() - started < 30:
                value = await _metric(stub, model)
                if isinstance(value, int):
                    peak = max(peak, value)
                if peak >= base + 3:
                    break
                await asyncio.sleep(0.25)
            rose_after = time.monotonic() - started
            await burst
            follower.cancel()
            stream.cancel()
            return seen, base, peak, pushes, rose_after

    try:
        daemon.wait_listening()
        seen, base, peak, pushes, rose_after = asyncio.run(run())
    finally:
        err = daemon.stop()
    assert daemon.process.returncode == 0, err[-3000:]
    assert seen[0] == (f"spillway-replicas-{model}", 1)
    assert all(code == grpc.StatusCode.UNAVAILABLE for code in seen[1:])
    decisions = [line for line in err.splitlines() if '"decision"' in line]
    assert peak >= base + 3, f"desired replicas stayed {base}..{peak}: {decisions[-3:]}"
    assert len(pushes) >= 3  # one push at once, then one per decision (1 s interval)
    assert pushes[-1] is True
    print(f"KEDA metric rose from {base} to {peak} replicas {rose_after:.1f} s after the burst began")


def _one_per_partition(partitions: int) -> list[str]:
    """Return model names whose records land on each of ``partitions`` (so every member owns some)."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(kafka.partition_for(f"model-{i}", partitions), f"model-{i}")
    return [found[p] for p in range(partitions)]


async def _ready(port: int, *, seconds: float = 60) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"daemon on {port} never became ready")


class Topic:
    """The decisions topic as the test reads it itself: the newest decision of each model, and who
    published it (the ``spillway-member`` header)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.newest: dict[str, tuple[float, int, str]] = {}  # model -> (at, replicas, member)
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await self.consumer.start()
        parts: list[TopicPartition] = []
        while not parts:
            await self.consumer.topics()
            parts = [
                TopicPartition(self.topic, p)
                for p in sorted(self.consumer.partitions_for_topic(self.topic) or ())
            ]
            await asyncio.sleep(0.1)
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def read(self) -> None:
        assert self.consumer is not None
        for records in (await self.consumer.getmany(timeout_ms=200)).values():
            for r in records:
                message = json.loads(r.value)
                member = dict(r.headers).get("spillway-member", b"").decode()
                known = self.newest.get(message["model"])
                if known is None or message["at"] >= known[0]:
                    self.newest[message["model"]] = (message["at"], message["desired"]["replicas"], member)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def test_two_daemons_in_one_group_answer_every_model_with_its_owners_decision(
    broker: Broker, tmp_path: Path
) -> None:
    """KEDA's operator keeps one connection per scalerAddress, which a Service pins to one pod: each
    pod must answer every model, with the decision its owner made and published."""
    models = _one_per_partition(4)
    rates = {m: 2 + 6 * i for i, m in enumerate(models)}  # req/s: different replica counts per model
    policy = tmp_path / "policies.yaml"
    policy.write_text(_policy(models))
    settings = kafka_settings(broker.bootstrap, policy_files=(policy,), checkpoint_interval_seconds=5.0)
    env = {**os.environ, **settings_env(settings), "SCALER_DRY_RUN": "true"}
    daemons = [Daemon(env, tmp_path / "a.log"), Daemon(env, tmp_path / "b.log")]
    topic = Topic(broker.bootstrap, settings.kafka_decisions_topic)

    async def traffic(seconds: float, extra: dict[str, int] | None = None) -> None:
        until = time.monotonic() + seconds
        n = 0
        while time.monotonic() < until:
            now = time.time()
            events = [
                (m, request_event(m, now, n + k))
                for m in models
                for k in range(rates[m] + (extra or {}).get(m, 0))
            ]
            n += len(events)
            await produce(broker.bootstrap, settings.kafka_requests_topic, events)
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - now)))

    async def run() -> dict[str, object]:
        await asyncio.gather(*(_ready(d.http_port) for d in daemons))
        ready_at = time.monotonic()
        await topic.start()
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.keda_port}") for d in daemons]
        stubs = [pb_grpc.ExternalScalerStub(c) for c in channels]
        sending = asyncio.create_task(traffic(300))
        found: dict[str, object] = {}
        try:
            answers: dict[str, list[int | tuple[grpc.StatusCode, str]]] = {}
            agreed = 0
            deadline = time.monotonic() + 120
            while agreed < 3 and time.monotonic() < deadline:  # three checks in a row
                await asyncio.sleep(0.5)
                answers = {m: [await _metric(stub, m) for stub in stubs] for m in models}
                await topic.read()
                same = all(
                    m in topic.newest and got == [topic.newest[m][1]] * 2 for m, got in answers.items()
                )
                # the traffic has shown: every model wants replicas, not all the same number
                shown = len({r for _, r, _ in topic.newest.values()} - {0}) >= 2
                same = same and shown and all(r > 0 for _, r, _ in topic.newest.values())
                agreed = agreed + 1 if same else 0
                if same and "agreed_after" not in found:
                    found["agreed_after"] = time.monotonic() - ready_at
            found["answers"] = answers
            found["newest"] = dict(topic.newest)
            # both streams push every decision of a model, whoever owns it
            streams = [stub.StreamIsActive(_ref(models[0])) for stub in stubs]
            pushes: list[list[bool]] = [[], []]

            async def follow(i: int) -> None:
                while True:
                    pushes[i].append((await streams[i].read()).result)

            followers = [asyncio.create_task(follow(i)) for i in range(2)]
            await asyncio.sleep(4.0)
            for task in followers:
                task.cancel()
            for stream in streams:
                stream.cancel()
            found["pushes"] = pushes
            # a burst on one model: when does each daemon answer the owner's higher count?
            model = models[0]
            base = [await _metric(stub, model) for stub in stubs]
            sending.cancel()
            burst = asyncio.create_task(traffic(8, extra={model: 60}))
            rose: list[float | None] = [None, None]
            started = time.monotonic()
            while None in rose and time.monotonic() - started < 20:
                for i, stub in enumerate(stubs):
                    value = await _metric(stub, model)
                    if (
                        rose[i] is None
                        and isinstance(value, int)
                        and isinstance(base[i], int)
                        and value > base[i]
                    ):
                        rose[i] = time.monotonic() - started
                await asyncio.sleep(0.02)
            burst.cancel()
            found["base"], found["rose"] = base, rose
            # the first daemon dies: the other answers its models from the topic, then as their new owner
            sending = asyncio.create_task(traffic(60))
            daemons[0].process.kill()
            killed, killed_at = time.monotonic(), time.time()
            calls = 0
            refused: list[str] = []
            took_over: float | None = None
            while took_over is None and time.monotonic() - killed < 40:
                got = {m: await _metric(stubs[1], m) for m in models}
                calls += len(got)
                refused += [a[1] for a in got.values() if not isinstance(a, int)]
                await topic.read()
                members = {topic.newest[m][2] for m in models if topic.newest[m][0] > killed_at}
                if len(members) == 1 and all(topic.newest[m][0] > killed_at for m in models):
                    took_over = time.monotonic() - killed  # every model decided by the survivor
                await asyncio.sleep(0.1)
            found["calls"], found["refused"], found["took_over"] = calls, refused, took_over
            found["after"] = {m: await _metric(stubs[1], m) for m in models}
            await topic.read()
            found["newest_after"] = dict(topic.newest)
        finally:
            sending.cancel()
            for channel in channels:
                await channel.close()
            await topic.stop()
        return found

    try:
        for daemon in daemons:
            daemon.wait_listening()
        found = asyncio.run(run())
    finally:
        logs = [d.stop() for d in daemons]
    assert [d.process.returncode for d in daemons] == [-signal.SIGKILL, 0], [log[-2000:] for log in logs]
    answers = found["answers"]
    newest = found["newest"]
    assert isinstance(answers, dict)
    assert isinstance(newest, dict)
    for model, got in answers.items():  # each daemon answers each model with its owner's decision
        assert got == [newest[model][1]] * 2, (model, got, newest.get(model))
    members = {member for _, _, member in newest.values()}
    assert len(members) == 2, newest  # the models are owned by both daemons: half came from the topic
    assert len({replicas for _, replicas, _ in newest.values()}) >= 2, newest  # not one value for all
    pushes = found["pushes"]
    assert isinstance(pushes, list)
    assert all(len(p) >= 3 for p in pushes), pushes  # one at once, then one per decision (1 s interval)
    rose = found["rose"]
    assert isinstance(rose, list)
    assert None not in rose, (found["base"], rose)
    took_over = found["took_over"]
    assert isinstance(took_over, float), found["refused"]
    after, newest_after = found["after"], found["newest_after"]
    assert isinstance(after, dict)
    assert isinstance(newest_after, dict)
    # the survivor owns every model now and answers each with its own, newest decision
    assert after == {m: newest_after[m][1] for m in after}, (after, newest_after)
    refused = found["refused"]
    assert isinstance(refused, list)
    assert all("fresh" in why or "no decision yet" in why for why in refused), refused
    print(
        f"owner killed: the survivor decided every model {took_over:.1f} s later; meanwhile it refused"
        f" {len(refused)} of {found['calls']} GetMetrics calls {sorted({w.split(':')[0] for w in refused})}"
    )
    print(
        f"two daemons: both answered {len(answers)} of {len(answers)} models with the owner's decision"
        f" ({ {m: r for m, (_, r, _) in sorted(newest.items())} } replicas)"
        f" {found['agreed_after']:.1f} s after both were ready; streams pushed {[len(p) for p in pushes]}"
        f" in 4 s; after a burst the daemons answered the higher count at {rose[0]:.2f} s and {rose[1]:.2f} s"
        f" (apart by {abs(rose[0] - rose[1]):.2f} s)"
    )
