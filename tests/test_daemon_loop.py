"""The daemon's loop and lifecycle with in-memory ports: timelines of events in and decisions out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from integration_fixtures import decide_now, fake_plan, make_runtime, sample
from structlog.testing import capture_logs

from scaler.app import Daemon
from scaler.control.checkpoint import decode as decode_checkpoint
from scaler.control.payload import decision_payload
from scaler.core.events import RequestEvent, encode_request
from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import load_policies
from scaler.core.types import Decision, DemandForecast, Observed
from scaler.ports import OwnershipCallback, RawRecord
from scaler.runtime import Runtime, RuntimeOptions
from scaler.settings import Settings

T0 = 1_750_000_200.0
REQ = "llm.requests"


class RecordingSink:
    """Keeps what was published."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, dict[str, object]]] = []
        self.letters: list[tuple[RawRecord, str]] = []
        self.flushes = 0

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        self.decisions.append((model, dict(payload)))

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        self.letters.append((record, reason))

    async def flush(self) -> None:
        self.flushes += 1

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _policies(*names: str, interval: float = 10.0, bucket: int = 10) -> dict[str, ModelPolicy]:
    return {
        n: ModelPolicy.model_validate(
            {"name": n, "behavior": {"interval_seconds": interval}, "forecast": {"bucket_seconds": bucket}}
        )
        for n in names
    }


def _runtime(policies: dict[str, ModelPolicy], sink: RecordingSink, *, dry_run: bool = False) -> Runtime:
    return make_runtime(policies, sink=sink, options=RuntimeOptions(dry_run=dry_run))


def _arrival(model: str, ts: float, offset: int) -> RawRecord:
    event = RequestEvent(
        model=model, ts=ts, type="arrival", request_id=f"r{offset}", prompt_tokens=100, output_tokens=0
    )
    return RawRecord(REQ, 0, offset, model.encode(), encode_request(event))


def _steady(model: str, *, start: float, seconds: int, per_second: int) -> list[RawRecord]:
    return [
        _arrival(model, start + s + k / per_second, s * per_second + k)
        for s in range(seconds)
        for k in range(per_second)
    ]


def test_a_timeline_of_steady_load_gives_decisions_on_the_policy_interval() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("m"), sink)
    rt.assign(frozenset({"m"}), checkpoints={}, now=T0)
    decided: list[tuple[float, str]] = []

    async def run() -> None:
        for second in range(60):
            now = T0 + second
            rt.ingest(_steady("m", start=now, seconds=1, per_second=20), now=now + 0.99)
            for model, trigger in rt.due(now=now + 0.99):
                await decide_now(rt, model, trigger=trigger, now=now + 0.99)
                decided.append((now + 0.99 - T0, trigger))

    asyncio.run(run())
    assert [t for t, _ in decided if _ == "tick"] == pytest.approx([0.99, 10.99, 20.99, 30.99, 40.99, 50.99])
    model, last = sink.decisions[-1]
    assert model == "m"
    assert last["routing"] == {"kubernetes": 0.75, "serverless": 0.25}
    assert last["desired"] == {
        "replicas": last["desired"]["replicas"],
        "standby": 1,
        "serverless_provisioned": 2,
    }
    # 20 req/s steady: once the forecaster has history, the mean asks for 2 replicas
    assert last["desired"]["replicas"] == 2
    assert sample(rt.metrics, "scaler_desired_replicas", model="m") == last["desired"]["replicas"]


def replay_in_tenths(rt: Runtime, arrivals: list[RawRecord], *, seconds: float) -> list[tuple[float, str]]:
    """Deliver ``arrivals`` a tenth of a second at a time, deciding what is due; return (t - T0, trigger)."""

    async def run() -> list[tuple[float, str]]:
        seen: list[tuple[float, str]] = []
        pending = arrivals
        for tenth in range(1, round(seconds * 10)):
            now = T0 + tenth / 10
            cut = next((i for i, r in enumerate(pending) if json.loads(r.value)["ts"] >= now), len(pending))
            rt.ingest(pending[:cut], now=now)
            pending = pending[cut:]
            for model, trigger in rt.due(now=now):
                await decide_now(rt, model, trigger=trigger, now=now)
                seen.append((now - T0, trigger))
        return seen

    return asyncio.run(run())


def test_a_step_burst_triggers_a_decision_before_the_next_tick() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("m", interval=60.0), sink)
    rt.assign(frozenset({"m"}), checkpoints={}, now=T0)

    # 5 req/s, then 200 req/s from T0 + 125; each tenth of a second delivers what arrived in it
    arrivals = _steady("m", start=T0, seconds=125, per_second=5)
    arrivals += _steady("m", start=T0 + 125, seconds=25, per_second=200)

    seen = replay_in_tenths(rt, arrivals, seconds=150.0)
    bursts = [t for t, trig in seen if trig == "burst"]
    assert bursts, seen
    assert 125 <= bursts[0] < 126  # within a second of the step
    assert not [t for t in bursts if t < 125]  # no false alarm while the load is steady
    assert sample(rt.metrics, "scaler_bursts_detected_total", model="m") == len(bursts)


