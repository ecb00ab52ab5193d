"""A real ``scaler run`` process for the fault suite: start, wait ready, read /metrics, kill or stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from conftest import free_port, wait_for_tcp
from integration_fixtures import settings_env

from scaler.settings import Settings


class ScalerProcess:
    """One ``scaler run`` subprocess; its stderr (JSON log lines) goes to ``log_path``."""

    def __init__(self, settings: Settings, *, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.settings = settings.model_copy(update={"http_listen": f"127.0.0.1:{self.port}"})
        self.log_path = log_path
        self.env = {**os.environ, **settings_env(self.settings), "SCALER_DRY_RUN": "true", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """Return the base URL of its HTTP server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: bool = True, timeout: float = 90.0) -> ScalerProcess:
        """Start the process; with ``ready``, return once /readyz answers 200 (AssertionError if never)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # fixed arguments: this interpreter, our own package
                [sys.executable, "-m", "scaler", "run"], env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_tcp(self.port, timeout=timeout)
        if ready:
            until(lambda: self.status("/readyz") == 200, seconds=timeout, what="scaler run ready")
        return self

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def status(self, path: str) -> int:
        """Return the HTTP status of GET ``path`` (0 when nothing answers)."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as ``name{labels}`` -> value."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, prefix: str) -> float:
        """Return the sum of the samples whose ``name{labels}`` starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def sigterm(self, *, timeout: float = 30.0) -> tuple[int, float]:
        """Send SIGTERM; return (exit code, seconds it took to exit); SIGKILL after ``timeout``."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, SIGKILL after 15 s); never raises."""
        if self.process is not None and self.process.poll() is None:
            self.sigterm(timeout=15)

    def log_lines(self) -> list[dict[str, Any]]:
        """Return the JSON log lines written so far."""
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        """Return the log lines of event ``name``."""
        return [line for line in self.log_lines() if line.get("event") == name]


def until(condition: Callable[[], bool], *, seconds: float, what: str, every: float = 0.2) -> float:
    """Wait until ``condition()``; return the seconds it took; raise AssertionError after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(every)
    return time.monotonic() - started
