"""Real Prometheus and Alertmanager processes (Debian packages) on loopback for integration tests.

Each starts with ``subprocess.Popen`` on a free 127.0.0.1 port, is health-checked on ``/-/ready``,
and is stopped by its own PID (SIGTERM, then wait). History is preloaded with
``promtool tsdb create-blocks-from openmetrics`` into a fresh data dir before Prometheus starts.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from conftest import free_port


def binary(name: str) -> str:
    """Return the path of ``name``; fail with how to install it when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run .ci/setup (Debian packages prometheus, prometheus-alertmanager)")
    return found


def wait_ready(url: str, process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """Return once ``url`` answers 200; raise RuntimeError if the process died or it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        with suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:  # loopback http
            if r.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def running(args: Sequence[str], *, ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` until the block ends (SIGTERM by PID, then wait; SIGKILL after 10 s)."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)  # fixed args
        try:
            wait_ready(ready_url, process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def openmetrics_counters(series: dict[str, Sequence[tuple[float, float]]]) -> str:
    """Return an OpenMetrics text of counters: ``{'name_total{labels}': [(ts, value), ...]}``."""
    lines: list[str] = []
    typed: set[str] = set()
    for key, samples in series.items():
        name = key.split("{", 1)[0].removesuffix("_total")
        if name not in typed:
            lines.append(f"# TYPE {name} counter")
            typed.add(name)
        lines.extend(f"{key} {v:.17g} {t:.3f}" for t, v in samples)
    return "\n".join([*lines, "# EOF", ""])


def create_blocks(openmetrics: str, data_dir: Path) -> None:
    """Write ``openmetrics`` into TSDB blocks under ``data_dir`` (promtool)."""
    source = data_dir.parent / "history.om"
    source.write_text(openmetrics)
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # fixed args
        [binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextmanager
def prometheus(
    workdir: Path, *, config: str = "", rules: Sequence[Path] = (), data_dir: Path | None = None
) -> Iterator[str]:
    """Run Prometheus (``config`` is extra YAML appended to the config file); yield its base URL."""
    port = free_port()
    data = data_dir or workdir / "prom-data"
    data.mkdir(parents=True, exist_ok=True)
    rule_lines = "".join(f"  - {p}\n" for p in rules)
    head = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
    text = head + (f"rule_files:\n{rule_lines}" if rules else "") + config
    cfg = workdir / "prometheus.yml"
    cfg.write_text(text)
    base = f"http://127.0.0.1:{port}"
    args = [
        binary("prometheus"),
        f"--config.file={cfg}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=30d",
    ]
    with running(args, ready_url=f"{base}/-/ready", log=workdir / "prometheus.log"):
        yield base


@contextmanager
def alertmanager(workdir: Path, *, webhook_url: str, token_file: Path) -> Iterator[str]:
    """Run Alertmanager routing every alert to ``webhook_url`` with a bearer token; yield its base URL."""
    port = free_port()
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(
        "route:\n"
        "  receiver: spillway\n"
        "  group_by: ['alertname', 'model']\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: spillway\n"
        "    webhook_configs:\n"
        f"      - url: {webhook_url}\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials_file: {token_file}\n"
    )
    base = f"http://127.0.0.1:{port}"
    args = [
        binary("prometheus-alertmanager"),
        f"--config.file={cfg}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with running(args, ready_url=f"{base}/-/ready", log=workdir / "alertmanager.log"):
        yield base