def test_invalid_and_unowned_events_are_returned_or_dropped_never_raised() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("a", "b"), sink)
    rt.assign(frozenset({"a"}), checkpoints={}, now=T0)
    records = [
        _arrival("a", T0, 1),
        _arrival("b", T0, 2),  # valid, but another process owns b
        RawRecord(REQ, 0, 3, b"a", b"{not json"),
        RawRecord("llm.metrics", 0, 4, b"a", b'{"model": "a"}'),
    ]
    rejected = rt.ingest(records, now=T0)
    assert [(r.offset, e.reason) for r, e in rejected] == [(3, "not_json"), (4, "missing_field")]
    assert sample(rt.metrics, "scaler_events_dropped_total", why="not_owned") == 1
    assert sample(rt.metrics, "scaler_events_consumed_total", topic=REQ) == 3
    assert sample(rt.metrics, "scaler_events_rejected_total", reason="not_json") == 1


def test_revoked_models_stop_and_resume_elsewhere_from_their_checkpoint() -> None:
    sink = RecordingSink()
    first = _runtime(_policies("m"), sink)
    first.assign(frozenset({"m"}), checkpoints={}, now=T0)

    async def run() -> None:
        for second in range(0, 120, 10):
            now = T0 + second
            first.ingest(_steady("m", start=now, seconds=10, per_second=3), now=now + 9.9)
            await decide_now(first, "m", now=now + 9.95)

    asyncio.run(run())
    before = first.owned["m"].forecaster.forecast(now=T0 + 125)
    final = first.revoke(frozenset({"m"}))
    assert "m" not in first.owned
    assert asyncio.run(decide_now(first, "m", now=T0 + 130)) is None  # no longer acts for m
    header, _blob = decode_checkpoint(final["m"])
    assert header["policy"] == "m"
    assert header["decision"]["replicas"] == sink.decisions[-1][1]["desired"]["replicas"]

    second = _runtime(_policies("m"), RecordingSink())
    with capture_logs() as logs:
        second.assign(frozenset({"m"}), checkpoints=final, now=T0 + 125)
    assert any(e["event"] == "checkpoint_loaded" and e["model"] == "m" for e in logs)
    state = second.owned["m"]
    assert state.previous is not None
    assert state.previous.recent_targets == first_decision_targets(sink)
    after = state.forecaster.forecast(now=T0 + 125)
    assert after.valid
    assert after.rate_mean.tolist() == before.rate_mean.tolist()


def first_decision_targets(sink: RecordingSink) -> tuple[tuple[float, int], ...]:
    at = sink.decisions[-1][1]["at"]
    assert isinstance(at, float)
    return ((at, 1),)


def test_a_corrupt_checkpoint_is_logged_and_the_model_starts_fresh() -> None:
    rt = _runtime(_policies("m"), RecordingSink())
    with capture_logs() as logs:
        rt.assign(frozenset({"m"}), checkpoints={"m": b"SPW1garbage"}, now=T0)
    assert "m" in rt.owned
    assert rt.owned["m"].previous is None
    assert any(e["event"] == "checkpoint_rejected" for e in logs)


def test_decisions_are_logged_with_the_model_and_marked_dry_run() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("m"), sink, dry_run=True)
    rt.assign(frozenset({"m"}), checkpoints={}, now=T0)
    with capture_logs() as logs:
        asyncio.run(decide_now(rt, "m", now=T0 + 1))
    entry = next(e for e in logs if e["event"] == "decision")
    assert (entry["model"], entry.get("policy"), entry["dry_run"]) == ("m", None, True)
    assert sink.decisions[0][1]["dry_run"] is True


def test_decision_payload_clamps_routing_weights() -> None:
    decision = fake_plan(
        policy=_policies("m")["m"],
        forecast=DemandForecast.unusable(start=T0, note=""),
        observed=Observed(
            replicas_ready=0,
            replicas_starting=0,
            standby_ready=0,
            standby_starting=0,
            serverless_provisioned=0,
        ),
        previous=None,
        now=T0,
    )
    over = Decision(**{**{f: getattr(decision, f) for f in decision.__slots__}, "spill_fraction": 1.2})  # type: ignore[arg-type]
    payload = decision_payload(model="m", decision=over, trigger="tick", dry_run=False)
    assert payload["routing"] == {"kubernetes": 0.0, "serverless": 1.0}
    json.dumps(payload)  # publishable as is


