"""Fencing end to end: real ``scaler run`` processes in one consumer group on the tansu broker, one of
them SIGSTOPped past its session timeout and woken, and a third member joining and leaving.

What a user would see is read from the outside: the decisions topic (each record says in its
headers which member published it, in which group generation) and, with Kubernetes, the
apiserver's audit log of writes (each daemon is its own user). The promises:

* per model, the generation of published decisions never goes back: a member that lost a model
  never publishes for it after the new owner did (issue 17 item 5);
* every scale write on a target is made under its partition's Lease: by the member whose
  successful Lease write is the latest before it (issue 13 item 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scaler.adapters import kubernetes as kube_adapter
from scaler.adapters import lease as lease_adapter
from scaler.adapters.kafka import partition_for
from tests.conftest import Broker, free_port, wait_for_tcp
from tests.integration_fixtures import kafka_settings, produce, request_event, settings_env
from tests.kube_cluster import KubeCluster, bind_role, create_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def _models(per_partition: int) -> list[str]:
    """Return model names spread evenly over the request topic's partitions."""
    found: dict[int, list[str]] = defaultdict(list)
    k = 0
    while any(len(found[p]) < per_partition for p in range(PARTITIONS)):
        name = f"m{k}"
        part = partition_for(name, PARTITIONS)
        if len(found[part]) < per_partition:
            found[part].append(name)
        k += 1
    return sorted(m for names in found.values() for m in names)


class Member:
    """One ``scaler run`` process: its HTTP port, its log, and signals by its own PID."""

    def __init__(self, *, name: str, env: dict[str, str], port: int, log: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "run"], env=env, stdout=subprocess.DEVNULL, stderr=out
            )

    def metric(self, name: str) -> float:
        """Return the value of an unlabelled metric on /metrics (0 when absent or not answering)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return 0.0
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def total(self, name: str) -> float:
        """Return the sum of a labelled metric's samples on /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
        return sum(float(v) for v in re.findall(rf"^{name}\{{.*\}} (\S+)$", text, re.MULTILINE))

    def pause(self) -> None:
        """SIGSTOP, and return once every thread of the process is stopped (state T in /proc)."""
        self.process.send_signal(signal.SIGSTOP)
        until(self._all_threads_stopped, seconds=10, what=f"{self.name} stopped")

    def wake(self) -> int:
        """SIGCONT; return the wake time in whole epoch milliseconds, read while the process is still stopped.

        A record stamped before it was created before the pause; one stamped at or after it, after the wake.
        """
        assert self._all_threads_stopped(), f"{self.name} was not stopped"
        woken_ms = math.floor(time.time() * 1000)
        self.process.send_signal(signal.SIGCONT)
        return woken_ms

    def _all_threads_stopped(self) -> bool:
        tasks = Path(f"/proc/{self.process.pid}/task")
        states = []
        for stat in tasks.glob("*/stat"):
            with contextlib.suppress(OSError):  # a thread may end between the listing and the read
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        return bool(states) and all(state in ("T", "t") for state in states)

    def stop(self) -> int:
        """SIGTERM (and SIGCONT, in case it is stopped); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def until(condition: Callable[[], bool], *, seconds: float, what: str) -> float:
    """Return the seconds it took ``condition()`` to hold; raise AssertionError naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.1)
    return time.monotonic() - started


@contextlib.contextmanager
def trickle(bootstrap: str, topic: str, models: list[str]) -> Iterator[None]:
    """While in the block, produce one request event per model every 0.5 s."""
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.wait(0.5):
            now = time.time()
            with contextlib.suppress(Exception):
                asyncio.run(produce(bootstrap, topic, [(m, request_event(m, now, n)) for m in models]))
            n += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


