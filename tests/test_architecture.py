"""The layering contract: the pure core never imports I/O, clocks, asyncio or the environment.

Planner, forecaster, policy and simulator must run the same in the daemon, in the simulator and in
table tests, so time is an argument and I/O lives in scaler/adapters only. This test reads the
source with ast, so a violation is caught even in code no other test executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scaler"
PURE_PACKAGES = ("core", "forecast", "sim")
FORBIDDEN_MODULES = {
    "asyncio",
    "time",
    "socket",
    "subprocess",
    "aiokafka",
    "kubernetes",
    "boto3",
    "botocore",
    "prometheus_api_client",
    "prometheus_client",
    "structlog",
    "scaler.adapters",
    "scaler.app",
    "scaler.loop",
    "scaler.settings",
}
FORBIDDEN_ATTRIBUTES = {("os", "environ"), ("os", "getenv"), ("datetime", "now"), ("datetime", "utcnow")}


def _pure_modules() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_MODULES):
                found.append(f"{path.name}:{node.lineno}: imports {name}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES
        ):
            found.append(f"{path.name}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_pure_packages_exist() -> None:
    assert len(_pure_modules()) >= 5


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_core_has_no_io(path: Path) -> None:
    assert _violations(path) == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport asyncio\nx = os.environ['A']\nfrom kubernetes import client\n")
    assert _violations(bad) == [
        "bad.py:2: imports asyncio",
        "bad.py:3: uses os.environ",
        "bad.py:4: imports kubernetes",
    ]
