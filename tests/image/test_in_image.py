"""The built image, run as a pod runs it: uid 10001, read-only root, writable /tmp, no capabilities.

Runs only from ``.ci/image`` (``pytest -m image`` with SPILLWAY_IMAGE naming a built image); every
command runs inside the image's root filesystem (see ``inimage.py``), the daemon through the image's
own entrypoint. The daemon test talks to a real tansu broker on the host's loopback. Timings are
printed as figures, not asserted; what is asserted is what a user would see break.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import inimage
import pytest
from conftest import Broker, free_port, wait_for_tcp
from integration_fixtures import kafka_settings, policy_yaml, produce, read_topic, request_event, settings_env

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[2]
UID = 10001
BAKED = "opt/spillway/numba-cache"  # in the image's root filesystem
MODELS = ["llama-a", "llama-b"]
# the interpreter a probe uses: the image's virtual environment
PYTHON = "/opt/spillway/bin/python"


@pytest.fixture(scope="module")
def image() -> Iterator[inimage.Image]:
    """The image .ci/image built, mounted for the module's runs."""
    name = os.environ.get("SPILLWAY_IMAGE")
    if not name:
        pytest.skip("SPILLWAY_IMAGE is not set: these tests run from .ci/image, which builds the image")
    opened = inimage.open_image(name)
    try:
        yield opened
    finally:
        inimage.close_image(opened)


def _run(
    image: inimage.Image, argv: list[str], *, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        inimage.command(image, argv, **kwargs),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _figure(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [image] {line}", flush=True)


def test_runs_as_its_user_on_a_read_only_root_without_capabilities(image: inimage.Image) -> None:
    assert (image.uid, image.gid) == (UID, UID)
    probe = _run(
        image,
        [
            "sh",
            "-c",
            "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status;"
            " touch /opt/spillway/x 2>&1 || echo ROOT_READ_ONLY;"
            " touch /tmp/x && echo TMP_WRITABLE",
        ],
    )
    assert probe.returncode == 0, probe.stderr
    status = dict(re.findall(r"^(\w+):[ \t]*(.*)$", probe.stdout, flags=re.M))
    assert status["Uid"].split() == [str(UID)] * 4
    assert status["Gid"].split() == [str(UID)] * 4
    assert status["Groups"] == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])
    assert status["NoNewPrivs"] == "1"
    assert "Read-only file system" in probe.stdout
    assert "ROOT_READ_ONLY" in probe.stdout
    assert "TMP_WRITABLE" in probe.stdout


def test_scaler_help(image: inimage.Image) -> None:
    top = _run(image, ["scaler", "--help"])
    assert top.returncode == 0, top.stderr
    for verb in ("simulate", "run", "policy"):
        assert re.search(rf"^\s+{verb}\s", top.stdout, flags=re.M), top.stdout
    run = _run(image, ["scaler", "run", "--help"])
    assert run.returncode == 0, run.stderr
    assert "--sandbox" in run.stdout


