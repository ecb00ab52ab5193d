"""The daemon's HTTP endpoints (aiohttp): ``/healthz``, ``/readyz`` and ``/metrics``, loopback by default.

A client that does not finish its request line and headers within ``header_timeout_seconds`` of
connecting (or of its previous response) is disconnected (slowloris): aiohttp's ``keepalive_timeout``
runs from the moment a connection opens and closes it if no complete request has arrived; it also
closes connections idle that long between requests. A request being handled is never cut off.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from scaler.adapters.metrics import DaemonMetrics


class HttpServer:
    """Serves liveness, readiness (``ready()`` says why not) and the metrics registry."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: DaemonMetrics,
        ready: Callable[[], str | None],
        header_timeout_seconds: float = 10.0,
    ) -> None:
        """Create a stopped server; ``ready`` returns None when ready, else the reason it is not."""
        self.host = host
        self.port = port
        self.header_timeout_seconds = header_timeout_seconds
        self.metrics = metrics
        self.ready = ready
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self.app = app

    async def start(self) -> None:
        """Bind and serve; raise OSError if the address is taken. ``port`` is updated when 0 was asked."""
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=self.header_timeout_seconds
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if self.port == 0 and addresses:
            self.port = int(addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; never raises."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        why = self.ready()
        if why is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response