# -- the lifecycle, with in-memory ports ---------------------------------------------------------


class ListSource:
    """Hands out prepared batches, then nothing; owns every model at start."""

    def __init__(self, batches: list[list[RawRecord]], models: frozenset[str]) -> None:
        self.batches = batches
        self.models = models
        self.commits = 0
        self.stopped = False
        self.revoke: OwnershipCallback | None = None

    async def start(self, *, on_assigned: OwnershipCallback, on_revoked: OwnershipCallback) -> None:
        self.revoke = on_revoked
        await on_assigned(self.models)

    async def poll(self, *, wait_seconds: float) -> list[RawRecord]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(min(wait_seconds, 0.01))
        return []

    def still_assigned(self, records: list[RawRecord]) -> list[RawRecord]:
        return records

    def settle(self) -> None:
        pass

    async def commit(self) -> None:
        self.commits += 1

    def refresh_owned(self) -> frozenset[str]:
        return self.models

    def connected(self) -> bool:
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        return {(REQ, 0): len(self.batches)}

    async def stop(self) -> None:
        self.stopped = True


class DictStore:
    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    async def load(self, models: frozenset[str]) -> dict[str, bytes]:
        return {m: v for m, v in self.saved.items() if m in models}

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        self.saved.update(checkpoints)


class FixedClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the daemon pauses on it: a pause must take time


def _daemon(
    tmp_path: Path, batches: list[list[RawRecord]]
) -> tuple[Daemon, ListSource, RecordingSink, DictStore]:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text("models:\n  - name: m\n    behavior: {interval_seconds: 10}\n")
    policies = load_policies([policy_file])
    settings = Settings(policy_files=(policy_file,), policy_poll_seconds=0.05, burst_check_seconds=0.01)
    sink = RecordingSink()
    rt = _runtime(policies, sink)
    source = ListSource(batches, frozenset({"m"}))
    store = DictStore()
    daemon = Daemon(
        settings=settings,
        runtime=rt,
        source=source,
        sink=sink,
        store=store,
        clock=FixedClock(T0 + 1),
        metrics=rt.metrics,
        http=None,
    )
    return daemon, source, sink, store


def test_the_daemon_consumes_decides_and_shuts_down_cleanly(tmp_path: Path) -> None:
    good = _steady("m", start=T0, seconds=1, per_second=5)
    bad = [RawRecord(REQ, 0, 99, b"m", b"\xff")]
    daemon, source, sink, store = _daemon(tmp_path, [good, bad])

    async def run() -> int:
        task = asyncio.create_task(daemon.run(install_signals=False))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sink.letters and sink.decisions:
                break
        assert daemon.not_ready() is None
        daemon.request_stop(15)
        return await task

    assert asyncio.run(run()) == 0
    assert [(r.offset, reason) for r, reason in sink.letters] == [(99, "not_utf8")]
    assert sink.decisions
    assert sink.decisions[0][0] == "m"
    assert source.commits >= 2
    assert source.stopped
    assert "m" in store.saved  # final checkpoint
    assert daemon.not_ready() == "shutting down"


def test_a_broken_policy_edit_is_rejected_and_the_last_good_policy_stays(tmp_path: Path) -> None:
    daemon, _, _, _ = _daemon(tmp_path, [])
    policy_file = daemon.settings.policy_files[0]

    async def run() -> None:
        await daemon.on_assigned(frozenset({"m"}))
        policy_file.write_text("models:\n  - name: m\n    behavior: {interval_seconds: -1}\n")
        with capture_logs() as logs:
            assert not await daemon.check_policies()
        event = next(e for e in logs if e["event"] == "policy_reload_rejected")
        assert any("p.yaml" in p and "interval_seconds" in p for p in event["problems"])
        assert sample(daemon.metrics, "scaler_policy_reload_errors_total") == 1
        assert daemon.runtime.policies["m"].behavior.interval_seconds == 10
        policy_file.write_text("models:\n  - name: m\n    behavior: {interval_seconds: 30}\n")
        assert await daemon.check_policies()
        assert daemon.runtime.owned["m"].policy.behavior.interval_seconds == 30

    asyncio.run(run())


def test_revocation_checkpoints_and_commits_before_returning(tmp_path: Path) -> None:
    daemon, source, sink, store = _daemon(tmp_path, [])

    async def run() -> None:
        await daemon.on_assigned(frozenset({"m"}))
        await decide_now(daemon.runtime, "m", now=T0 + 1)
        await daemon.on_revoked(frozenset({"m"}))

    asyncio.run(run())
    assert "m" not in daemon.runtime.owned
    assert "m" in store.saved
    assert (source.commits, sink.flushes) == (1, 1)


