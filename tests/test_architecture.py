"""The layering contract: the pure core never imports I/O, clocks, asyncio or the environment, and
each layer imports only the layers below it.

Controller, planner, forecaster, policy and simulator must run the same in the daemon, in the
simulator and in table tests, so time is an argument and I/O lives in scaler/adapters only.
Layers, top to bottom: cli/commands > app > runtime/executor > adapters > settings > ports >
backends/control/core/forecast/sim (the serverless backends do their I/O through the Api they are
given, so they are checked like the core). This test reads the source with ast, so a violation is
caught even in code no other test executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scaler"
PURE_PACKAGES = ("backends", "control", "core", "forecast", "sim")
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
    "scaler.runtime",
    "scaler.executor",
    "scaler.ports",
    "scaler.settings",
}
LAYERS: tuple[tuple[str, ...], ...] = (  # bottom first; a module may import its own layer and those below
    (
        "scaler.backends",
        "scaler.control",
        "scaler.core",
        "scaler.forecast",
        "scaler.sim",
        "scaler.schemas",
        "scaler.files",
    ),
    ("scaler.ports",),
    ("scaler.settings",),
    ("scaler.adapters",),
    ("scaler.runtime", "scaler.executor"),
    ("scaler.app",),
    ("scaler.commands", "scaler.cli", "scaler.__main__"),
)
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


def _layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _upward_imports(path: Path) -> list[str]:
    """Return the imports of ``path`` that reach a layer above its own."""
    own = _layer(_module_name(path))
    assert own is not None, f"{path} is in no layer: add its package to LAYERS"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            level = _layer(name) if name.startswith("scaler.") else None
            if level is not None and level > own:
                found.append(f"{path.name}:{node.lineno}: imports {name} (a layer above)")
    return found


@pytest.mark.parametrize(
    "path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_module_imports_only_its_layer_and_below(path: Path) -> None:
    if path.name == "__init__.py" and path.parent == ROOT:
        return
    assert _upward_imports(path) == []


def test_the_layer_check_catches_an_adapter_importing_the_runtime(tmp_path: Path) -> None:
    bad = ROOT / "adapters" / "kafka.py"
    source = bad.read_text(encoding="utf-8") + "\nfrom scaler.runtime import Runtime\n"
    fake = tmp_path / "scaler" / "adapters" / "kafka.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    tree_root = ROOT
    try:
        globals()["ROOT"] = tmp_path / "scaler"
        assert any("scaler.runtime" in v for v in _upward_imports(fake))
    finally:
        globals()["ROOT"] = tree_root


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
