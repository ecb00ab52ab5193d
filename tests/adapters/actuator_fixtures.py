"""Real processes for the actuator tests: a moto server and the fault-injecting proxy.

Each starts with ``subprocess.Popen`` on a free 127.0.0.1 port, is health-checked over HTTP(S), and
is stopped by its own PID (SIGTERM, then wait). The Kubernetes API is a real kube-apiserver
(:mod:`tests.kube_cluster`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision
from tests.kube_cluster import KubeCluster

HERE = Path(__file__).parent


def http_json(method: str, url: str, body: object | None = None, *, ca_file: Path | None = None) -> Any:
    """Return the JSON answer of one HTTP(S) request (raise on a non-2xx status).

    ``ca_file`` verifies an HTTPS server.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # loopback test server
        raw = response.read()
    return json.loads(raw) if raw else None


def wait_http(url: str, *, timeout: float = 20.0, context: ssl.SSLContext | None = None) -> None:
    """Return once ``url`` answers any HTTP status; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=0.5, context=context).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclasses.dataclass
class Process:
    """A server process on 127.0.0.1:port."""

    port: int
    process: subprocess.Popen[bytes]
    scheme: str = "http"

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop it by its PID: SIGTERM, then SIGKILL after 5 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(args: list[str], *, port: int, health_path: str, ca_file: Path | None = None) -> Process:
    """Start ``args`` as a process serving on ``port``; return it once ``health_path`` answers.

    With ``ca_file`` the process serves HTTPS with a certificate that CA signed.
    """
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fixed arguments
    server = Process(port=port, process=proc, scheme="https" if ca_file else "http")
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        wait_http(f"{server.url}{health_path}", context=context)
    except TimeoutError:
        server.stop()
        raise
    return server


def start_moto(port: int) -> Process:
    """Start ``moto_server`` and wait until it answers."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    return _start([binary, "-H", "127.0.0.1", "-p", str(port)], port=port, health_path="/moto-api/")


def decision(
    *, replicas: int, standby: int = 0, serverless: int = 0, at: float = 1_700_000_000.0
) -> Decision:
    """Return a planner decision asking for the given capacity."""
    return Decision(
        at=at,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=serverless,
        spill_fraction=0.0,
        reason="test decision",
        bound_by="fractile",
        quantile=0.5,
        cost_per_hour={},
    )


def policy(name: str = "chat", **targets: Any) -> ModelPolicy:
    """Return a policy with bounds 1..5 replicas, 0..2 standby, quota 3, and the given targets."""
    return ModelPolicy.model_validate(
        {
            "name": name,
            "replica": {"max_concurrency": 8},
            "bounds": {
                "min_replicas": 1,
                "max_replicas": 5,
                "min_standby": 0,
                "max_standby": 2,
                "serverless_quota": 3,
            },
            "targets": targets,
        },
        strict=False,
    )


def start_faulty_proxy(port: int, upstream: str) -> Process:
    """Start the fault-injecting HTTP proxy in front of ``upstream`` and wait until it answers."""
    script = str(HERE / "faulty_proxy.py")
    return _start([sys.executable, script, str(port), upstream], port=port, health_path="/moto-api/")


def start_kube_proxy(port: int, cluster: KubeCluster) -> Process:
    """Start the proxy in front of ``cluster``'s apiserver, serving TLS with the apiserver's certificate.

    Clients verify it with ``cluster.ca_file``; their bearer tokens pass through to the apiserver.
    """
    script = str(HERE / "faulty_proxy.py")
    cert, key = cluster.workdir / "server.crt", cluster.workdir / "server.key"
    args = [sys.executable, script, str(port), cluster.url, str(cert), str(key), str(cluster.ca_file)]
    return _start(args, port=port, health_path="/_requests", ca_file=cluster.ca_file)
