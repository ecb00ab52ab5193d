"""The daemon's HTTP endpoints (aiohttp): ``/healthz``, ``/readyz`` and ``/metrics``, loopback by default."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from scaler.adapters.metrics import DaemonMetrics


class HttpServer:
    """Serves liveness, readiness (``ready()`` says why not) and the metrics registry."""

    def __init__(
        self, *, host: str, port: int, metrics: DaemonMetrics, ready: Callable[[], str | None]
    ) -> None:
        """Create a stopped server; ``ready`` returns None when ready, else the reason it is not."""
        self.host = host
        self.port = port
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
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None)
        if self.port == 0 and sockets:
            self.port = int(sockets[0].getsockname()[1])

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