def test_the_burst_threshold_follows_closed_buckets_between_long_ticks() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("m", interval=600.0, bucket=1), sink)
    rt.assign(frozenset({"m"}), checkpoints={}, now=T0)
    arrivals = _steady("m", start=T0, seconds=20, per_second=5)
    arrivals += _steady("m", start=T0 + 20, seconds=5, per_second=100)

    seen = replay_in_tenths(rt, arrivals, seconds=25.0)
    assert [trig for _, trig in seen].count("tick") == 1  # the first tick had no data; the next is 600 s away
    bursts = [t for t, trig in seen if trig == "burst"]
    assert bursts
    assert 20 <= bursts[0] < 21


def test_a_second_signal_exits_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, _, _, _ = _daemon(tmp_path, [])
    exits: list[int] = []
    monkeypatch.setattr("scaler.app.os._exit", exits.append)
    daemon.request_stop(15)
    assert daemon.stopping.is_set()
    assert exits == []
    daemon.request_stop(2)
    assert exits == [130]


def test_a_checkpoint_with_another_bucket_size_is_not_resumed() -> None:
    old = _runtime(_policies("m", bucket=10), RecordingSink())
    old.assign(frozenset({"m"}), checkpoints={}, now=T0)
    asyncio.run(decide_now(old, "m", now=T0 + 1))
    saved = old.revoke(frozenset({"m"}))
    new = _runtime(_policies("m", bucket=60), RecordingSink())
    with capture_logs() as logs:
        new.assign(frozenset({"m"}), checkpoints=saved, now=T0 + 5)
    assert new.owned["m"].previous is None
    assert new.owned["m"].forecaster.bucket_seconds == 60  # type: ignore[attr-defined]
    assert any(e["event"] == "checkpoint_rejected" and "bucket" in e["error"] for e in logs)


def test_a_planner_failure_for_one_model_does_not_stop_the_others(tmp_path: Path) -> None:
    daemon, _, sink, _ = _daemon(tmp_path, [])
    daemon.runtime.policies = _policies("m", "broken")

    def planner(**kwargs: object) -> Decision:
        if getattr(kwargs["policy"], "name", "") == "broken":
            raise RuntimeError("planner bug")
        return fake_plan(**kwargs)  # type: ignore[arg-type]

    daemon.runtime.planner = planner

    async def run() -> int:
        daemon.source.models = frozenset({"m", "broken"})  # type: ignore[attr-defined]
        task = asyncio.create_task(daemon.run(install_signals=False))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sink.decisions:
                break
        await asyncio.sleep(0.05)
        daemon.request_stop(15)
        return await task

    with capture_logs() as logs:
        assert asyncio.run(run()) == 0
    assert {m for m, _ in sink.decisions} == {"m"}
    failed = [e for e in logs if e["event"] == "decision_failed"]
    assert failed
    assert failed[0]["model"] == "broken"


def test_events_keyed_by_a_model_another_process_owns_are_dropped_before_decoding() -> None:
    sink = RecordingSink()
    rt = _runtime(_policies("a", "b"), sink)
    rt.assign(frozenset({"a"}), checkpoints={}, now=T0)
    garbage_for_b = RawRecord(REQ, 0, 1, b"b", b"{not json")
    assert rt.ingest([garbage_for_b], now=T0) == []  # b's owner validates b's events, not this process
    assert sample(rt.metrics, "scaler_events_dropped_total", why="not_owned") == 1
    # ownership moves between two batches (revoke a, assign b): the next batch follows it
    rt.revoke(frozenset({"a"}))
    rt.assign(frozenset({"b"}), checkpoints={}, now=T0)
    rejected = rt.ingest([garbage_for_b, RawRecord(REQ, 0, 2, b"a", b"{not json")], now=T0)
    assert [(r.offset, e.reason) for r, e in rejected] == [(1, "not_json")]
    assert sample(rt.metrics, "scaler_events_dropped_total", why="not_owned") == 2
    # an unkeyed or unknown-keyed record is always decoded (and dead-lettered when bad)
    rejected = rt.ingest([RawRecord(REQ, 0, 3, None, b"[]"), RawRecord(REQ, 0, 4, b"zz", b"{}")], now=T0)
    assert [(r.offset, e.reason) for r, e in rejected] == [(3, "not_object"), (4, "missing_field")]


def test_the_daemon_is_not_ready_while_the_event_log_is_unreachable(tmp_path: Path) -> None:
    daemon, source, _, _ = _daemon(tmp_path, [])

    async def run() -> None:
        await daemon.on_assigned(frozenset({"m"}))
        assert daemon.not_ready() is None
        source.connected = lambda: False  # type: ignore[method-assign]  # the broker went away
        assert daemon.not_ready() == "the event log is unreachable"

    asyncio.run(run())
