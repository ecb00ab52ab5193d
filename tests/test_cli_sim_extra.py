"""Without the [sim] extra (rich, matplotlib) the daemon's commands work and `scaler simulate` says
in one line how to install it. The packages are made unimportable in a real `scaler` process by a
sitecustomize on PYTHONPATH (``sys.modules[name] = None`` makes ``import name`` raise ImportError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCALER = str(Path(sys.executable).with_name("scaler"))
EXTRA = "pip install 'spillway-scaler[sim]'"


def _scaler(tmp_path: Path, *args: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [SCALER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(
    ("blocked", "args", "needs"),
    [
        (("rich", "matplotlib"), ("simulate", "--duration", "60"), "rich"),
        (("rich",), ("simulate", "--duration", "60", "--no-progress"), "rich"),
        (("matplotlib",), ("simulate", "--duration", "60", "--plot", "out.png"), "matplotlib"),
    ],
)
def test_simulate_without_the_extra_fails_in_one_line(
    tmp_path: Path, blocked: tuple[str, ...], args: tuple[str, ...], needs: str
) -> None:
    result = _scaler(tmp_path, *args, blocked=blocked)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: scaler simulate needs {needs}, from the 'sim' extra: {EXTRA}"
    ]
    assert result.stdout == ""
    assert not (REPO / "out.png").exists()


def test_simulate_without_matplotlib_still_prints_its_table(tmp_path: Path) -> None:
    result = _scaler(
        tmp_path, "simulate", "--duration", "600", "--baselines", "none", blocked=("matplotlib",)
    )
    assert result.returncode == 0, result.stderr
    assert "oracle" in result.stdout
    assert "spillway" in result.stdout.lower()


def test_daemon_commands_need_no_extra(tmp_path: Path) -> None:
    blocked = ("rich", "matplotlib")
    top = _scaler(tmp_path, "--help", blocked=blocked)
    assert top.returncode == 0, top.stderr
    assert "simulate" in top.stdout
    validated = _scaler(
        tmp_path, "policy", "validate", *sorted(map(str, (REPO / "policies").glob("*.yaml"))), blocked=blocked
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    sandbox = _scaler(
        tmp_path,
        "run",
        "--sandbox",
        "--speed",
        "120",
        "--duration",
        "240",
        "--listen",
        "127.0.0.1:0",
        blocked=blocked,
    )
    assert sandbox.returncode == 0, sandbox.stderr[-2000:]
    assert "events replayed over 240 virtual seconds" in sandbox.stdout
