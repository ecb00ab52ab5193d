"""Hostile input through real ``scaler`` processes: bad settings, a FIFO as the policy file, a password in
a URL, a misspelt variable. Each must end in a clear line and the documented exit code, never a
traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SECRET = "hunter2-in-the-url"  # test value


def _scaler(*argv: str, env: dict[str, str], timeout: float = 60.0) -> tuple[int, str, str, float]:
    """Run ``scaler ARGV``; return (exit code, stdout, stderr, seconds). A hang fails after ``timeout``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scaler", *argv],
            env={**clean, "SCALER_HTTP_LISTEN": "127.0.0.1:0", **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scaler {' '.join(argv)} still running after {timeout} s")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "::::garbage", "kafka_bootstrap_servers"),
        ("SCALER_KAFKA_CLIENT_ID", "c" * 100_000, "kafka_client_id"),
        ("SCALER_HTTP_LISTEN", "256.1.1.1:8080", "http_listen"),
        ("SCALER_PROMETHEUS_URL", f"http://scaler:{SECRET}@prometheus:99999", "prometheus_url"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, names: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("models:\n  - name: m\n")
    code, out, err, _ = _scaler("run", "--policy", str(policy), env={variable: value})
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert SECRET not in out + err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: environment: {names}: ")
    assert len(lines[0]) < 400  # a 100k-character value is not echoed back


def test_a_fifo_as_the_policy_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    code, out, err, _ = _scaler("policy", "validate", str(fifo), env={}, timeout=30)
    assert (code, out) == (1, "")
    assert err == f"{fifo}: is a FIFO (named pipe), not a policy file\n"
    code, _, err, seconds = _scaler("run", "--policy", str(fifo), env={}, timeout=30)
    assert code == 2, err[-2000:]
    assert err.splitlines()[-1] == f"error: {fifo}: is a FIFO (named pipe), not a policy file"
    print(f"scaler run with a FIFO policy exited 2 after {seconds:.2f} s (process start included)")


def test_the_settings_line_masks_a_password_in_a_url_and_a_misspelt_variable_is_named(
    tmp_path: Path,
) -> None:
    env = {
        "SCALER_PROMETHEUS_URL": f"http://scaler:{SECRET}@127.0.0.1:1",
        "SCALER_KAFKA_BOOTSTRAP_SERVER": "127.0.0.1:9092",  # misspelt: SERVERS
    }
    sandbox = ("--sandbox", "--duration", "2", "--speed", "1", "--base-rate", "1")  # light: a busy machine
    code, out, err, _ = _scaler("run", *sandbox, env=env)
    assert code == 0, err[-2000:]
    assert SECRET not in out + err
    assert '"prometheus_url": "http://scaler:***@127.0.0.1:1"' in err
    warnings = [line for line in err.splitlines() if "unknown_setting_variable" in line]
    assert len(warnings) == 1
    assert '"did_you_mean": "SCALER_KAFKA_BOOTSTRAP_SERVERS"' in warnings[0]
    assert "127.0.0.1:9092" not in warnings[0]  # the value of an unknown variable is not shown