def test_policy_validate_on_the_shipped_policies(image: inimage.Image) -> None:
    shipped = sorted((REPO / "policies").glob("*.yaml"))
    assert shipped
    # mounted where the chart mounts its policies ConfigMap
    result = _run(
        image,
        ["scaler", "policy", "validate", *[f"/etc/spillway/policies/{p.name}" for p in shipped]],
        binds={REPO / "policies": "/etc/spillway/policies"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in shipped:
        assert path.name in result.stdout + result.stderr


def test_simulate_says_how_to_install_the_sim_extra(image: inimage.Image) -> None:
    result = _run(image, ["scaler", "simulate", "--duration", "60"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: scaler simulate needs rich, from the 'sim' extra: pip install 'spillway-scaler[sim]'"
    ]
    missing = _run(
        image,
        [PYTHON, "-c", "import importlib.util as u; print(u.find_spec('rich'), u.find_spec('matplotlib'))"],
    )
    assert missing.stdout.split() == ["None", "None"], missing.stdout + missing.stderr


def test_pip_check_is_clean_and_no_pip_in_the_venv(
    image: inimage.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    # the venv carries no pip (the daemon never installs anything): the base image's pip checks it
    base_pip = (
        "for py in /usr/local/bin/python3 /usr/bin/python3; do"
        ' [ -x "$py" ] && exec "$py" -m pip --disable-pip-version-check'
        ' --python /opt/spillway/bin/python "$@";'
        " done; exit 127"
    )
    check = _run(image, ["sh", "-c", base_pip, "sh", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No broken requirements found." in check.stdout
    listed = _run(image, ["sh", "-c", base_pip, "sh", "list", "--format=freeze"])
    names = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert "spillway-scaler" in names
    assert not names & {"pip", "setuptools", "matplotlib", "rich"}, sorted(names)
    _figure(capsys, f"pip check: {check.stdout.strip()} ({len(names)} distributions in /opt/spillway)")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_sandbox_answers_healthz_and_metrics(image: inimage.Image) -> None:
    port = free_port()
    daemon = subprocess.Popen(
        inimage.command(
            image,
            [
                *image.entrypoint,
                "--sandbox",
                "--speed",
                "120",
                "--duration",
                "600",
                "--listen",
                f"127.0.0.1:{port}",
            ],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_tcp(port, timeout=60)
        deadline = time.monotonic() + 30
        health = metrics = (0, "")
        while time.monotonic() < deadline and daemon.poll() is None:
            health, metrics = (
                _get(f"http://127.0.0.1:{port}/healthz"),
                _get(f"http://127.0.0.1:{port}/metrics"),
            )
            if health[0] == 200 and "scaler_" in metrics[1]:
                break
            time.sleep(0.1)
        out, err = daemon.communicate(timeout=120)
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=30)
    assert health[0] == 200
    assert metrics[0] == 200
    assert "# TYPE scaler_" in metrics[1]
    assert daemon.returncode == 0, err[-3000:]
    assert re.search(r"sandbox: \d+ events replayed over 600 virtual seconds", out), out


# ---- the daemon against the host's broker, and numba's baked kernels ---------------------------


def _tree(path: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file under ``path``."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


class _Lines:
    """Collects a process's JSON log lines (stderr) with the host's monotonic time each arrived."""

    def __init__(self, process: subprocess.Popen[str], started: float) -> None:
        self.started = started
        self.events: list[tuple[float, dict[str, object]]] = []
        self.raw: list[str] = []
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.raw.append(line)
            with contextlib.suppress(ValueError):
                self.events.append((time.monotonic() - self.started, json.loads(line)))

    def first(self, event: str, **fields: object) -> float | None:
        """Return seconds from spawn to the first ``event`` line with ``fields`` (None if none yet)."""
        return next(
            (
                t
                for t, e in list(self.events)
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ),
            None,
        )

    def wait(self, event: str, *, seconds: float, **fields: object) -> float:
        """Return :meth:`first` once it is known; raise AssertionError after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.first(event, **fields)
            if found is not None:
                return found
            time.sleep(0.01)
        raise AssertionError(f"no {event!r} {fields} within {seconds} s:\n{''.join(self.raw)[-3000:]}")


@contextlib.contextmanager
def _daemon(
    image: inimage.Image, argv: list[str], *, tmp: Path, env: dict[str, str], policies: Path
) -> Iterator[_Lines]:
    """Run the daemon in the image; yield its log; SIGTERM it afterwards and check it stopped cleanly."""
    started = time.monotonic()
    process = subprocess.Popen(
        inimage.command(image, argv, tmp=tmp, env=env, binds={policies: "/etc/spillway/policies"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _Lines(process, started)
    try:
        yield lines
        process.terminate()
        process.wait(timeout=30)
        assert process.returncode == 0, "".join(lines.raw)[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_daemon_decides_on_the_hosts_broker_with_the_baked_kernels(
    image: inimage.Image, broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "models.yaml").write_text(policy_yaml(MODELS))
    settings = kafka_settings(broker.bootstrap)
    env = {
        **settings_env(settings),
        "SCALER_POLICY_FILES": "/etc/spillway/policies/models.yaml",
        "SCALER_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "SCALER_CHECKPOINT_INTERVAL_SECONDS": "1",
        "SCALER_DRY_RUN": "true",
    }
    baked = _tree(image.root / BAKED)
    assert any(name.endswith(".nbi") for name in baked), "the image has no baked numba cache"

    def recent_events(start: int) -> list[tuple[str, bytes]]:
        """Five requests a second per model over the last eight seconds (closed buckets on arrival)."""
        now = time.time()
        return [(m, request_event(m, now - 8.0 + k / 5.0, start + k)) for m in MODELS for k in range(40)]

    # 1. through the image's entrypoint: events in, a forecast-based decision per model out
    first = inimage.owned_tmp(image, tmp_path / "tmp-first")
    with _daemon(image, list(image.entrypoint), tmp=first, env=env, policies=policies) as log:
        log.wait("models_assigned", seconds=60)
        asyncio.run(produce(broker.bootstrap, settings.kafka_requests_topic, recent_events(0)))
        for model in MODELS:
            log.wait("decision", seconds=30, model=model, forecast_valid=True)
        logged = sum(1 for _, e in list(log.events) if e.get("event") == "decision")
        decisions = asyncio.run(read_topic(broker.bootstrap, settings.kafka_decisions_topic, at_least=logged))
        payloads = [json.loads(r.value) for r in decisions]
        assert {p["model"] for p in payloads} == set(MODELS)
        planned = [p for p in payloads if p["bound_by"] != "no-data"]
        assert {p["model"] for p in planned} == set(MODELS), [(p["bound_by"], p["reason"]) for p in payloads]
        assert all(p["desired"]["replicas"] + p["desired"]["serverless_provisioned"] >= 1 for p in planned), (
            planned
        )
    # the entrypoint copied the baked kernels and the daemon compiled nothing more
    assert _tree(first / "numba-cache") == baked

    # 2. a fresh pod with events waiting: start to its first forecast-based decision, cold and baked
    timings: dict[str, dict[str, float]] = {}
    for n, (label, argv) in enumerate((("cold", ["scaler", "run"]), ("baked", list(image.entrypoint)))):
        asyncio.run(produce(broker.bootstrap, settings.kafka_requests_topic, recent_events(1000 * (n + 1))))
        fresh = inimage.owned_tmp(image, tmp_path / f"tmp-{label}")
        with _daemon(image, argv, tmp=fresh, env=env, policies=policies) as log:
            decided = log.wait("decision", seconds=60, forecast_valid=True)
            timings[label] = {
                event: log.first(event) or float("nan") for event in ("started", "models_assigned")
            }
            timings[label]["decision"] = decided
        cache = _tree(fresh / "numba-cache") if (fresh / "numba-cache").exists() else {}
        if label == "cold":  # it compiled its kernels itself: the same ones the image bakes
            compiled = {name for name in cache if name.endswith(".nbi")}
            assert compiled, "the cold daemon compiled nothing"
            assert compiled <= set(baked), sorted(compiled - set(baked))
        else:
            assert cache == baked
    for label, t in timings.items():
        _figure(
            capsys,
            f"daemon start, {label} numba cache: started {t['started']:.2f} s, models assigned "
            f"{t['models_assigned']:.2f} s, first forecast-based decision {t['decision']:.2f} s after spawn",
        )


PROBE = """
import os, time
def since_start():
    ticks = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])
    return float(open('/proc/uptime').read().split()[0]) - ticks / os.sysconf('SC_CLK_TCK')
from scaler.core import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed
from scaler.forecast.models import DemandForecaster
imported = since_start()
policy = ModelPolicy(name='probe')
f = DemandForecaster.from_policy(policy)
for k in range(8):
    f.observe(bucket_start=k * f.bucket_seconds, requests=10.0, prompt_tokens=2000.0, output_tokens=500.0)
forecast = f.forecast(now=8.0 * f.bucket_seconds)
forecasted = since_start()
plan.plan(policy=policy, forecast=forecast, observed=Observed(replicas_ready=1, replicas_starting=0,
    standby_ready=0, standby_starting=0, serverless_provisioned=0, request_rate=1.0), previous=None, now=8.0)
print(f'{imported:.3f} {forecasted:.3f} {since_start():.3f}')
"""


def test_first_forecast_after_process_start_cold_and_baked(
    image: inimage.Image, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {}
    for label in ("cold", "baked"):
        tmp = inimage.owned_tmp(image, tmp_path / label)
        if label == "baked":  # as the entrypoint does
            shutil.copytree(image.root / BAKED, tmp / "numba-cache")
            for path in [tmp / "numba-cache", *(tmp / "numba-cache").rglob("*")]:
                os.chown(path, image.uid, image.gid)
        result = _run(image, [PYTHON, "-c", PROBE], tmp=tmp)
        assert result.returncode == 0, result.stderr
        figures[label] = [float(v) for v in result.stdout.split()]
        cache = _tree(tmp / "numba-cache")
        if label == "cold":
            assert any(name.endswith(".nbi") for name in cache)  # it compiled, into /tmp
        else:
            assert cache == _tree(image.root / BAKED)  # it compiled nothing: every kernel came from the cache
    for label, (imported, forecasted, planned) in figures.items():
        _figure(
            capsys,
            f"process start -> imports {imported:.2f} s, first forecast {forecasted:.2f} s, "
            f"first plan {planned:.2f} s ({label} numba cache)",
        )


def _chart_render() -> ModuleType:
    """Return tests/helm/chart_render.py (the chart tests' renderer), imported by path."""
    spec = importlib.util.spec_from_file_location("chart_render", REPO / "tests" / "helm" / "chart_render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_pod_spec_runs_in_the_image(image: inimage.Image, broker: Broker, tmp_path: Path) -> None:
    pytest.importorskip("helm_python")
    chart = _chart_render()
    objects = chart.manifests({"kafka": {"bootstrapServers": [broker.bootstrap]}})
    pod = chart.one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # the pod runs the image's entrypoint (given the settings file), as the image's user, on a
    # read-only root with /tmp an emptyDir
    assert "command" not in container
    assert container["args"] == ["--config", "/etc/spillway/settings/settings.yaml"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        image.uid,
        image.gid,
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    binds: dict[Path, str] = {}
    for mount_dir in ("/etc/spillway/policies", "/etc/spillway/settings"):  # the ConfigMaps' places
        configmap = next(
            o
            for o in objects
            if o["kind"] == "ConfigMap"
            and o["metadata"]["name"] == volumes[mounts[mount_dir]]["configMap"]["name"]
        )
        local = tmp_path / Path(mount_dir).name
        local.mkdir()
        for name, text in configmap["data"].items():
            (local / name).write_text(text)
        binds[local] = mount_dir
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["SCALER_KAFKA_CLIENT_ID"] = "spillway-0"  # the pod's name, from the downward API
    port = free_port()
    env["SCALER_HTTP_LISTEN"] = f"127.0.0.1:{port}"  # over the file's 0.0.0.0: the loopback here
    process = subprocess.Popen(
        inimage.command(
            image,
            [*image.entrypoint, *container["args"]],
            tmp=inimage.owned_tmp(image, tmp_path / "tmp"),
            binds=binds,
            env=env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        probes = {
            "liveness": container["livenessProbe"]["httpGet"]["path"],
            "readiness": container["readinessProbe"]["httpGet"]["path"],
        }
        answered: dict[str, int] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None and len(answered) < len(probes):
            for probe, path in probes.items():
                with contextlib.suppress(OSError):
                    if _get(f"http://127.0.0.1:{port}{path}")[0] == 200:
                        answered[probe] = 200
            time.sleep(0.2)
        process.terminate()
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert answered == {"liveness": 200, "readiness": 200}, err[-3000:]
    assert process.returncode == 0, err[-3000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "models_assigned" in events
    assert events[-1] == "stopped"
