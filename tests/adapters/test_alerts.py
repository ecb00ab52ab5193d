"""POST /alerts over a real socket: authentication, refusals with clear statuses, overrides in decisions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest
from integration_fixtures import decide_now, make_runtime

from scaler.adapters.alerts import AlertReceiver, install_receiver, load_token
from scaler.adapters.http import HttpServer
from scaler.adapters.metrics import DaemonMetrics
from scaler.core.overrides import OverrideBook
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, Observed
from scaler.ports import RawRecord
from scaler.settings import Settings

NOW = 1_790_000_000.0
TOKEN = "s3cret-token"  # test token


def one_replica(
    *,
    policy: ModelPolicy,
    forecast: DemandForecast,
    observed: Observed,
    previous: Decision | None,
    now: float,
) -> Decision:
    """A stand-in planner: one replica, no serverless when serverless is off, else two instances."""
    serverless = 0 if "SERVERLESS" in str(observed.unavailable) else 2
    return Decision(
        at=now,
        replicas=1,
        standby=0,
        serverless_provisioned=serverless,
        spill_fraction=0.0,
        reason="planned",
        bound_by="cost",
        quantile=0.5,
        cost_per_hour={},
    )


class Sink:
    def __init__(self) -> None:
        self.payloads: list[dict[str, object]] = []

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        self.payloads.append(dict(payload))

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        raise AssertionError("no dead letters expected")


def webhook(action: str, *, status: str = "firing", **labels: str) -> bytes:
    alert = {
        "status": status,
        "labels": {"alertname": "Test", "spillway_action": action, "model": "llama", **labels},
        "annotations": {},
        "startsAt": "2026-09-21T22:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"fp-{action}",
    }
    return json.dumps({"version": "4", "status": status, "alerts": [alert]}).encode()


def test_the_webhook_refuses_bad_requests_and_its_overrides_reach_the_next_decision() -> None:
    metrics = DaemonMetrics()
    policy = ModelPolicy.model_validate({"name": "llama", "bounds": {"max_replicas": 8}})
    sink = Sink()
    runtime = make_runtime(
        {"llama": policy}, sink=sink, planner=one_replica, metrics=metrics
    )
    runtime.assign(frozenset({"llama"}), checkpoints={}, now=NOW)
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    receiver = AlertReceiver(
        token=TOKEN,
        book=runtime.overrides,
        clock=lambda: NOW,
        registry=metrics.registry,
        max_body_bytes=4096,
        max_override_seconds=600,
    )
    receiver.install(server.app)
    good = {"Authorization": f"Bearer {TOKEN}"}

    async def run() -> tuple[list[tuple[int, str]], list[Decision | None], str]:
        await server.start()
        url = f"http://127.0.0.1:{server.port}/alerts"
        answers = []
        decisions = []
        try:
            async with aiohttp.ClientSession() as http:
                attempts: list[tuple[dict[str, str], bytes]] = [
                    ({}, webhook("boost")),
                    ({"Authorization": "Bearer wrong"}, webhook("boost")),
                    ({"Authorization": TOKEN}, webhook("boost")),
                    (good, b"{not json"),
                    (good, b"x" * 5000),
                    (good, json.dumps({"version": "4", "alerts": "no"}).encode()),
                    (good, webhook("reboot")),
                    (good, webhook("boost", spillway_min_replicas="5")),
                ]
                for headers, body in attempts:
                    async with http.post(url, data=body, headers=headers) as r:
                        answers.append((r.status, (await r.json())["error" if r.status != 200 else "active"]))
                decisions.append(await decide_now(runtime, "llama", now=NOW))
                async with http.post(url, data=webhook("serverless_off"), headers=good) as r:
                    assert r.status == 200
                decisions.append(await decide_now(runtime, "llama", now=NOW + 1))
                async with http.get(f"http://127.0.0.1:{server.port}/metrics") as r:
                    exposition = await r.text()
                for action in ("boost", "serverless_off"):
                    async with http.post(url, data=webhook(action, status="resolved"), headers=good) as r:
                        assert r.status == 200
                decisions.append(await decide_now(runtime, "llama", now=NOW + 2))
        finally:
            await server.stop()
        return answers, decisions, exposition

    answers, (boosted, both, lifted), exposition = asyncio.run(run())
    assert [status for status, _ in answers] == [401, 401, 401, 400, 413, 400, 422, 200]
    assert [reason for _, reason in answers[:7]] == [
        "unauthenticated",
        "unauthenticated",
        "unauthenticated",
        "malformed",
        "too_large",
        "malformed",
        "unknown_action",
    ]
    assert answers[7][1] == [{"action": "boost", "model": "llama", "ends_at": NOW + 600}]
    assert boosted is not None
    assert boosted.replicas == 5
    assert boosted.bound_by == "override-boost"
    assert "overrides: boost min=5 (alert Test" in boosted.reason
    assert both is not None
    assert both.replicas == 5
    assert both.serverless_provisioned == 0
    assert "serverless_off" in both.reason
    assert lifted is not None
    assert (lifted.replicas, lifted.serverless_provisioned, lifted.reason) == (1, 2, "planned")
    assert "overrides" in str(sink.payloads[0]["reason"])
    assert 'scaler_alerts_rejected_total{reason="unauthenticated"} 3.0' in exposition
    assert 'scaler_alerts_rejected_total{reason="too_large"} 1.0' in exposition
    assert 'scaler_alerts_rejected_total{reason="unknown_action"} 1.0' in exposition
    assert 'scaler_override_active{action="boost",model="llama"} 1.0' in exposition
    assert 'scaler_override_active{action="serverless_off",model="llama"} 1.0' in exposition


def test_without_a_token_the_endpoint_refuses_everything(tmp_path: Path) -> None:
    metrics = DaemonMetrics()
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    empty = tmp_path / "token"
    empty.write_text("\n")
    settings = Settings(alerts_token_file=empty)
    book = OverrideBook()
    receiver = install_receiver(
        alerts=settings.alerts, app=server.app, book=book, clock=lambda: NOW, registry=metrics.registry
    )
    assert not receiver.enabled

    async def run() -> tuple[int, str]:
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{server.port}/alerts"
                async with http.post(url, data=webhook("freeze"), headers={"Authorization": "Bearer "}) as r:
                    return r.status, (await r.json())["detail"]
        finally:
            await server.stop()

    status, detail = asyncio.run(run())
    assert status == 503
    assert "no alerts token configured" in detail
    assert book.active(now=NOW) == []


def test_the_token_comes_from_the_setting_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(" from-file \n")
    assert load_token(Settings(alerts_token_file=path).alerts) == "from-file"
    assert load_token(Settings(alerts_token=TOKEN, alerts_token_file=path).alerts) == TOKEN
    assert load_token(Settings().alerts) is None
    with pytest.raises(ValueError, match="cannot read"):
        load_token(Settings(alerts_token_file=tmp_path / "missing").alerts)
    assert TOKEN not in repr(Settings(alerts_token=TOKEN))


def issue_flood(post: int, *, alerts: int = 220, name_length: int = 900) -> bytes:
    """Return one post of the issue's flood: ``alerts`` boosts with distinct fingerprints and long names."""
    items = [
        {
            "status": "firing",
            "labels": {
                "alertname": f"Flood{post}-{i}-" + "N" * name_length,
                "spillway_action": "boost",
                "model": "llama",
            },
            "annotations": {},
            "startsAt": "2026-09-21T22:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"flood-{post}-{i}",
        }
        for i in range(alerts)
    ]
    return json.dumps({"version": "4", "status": "firing", "alerts": items}).encode()