async def read_all(bootstrap: str, topic: str, *, at_least: int, seconds: float = 30.0) -> list[Any]:
    """Return every record of ``topic``: at least ``at_least``, then until none came for 1.5 s."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        last = loop.time()
        while loop.time() < deadline and (len(records) < at_least or loop.time() - last < 1.5):
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records.extend(batch)
                last = loop.time() if batch else last
    finally:
        await consumer.stop()
    return records


def decisions_by_model(records: list[Any]) -> dict[str, list[tuple[int, str, int, int]]]:
    """Return per model its decision records as (offset, member, generation, timestamp_ms), in order."""
    found: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    for record in records:
        headers = dict(record.headers or ())
        member = headers.get("spillway-member", b"?").decode()
        generation = int(headers.get("spillway-generation", b"-1"))
        found[record.key.decode()].append((record.offset, member, generation, record.timestamp))
    return {model: sorted(rows) for model, rows in found.items()}


def stale_decisions(
    by_model: dict[str, list[tuple[int, str, int, int]]], *, woken_ms: int
) -> tuple[list[str], list[str]]:
    """Return the decisions published in an older generation after a newer one, for the same model:
    (those created after the paused member woke, those created before it was paused).

    A record's timestamp is when the daemon handed it to its producer, right after the fencing check.
    The member creates nothing while stopped, so a record stamped before ``woken_ms`` (see
    :meth:`Member.wake`) was created before the SIGSTOP: it passed the check while the member still
    owned the model and was only sent after it woke, the window the README documents (Kafka has no
    fencing token for a send already in the producer). One created after the wake is a member acting
    for a model it lost.
    """
    stale: list[str] = []
    in_flight: list[str] = []
    for model, rows in by_model.items():
        newest = -1
        for offset, member, generation, stamp in rows:
            if generation < newest:
                what = f"{model}@{offset}: {member} in generation {generation} after {newest}"
                (in_flight if stamp < woken_ms else stale).append(what)
            newest = max(newest, generation)
    return stale, in_flight


def at_most_one_each(in_flight: list[str]) -> bool:
    """Return True when no model has more than one of the sends the pause caught (``model@offset: ...``).

    A model's decisions are sent one after another, so a pause catches at most one of each in the producer.
    """
    caught = Counter(what.split("@", 1)[0] for what in in_flight)
    return max(caught.values(), default=0) <= 1


def shared_generations(by_model: dict[str, list[tuple[int, str, int, int]]]) -> list[str]:
    """Return each (model, generation) whose decisions came from more than one member."""
    members: dict[tuple[str, int], set[str]] = defaultdict(set)
    for model, rows in by_model.items():
        for _, member, generation, _ in rows:
            members[(model, generation)].add(member)
    return [f"{key}: {sorted(who)}" for key, who in members.items() if len(who) > 1]


def _policy(models: list[str], *, namespace: str | None) -> str:
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            "    bounds: {min_replicas: 1, max_replicas: 8}",
            "    behavior: {interval_seconds: 1, scale_down_delay_seconds: 1, stabilization_seconds: 1}",
            "    forecast: {bucket_seconds: 1, horizon_seconds: 30, seasonalities_seconds: [60]}",
        ]
        if namespace is not None:
            lines.append(
                f"    targets: {{kubernetes: {{namespace: {namespace}, kind: Deployment, name: {m}}}}}"
            )
    return "\n".join(lines) + "\n"


def test_a_member_paused_past_its_session_never_publishes_for_the_models_it_lost(
    broker: Broker, tmp_path: Path
) -> None:
    models = _models(2)
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(models, namespace=None))
    settings = kafka_settings(
        broker.bootstrap,
        policy_files=(policy,),
        kafka_topic_partitions=PARTITIONS,
        checkpoint_interval_seconds=1.0,
    )
    members: list[Member] = []

    def start(name: str) -> Member:
        port = free_port()
        env = {**os.environ, **settings_env(settings), "SCALER_HTTP_LISTEN": f"127.0.0.1:{port}"}
        member = Member(name=name, env=env, port=port, log=tmp_path / f"{name}.log")
        members.append(member)
        wait_for_tcp(port, timeout=60)
        return member

    def owned() -> list[float]:
        return [m.metric("scaler_owned_models") for m in members if m.process.poll() is None]

    def members_alive() -> list[Member]:
        return [m for m in members if m.process.poll() is None]

    def split(counts: list[float], n: int) -> bool:
        return len(counts) == n and min(counts) > 0 and sum(counts) == len(models)

    figures: dict[str, float] = {}
    try:
        with trickle(broker.bootstrap, settings.kafka_requests_topic, models):
            a = start("a")
            until(lambda: owned() == [len(models)], seconds=60, what="a owns every model")
            b = start("b")
            until(lambda: split(owned(), 2), seconds=60, what="a and b split the models")
            time.sleep(1.0)  # both publish for a while
            a.pause()
            figures["takeover_seconds"] = until(
                lambda: b.metric("scaler_owned_models") == len(models), seconds=30, what="b takes every model"
            )
            time.sleep(max(0.0, 7.0 - figures["takeover_seconds"]))  # a stays paused 7 s (session 3 s)
            woken_ms = a.wake()
            until(lambda: split(owned(), 2), seconds=30, what="a rejoins and gets models back")
            time.sleep(1.0)
            c = start("c")  # forced rebalances: a third member joins ...
            until(lambda: split(owned(), 3), seconds=60, what="c gets models")
            until(lambda: c.total("scaler_decisions_published_total") > 0, seconds=30, what="c publishes")
            published_c = c.total("scaler_decisions_published_total")
            assert c.stop() == 0  # ... and leaves
            until(lambda: split(owned(), 2), seconds=30, what="a and b take c's models back")
            time.sleep(0.5)
        fenced_a = a.total("scaler_decisions_fenced_total")
        published = published_c + sum(m.total("scaler_decisions_published_total") for m in members_alive())
    finally:
        codes = [m.stop() for m in members]
    assert codes == [0] * len(members)
    records = asyncio.run(read_all(broker.bootstrap, settings.kafka_decisions_topic, at_least=int(published)))
    by_model = decisions_by_model(records)
    publishers = {member for rows in by_model.values() for _, member, _, _ in rows}
    assert set(by_model) == set(models)
    assert len(publishers) == 3  # a, b and c all published
    stale, in_flight = stale_decisions(by_model, woken_ms=woken_ms)
    assert stale == []
    assert at_most_one_each(in_flight), in_flight  # per model, one send the pause caught in the producer
    assert shared_generations(by_model) == []
    assert fenced_a >= 1  # a woke with decisions due and held them back
    print(f"broker-only fencing: takeover {figures['takeover_seconds']:.1f} s after SIGSTOP; "
          f"{len(records)} decisions, stale 0, in flight at the pause {len(in_flight)}, "
          f"a fenced {fenced_a:.0f}")  # fmt: skip


def _stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def writes_without_the_lease(
    audit: list[dict[str, Any]], *, lease_seconds: float, prefix: str
) -> tuple[list[str], dict[str, int]]:
    """Return the scale writes not made under their partition's Lease, and scale writes per user.

    A scale write by user U at the time the apiserver received it is under the Lease when the
    latest successful write of that partition's Lease stored before it was U's, less than
    ``lease_seconds`` earlier.
    """
    leases: dict[str, list[tuple[float, str]]] = defaultdict(list)
    scales = []
    for event in audit:
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code", 0)
        if event.get("stage") != "ResponseComplete" or not 200 <= code < 300:
            continue
        user = event["user"]["username"]
        if ref.get("resource") == "leases" and event["verb"] in ("create", "update"):
            leases[ref["name"]].append((_stamp(event["stageTimestamp"]), user))
        elif ref.get("resource") == "deployments" and ref.get("subresource") == "scale":
            scales.append((_stamp(event["requestReceivedTimestamp"]), user, ref["name"]))
    bad = []
    per_user: dict[str, int] = defaultdict(int)
    for at, user, target in sorted(scales):
        per_user[user] += 1
        name = f"{prefix}-{partition_for(target, PARTITIONS)}"
        before = [(t, who) for t, who in sorted(leases[name]) if t <= at]
        if not before or before[-1][1] != user or at - before[-1][0] >= lease_seconds:
            last = before[-1] if before else None
            bad.append(f"{target} by {user} at {at:.3f}: last write of {name} {last}")
    return bad, dict(per_user)


def test_with_leases_no_target_is_written_by_a_member_that_lost_its_lease(
    broker: Broker, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    models = _models(1)
    for m in models:
        create_deployment(kube, namespace=kube_namespace, name=m, replicas=1)
    rules = kube_adapter.describe_rules() + lease_adapter.describe_rules()
    users = {"a": "scaler", "b": "chart"}
    for user in users.values():
        bind_role(kube, namespace=kube_namespace, user=user, rules=rules)
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(models, namespace=kube_namespace))
    settings = kafka_settings(
        broker.bootstrap,
        policy_files=(policy,),
        kafka_topic_partitions=PARTITIONS,
        checkpoint_interval_seconds=1.0,
    )
    lease_seconds = 3.0
    members: dict[str, Member] = {}

    def start(name: str) -> Member:
        port = free_port()
        env = {
            **os.environ,
            **settings_env(settings),
            "SCALER_HTTP_LISTEN": f"127.0.0.1:{port}",
            "SCALER_ACTUATE": "true",
            "SCALER_KUBERNETES_KUBECONFIG": str(
                kube.kubeconfig(users[name], path=tmp_path / f"{name}.kubeconfig")
            ),
            "SCALER_ACTUATOR_TIMEOUT_SECONDS": "2",
            "SCALER_LEASE_NAMESPACE": kube_namespace,
            "SCALER_LEASE_DURATION_SECONDS": str(lease_seconds),
            "SCALER_LEASE_RENEW_SECONDS": "0.75",
            "SCALER_LEASE_MARGIN_SECONDS": "1.25",
        }
        member = Member(name=name, env=env, port=port, log=tmp_path / f"{name}.log")
        members[name] = member
        wait_for_tcp(port, timeout=60)
        return member

    def members_alive() -> list[Member]:
        return list(members.values())

    def held() -> list[float]:
        return [m.metric("scaler_leases_held") for m in members.values()]

    stop_writer = threading.Event()

    def out_of_band() -> None:
        """Like an operator's `kubectl scale`, every second: the owner sets each target back."""
        with kube.api_client() as api:
            apps = client.AppsV1Api(api)
            while not stop_writer.wait(1.0):
                for m in models:
                    with contextlib.suppress(ApiException):
                        apps.patch_namespaced_deployment_scale(m, kube_namespace, {"spec": {"replicas": 5}})

    writer = threading.Thread(target=out_of_band, daemon=True)
    figures: dict[str, float] = {}
    try:
        with trickle(broker.bootstrap, settings.kafka_requests_topic, models):
            a = start("a")
            until(lambda: held() == [len(models)], seconds=60, what="a holds every Lease")
            writer.start()
            b = start("b")
            until(lambda: min(held()) > 0 and sum(held()) == len(models), seconds=60, what="a and b split")
            time.sleep(1.0)
            a.pause()
            figures["failover_seconds"] = until(
                lambda: b.metric("scaler_leases_held") == len(models), seconds=40, what="b takes every Lease"
            )
            time.sleep(1.0)
            woken_ms = a.wake()
            until(lambda: min(held()) > 0 and sum(held()) == len(models), seconds=40, what="a back in")
            time.sleep(1.0)
        fenced_a = a.total("scaler_decisions_fenced_total")
        published = sum(m.total("scaler_decisions_published_total") for m in members_alive())
    finally:
        stop_writer.set()
        if writer.is_alive():
            writer.join()
        codes = [m.stop() for m in members.values()]
    assert codes == [0, 0]
    audit = [e for user in users.values() for e in kube.audit(namespace=kube_namespace, user=user)]
    overlaps, per_user = writes_without_the_lease(
        audit, lease_seconds=lease_seconds, prefix="spillway-scaler"
    )
    assert overlaps == []
    assert per_user.get("scaler", 0) >= 1, per_user  # both acted
    assert per_user.get("chart", 0) >= 1, per_user
    records = asyncio.run(read_all(broker.bootstrap, settings.kafka_decisions_topic, at_least=int(published)))
    by_model = decisions_by_model(records)
    stale, in_flight = stale_decisions(by_model, woken_ms=woken_ms)
    assert stale == []
    assert at_most_one_each(in_flight), in_flight  # per model, one send the pause caught in the producer
    assert shared_generations(by_model) == []
    print(f"lease fencing: {len(in_flight)} decision in flight at the pause")
    print(f"lease fencing: failover {figures['failover_seconds']:.1f} s after SIGSTOP (session 3 s, lease "
          f"{lease_seconds:g} s); scale writes {per_user}, overlaps 0; a fenced {fenced_a:.0f}")  # fmt: skip
