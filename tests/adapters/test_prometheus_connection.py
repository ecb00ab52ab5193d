"""What the Prometheus client sends over the wire: headers, bearer token, basic auth, TLS with a private CA,
retries; served by a recording HTTP(S) server on a real socket."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_keda import _pki

from scaler.adapters.prometheus import (
    Connection,
    PrometheusSignal,
    connection_from_settings,
    signal_from_settings,
)
from scaler.settings import Settings

VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "4"]}]},
}


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]
    fail_first: list[int]

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
        if self.fail_first and self.fail_first[0] > 0:
            self.fail_first[0] -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(VECTOR).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(
    context: ssl.SSLContext | None, *, fail_first: int = 0
) -> tuple[http.server.HTTPServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "fail_first": [fail_first]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return _pki(tmp_path)


@pytest.fixture
def tls_server(pki: dict[str, Path]) -> Iterator[tuple[str, list[dict[str, str]]]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.crt"], pki["server.key"])
    server, seen = _serve(context)
    yield f"https://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_settings_headers_token_and_ca_reach_prometheus(
    tls_server: tuple[str, list[dict[str, str]]], pki: dict[str, Path], tmp_path: Path
) -> None:
    url, seen = tls_server
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    settings = Settings(
        prometheus_url=url,
        prometheus_headers=("X-Scope-OrgID: team-a",),
        prometheus_bearer_token_file=token,
        prometheus_ca_file=pki["ca.crt"],
    )
    reader = signal_from_settings(settings.prometheus)
    assert reader is not None
    found = asyncio.run(reader.signal("llama-8b", now=1000.0))
    assert found.running == 4.0
    assert len(seen) == 4  # rate, running, waiting, ready replicas
    assert seen[0]["x-scope-orgid"] == "team-a"
    assert seen[0]["authorization"] == "Bearer s3cret-token"
    assert "time=1000.000" in seen[0]["path"]


def test_an_untrusted_certificate_is_a_connection_error(tls_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = tls_server
    with pytest.raises(ConnectionError, match="SSLError"):
        asyncio.run(PrometheusSignal(url=url, timeout_seconds=5).signal("llama-8b", now=1000.0))
    assert seen == []


def test_basic_auth_and_retries_of_a_plain_prometheus() -> None:
    server, seen = _serve(None, fail_first=2)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        reader = PrometheusSignal(
            url=url, timeout_seconds=5, connection=Connection(basic_auth=("spillway", "pw"), retries=2)
        )
        found = asyncio.run(reader.signal("llama-8b", now=1000.0))
        assert found.replicas_ready == 4
        assert len(seen) == 4 + 2  # two 503s retried
        assert seen[-1]["authorization"] == "Basic " + base64.b64encode(b"spillway:pw").decode()
        no_retries = PrometheusSignal(url=url, timeout_seconds=5)
        server.RequestHandlerClass.fail_first[0] = 1  # type: ignore[attr-defined]
        with pytest.raises(ConnectionError, match="too many 503 error responses"):
            asyncio.run(no_retries.signal("llama-8b", now=1000.0))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"prometheus_headers": ("no-colon",)}, "is not 'Name: value'"),
        ({"prometheus_bearer_token_file": Path("/nonexistent/token")}, "cannot read /nonexistent/token"),
    ],
)
def test_bad_connection_settings_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connection_from_settings(Settings(prometheus_url="http://127.0.0.1:9", **values).prometheus)  # type: ignore[arg-type]