def test_an_alert_flood_keeps_overrides_within_the_caps_and_decisions_small() -> None:
    metrics = DaemonMetrics()
    policy = ModelPolicy.model_validate({"name": "llama", "bounds": {"max_replicas": 8}})
    sink = Sink()
    runtime = make_runtime({"llama": policy}, sink=sink, planner=one_replica, metrics=metrics)
    runtime.assign(frozenset({"llama"}), checkpoints={}, now=NOW)
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    receiver = install_receiver(
        alerts=Settings(alerts_token=TOKEN).alerts,
        app=server.app,
        book=runtime.overrides,
        clock=lambda: NOW,
        registry=metrics.registry,
    )
    posts = [issue_flood(post) for post in range(8)]
    assert all(200_000 < len(body) < receiver.max_body_bytes for body in posts)

    async def run() -> tuple[list[int], list[int], str]:
        await server.start()
        statuses, refused = [], []
        try:
            async with aiohttp.ClientSession() as http:
                for body in posts:
                    async with http.post(
                        f"http://127.0.0.1:{server.port}/alerts",
                        data=body,
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as r:
                        statuses.append(r.status)
                        refused.append((await r.json())["refused"])
                await decide_now(runtime, "llama", now=NOW)
                async with http.get(f"http://127.0.0.1:{server.port}/metrics") as r:
                    exposition = await r.text()
        finally:
            await server.stop()
        return statuses, refused, exposition

    statuses, refused, exposition = asyncio.run(run())
    assert statuses == [200] * 8
    assert refused == [220 - 16] + [220] * 7  # the per-model cap (16) filled by the first post
    assert len(runtime.overrides.active(now=NOW)) == 16
    assert f'scaler_alert_overrides_refused_total{{reason="max_overrides_per_model"}} {8 * 220 - 16}.0' in (
        exposition
    )
    (payload,) = sink.payloads
    size = len(json.dumps(payload).encode())
    assert size < 2048  # was 1.8 MB in the issue, over the producer's 1 MB limit
    reason = str(payload["reason"])
    assert reason.startswith("planned [overrides: boost min=2 (alert Flood0-")
    assert reason.endswith(" more]")
    assert payload["desired"] == {"replicas": 2, "standby": 0, "serverless_provisioned": 2}


def test_a_body_that_never_finishes_arriving_is_refused_in_time() -> None:
    metrics = DaemonMetrics()
    server = HttpServer(host="127.0.0.1", port=0, metrics=metrics, ready=lambda: None)
    receiver = AlertReceiver(token=TOKEN, book=OverrideBook(), clock=lambda: NOW, registry=metrics.registry)
    receiver.body_timeout_seconds = 0.5
    receiver.install(server.app)

    async def run() -> bytes:
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
                + b'{"version": "4", '
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), 5)
            writer.close()
            return answer
        finally:
            await server.stop()

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"too_slow" in answer
