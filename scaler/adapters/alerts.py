"""Alertmanager webhook receiver: ``POST /alerts`` on the daemon's aiohttp server.

Requests need ``Authorization: Bearer <token>``; without a configured token the endpoint refuses
everything (503). Unauthenticated (401), oversized (413), slow (408), malformed (400) and unknown-action (422)
deliveries are refused and counted in ``scaler_alerts_rejected_total{reason}``. Accepted alerts update
the :class:`scaler.core.overrides.OverrideBook` the loop applies to every decision; the overrides in
force are exported as ``scaler_override_active{model,action}`` (model ``*`` = all models).

The overrides in force are capped (``alerts_max_overrides`` in all, ``alerts_max_overrides_per_model``
per model label): a new alert beyond a cap is refused, logged and counted in
``scaler_alert_overrides_refused_total{reason}``; the delivery is still answered 200 (with ``refused``)
so that Alertmanager does not resend it in a loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scaler.core import overrides
from scaler.core.overrides import OverrideBook, OverrideError, OverrideLimits
from scaler.files import read_regular_file
from scaler.settings import MAX_SECRET_FILE_BYTES, AlertsSettings

log = structlog.get_logger("scaler.alerts")
REJECT_REASONS = ("unauthenticated", "disabled", "too_large", "too_slow", "malformed", "unknown_action")
REFUSE_REASONS = ("max_overrides", "max_overrides_per_model")
_LOGGED_ALERTS = 10  # alerts named in one log line; the rest are counted


def load_token(alerts: AlertsSettings) -> str | None:
    """Return the webhook bearer token (setting, else the token file), None when none is configured.

    Raises ValueError naming the file when ``alerts_token_file`` cannot be read, is empty, or is not a
    regular file (a FIFO is refused without blocking).
    """
    if alerts.token is not None:
        token = alerts.token.get_secret_value().strip()
        return token or None
    path = alerts.token_file
    if path is None:
        return None
    try:
        data = read_regular_file(Path(path), max_bytes=MAX_SECRET_FILE_BYTES, what="token file")
        token = data.decode().strip()
    except OSError as exc:
        raise ValueError(f"alerts_token_file {path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:  # not a regular file, too large, not UTF-8
        raise ValueError(f"alerts_token_file {path}: {exc}") from None
    if not token:
        raise ValueError(f"alerts_token_file {path}: the file is empty")
    return token


class _ActiveOverrides(Collector):
    """Reads the book at scrape time, so expired overrides vanish from /metrics on their own."""

    def __init__(self, book: OverrideBook, clock: Callable[[], float]) -> None:
        self.book = book
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "scaler_override_active",
            "Alert overrides in force (1), by model ('*' = all models) and action.",
            labels=["model", "action"],
        )
        for action, models in overrides.summary(self.book.active(now=self.clock())).items():
            for model in models:
                family.add_metric([model, action], 1.0)
        yield family


class AlertReceiver:
    """Authenticates, parses and applies Alertmanager deliveries to an override book."""

    def __init__(
        self,
        *,
        token: str | None,
        book: OverrideBook,
        clock: Callable[[], float],
        registry: CollectorRegistry,
        max_body_bytes: int = 262_144,
        max_override_seconds: float = 3600.0,
        default_boost: int = 2,
        limits: OverrideLimits = overrides.DEFAULT_LIMITS,
        body_timeout_seconds: float = 10.0,
    ) -> None:
        """Create a receiver whose metrics live in ``registry``; ``token`` None refuses every request.

        ``limits`` caps the overrides this receiver puts in force; a body not received within
        ``body_timeout_seconds`` is refused (408).
        """
        self._token = token.encode() if token else None
        self.book = book
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.max_override_seconds = max_override_seconds
        self.default_boost = default_boost
        self.limits = limits
        self.body_timeout_seconds = body_timeout_seconds
        self.rejected = Counter(
            "scaler_alerts_rejected", "Webhook deliveries refused, by reason.", ["reason"], registry=registry
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.accepted = Counter(
            "scaler_alerts_received", "Spillway alerts accepted, by status.", ["status"], registry=registry
        )
        self.refused = Counter(
            "scaler_alert_overrides_refused",
            "Firing alerts not put in force because a cap was reached, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSE_REASONS:
            self.refused.labels(reason=reason)
        registry.register(_ActiveOverrides(book, clock))

    @classmethod
    def from_settings(
        cls,
        alerts: AlertsSettings,
        *,
        book: OverrideBook,
        clock: Callable[[], float],
        registry: CollectorRegistry,
    ) -> AlertReceiver:
        """Return a receiver configured by ``alerts``; raise ValueError if the token file is unusable."""
        return cls(
            token=load_token(alerts),
            book=book,
            clock=clock,
            registry=registry,
            max_body_bytes=alerts.max_body_bytes,
            max_override_seconds=alerts.max_override_seconds,
            default_boost=alerts.default_boost_replicas,
            limits=OverrideLimits(
                total=alerts.max_overrides, per_model=alerts.max_overrides_per_model
            ),
        )

    @property
    def enabled(self) -> bool:
        """Return True when a token is configured (otherwise every request is refused)."""
        return self._token is not None

    def install(self, app: web.Application) -> None:
        """Add ``POST /alerts`` to ``app`` (before it starts)."""
        app.router.add_post("/alerts", self.handle)

    def _refuse(self, status: int, reason: str, message: str) -> web.Response:
        self.rejected.labels(reason=reason).inc()
        log.warning("alerts_rejected", status=status, reason=reason, detail=message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return web.json_response({"error": reason, "detail": message}, status=status, headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        """Apply one delivery; return 200 with the overrides it set, or the refusal's status and reason."""
        if self._token is None:
            return self._refuse(
                503, "disabled", "no alerts token configured (set SCALER_ALERTS_TOKEN or alerts_token_file)"
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            return self._refuse(401, "unauthenticated", "missing or wrong bearer token")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._refuse(413, "too_large", f"body over {self.max_body_bytes} bytes")
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                async for chunk in request.content.iter_chunked(65_536):
                    body += chunk
                    if len(body) > self.max_body_bytes:
                        return self._refuse(413, "too_large", f"body over {self.max_body_bytes} bytes")
        except TimeoutError:
            return self._refuse(408, "too_slow", f"body not received within {self.body_timeout_seconds:g} s")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return self._refuse(400, "malformed", f"body is not JSON: {str(exc)[:120]}")
        now = self.clock()
        try:
            update = overrides.parse_webhook(
                payload,
                now=now,
                max_duration_seconds=self.max_override_seconds,
                default_boost=self.default_boost,
            )
        except OverrideError as exc:
            status = 422 if exc.reason == "unknown_action" else 400
            return self._refuse(status, exc.reason, exc.detail)
        refused = self.book.update(update, now=now, limits=self.limits)
        taken = len(update.firing) - len(refused)
        if taken:
            self.accepted.labels(status="firing").inc(taken)
        if update.resolved:
            self.accepted.labels(status="resolved").inc(len(update.resolved))
        for item in refused:
            self.refused.labels(reason=item.reason).inc()
        if refused:
            log.warning(
                "alert_overrides_refused",
                refused=len(refused),
                reasons=sorted({r.reason for r in refused}),
                max_overrides=self.limits.total,
                max_overrides_per_model=self.limits.per_model,
                alerts=[_named(r.override) for r in refused[:_LOGGED_ALERTS]],
            )
        active = self.book.active(now=now)
        log.info(
            "alert_overrides_updated",
            firing=[_named(o) for o in update.firing[:_LOGGED_ALERTS]],
            firing_count=len(update.firing),
            resolved=len(update.resolved),
            active=len(active),
        )
        return web.json_response(
            {
                "active": [
                    {"action": o.action.value, "model": o.model or "*", "ends_at": o.ends_at} for o in active
                ],
                "refused": len(refused),
            }
        )


def _named(override: overrides.Override) -> str:
    """Return an override's description and model for a log line (both cut short)."""
    return f"{override.describe()} model={overrides.shorten(override.model or '*')}"


def install_receiver(
    *,
    alerts: AlertsSettings,
    app: web.Application,
    book: OverrideBook,
    clock: Callable[[], float],
    registry: CollectorRegistry,
) -> AlertReceiver:
    """Add ``POST /alerts`` to ``app``; return the receiver.

    An unusable token file is logged and leaves the endpoint refusing everything (never open).
    """
    try:
        receiver = AlertReceiver.from_settings(alerts, book=book, clock=clock, registry=registry)
    except ValueError as exc:
        log.error("alerts_disabled", error=str(exc))
        receiver = AlertReceiver(token=None, book=book, clock=clock, registry=registry)
    if not receiver.enabled:
        log.info("alerts_endpoint_refusing", why="no alerts token configured")
    receiver.install(app)
    return receiver
