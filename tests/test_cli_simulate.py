"""`scaler simulate` end to end: the table, the files it writes, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaler.cli import main
from scaler.sim import synthetic
from scaler.sim.baselines import BASELINES

SMALL = ["--duration", "1200", "--seed", "1"]


def test_simulate_prints_every_policy_and_the_oracle_and_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "sim.json", tmp_path / "sim.png"
    code = main(["simulate", *SMALL, "--json", str(out_json), "--plot", str(out_png)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("spillway", *BASELINES, "oracle"):
        assert name in captured.out
    doc = json.loads(out_json.read_text())
    assert [p["policy"] for p in doc["policies"]] == ["spillway", *BASELINES]
    assert doc["oracle"]["policy"] == "oracle"
    assert all(p["requests"] == doc["oracle"]["requests"] > 0 for p in doc["policies"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_runs_only_the_baselines_asked_for_on_the_fluid_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "sim.json"
    scenario = synthetic.SCENARIOS[-1]
    code = main(
        ["simulate", *SMALL, "--scenario", scenario, "--baselines", "hpa", "--fluid", "--json", str(out_json)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out_json.read_text())
    assert [p["policy"] for p in doc["policies"]] == ["spillway", "hpa"]
    assert {p["model"] for p in doc["policies"]} == {"fluid"}
    assert "keda" not in captured.out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "Traceback" not in err
    return err


def test_a_missing_trace_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["simulate", "--trace", str(missing)]) == 1
    err = _error_line(capsys)
    assert len(err.splitlines()) == 1
    assert str(missing) in err


def test_a_bad_trace_file_is_refused_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,trace\n1,2,3\n")
    assert main(["simulate", "--trace", str(bad)]) == 1
    err = _error_line(capsys)
    assert len(err.splitlines()) == 1
    assert "bad.csv" in err


def test_a_bad_policy_prints_its_problems_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("models:\n  - name: m\n    bounds:\n      max_replicas: -3\n")
    assert main(["simulate", "--policy", str(policy), *SMALL]) == 1
    err = _error_line(capsys)
    assert err.splitlines()[0] == f"error: --policy {policy}: invalid policy file"
    assert "max_replicas" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--baselines", "hpa,bogus"], "unknown bogus"),
        (["--scenario", "no-such-scenario"], "no-such-scenario"),
        (["--model", "ghost"], "ghost"),
        (["--duration", "0"], "--duration"),
        (["--policy", "/nonexistent/p.yaml"], "no such file"),
    ],
)
def test_bad_flags_give_one_line_errors(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *args]) == 1
    err = _error_line(capsys)
    assert len(err.splitlines()) == 1
    assert needle in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert "--trace" in out


def test_a_policy_too_small_for_the_workload_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "tiny.yaml"
    policy.write_text(
        "models:\n  - name: tiny\n    bounds:\n      max_replicas: 1\n      serverless_quota: 0\n"
    )
    code = main(["simulate", *SMALL, "--policy", str(policy), "--baselines", "none"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: the busiest minute needs" in err
    assert "allows at most 1 " in err


def test_outside_the_repo_the_built_in_default_policy_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no policies/default.yaml here
    assert main(["simulate", *SMALL, "--baselines", "none"]) == 0
    out = capsys.readouterr().out
    assert "policy llama-3.1-8b-instruct" in out
    assert "spillway" in out
    assert "oracle" in out


def test_policies_start_warm_unless_asked_to_start_cold(tmp_path: Path) -> None:
    # Static provisioning has no serverless: started cold it drops what arrives during its cold start.
    runs = {}
    for name, extra in (("warm", []), ("cold", ["--cold-start"])):
        out = tmp_path / f"{name}.json"
        assert main(["simulate", *SMALL, "--baselines", "static-peak", "--json", str(out), *extra]) == 0
        runs[name] = {p["policy"]: p for p in json.loads(out.read_text())["policies"]}
    assert runs["warm"]["static-peak"]["dropped"] < runs["cold"]["static-peak"]["dropped"]
    assert runs["warm"]["static-peak"]["slo_attainment"] > runs["cold"]["static-peak"]["slo_attainment"]


def test_drawn_cold_starts_slow_down_a_cold_static_fleet_as_its_range_says(tmp_path: Path) -> None:
    # Started cold, static provisioning drops what arrives before its replicas are up: a range of slower
    # starts than the policy's 300 s drops more; the draws are seeded, so a run repeats exactly.
    runs = {}
    for name, extra in (
        ("fixed", []),
        ("slow", ["--cold-start-range", "600,900"]),
        ("again", ["--cold-start-range", "600,900"]),
    ):
        out = tmp_path / f"{name}.json"
        args = ["simulate", *SMALL, "--baselines", "static-peak", "--cold-start", "--json", str(out), *extra]
        assert main(args) == 0
        runs[name] = {p["policy"]: p for p in json.loads(out.read_text())["policies"]}
    assert runs["slow"]["static-peak"]["dropped"] > runs["fixed"]["static-peak"]["dropped"]
    assert runs["slow"] == runs["again"]


@pytest.mark.parametrize("value", ["5", "a,b", "500,90", "0,10"])
def test_a_bad_cold_start_range_is_refused_by_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--cold-start-range", value])
    assert exc.value.code == 2
    assert "--cold-start-range" in capsys.readouterr().err


def _long_prompt_trace(path: Path) -> Path:
    """Write an Azure-format trace: one request a second, every fourth with a 40,000-token prompt."""
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(400):
        prompt = 40_000 if i % 4 == 0 else 800
        rows.append(f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.0000000,{prompt},100")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_simulate_reports_the_attainable_ceiling_when_prompts_are_too_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = _long_prompt_trace(tmp_path / "long.csv")
    out_json = tmp_path / "sim.json"
    code = main(["simulate", "--trace", str(trace), "--baselines", "none", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # 40,000 tokens at 12,000 tokens/s is 3.3 s of prefill against the 2 s target: a quarter always misses
    lines = [line for line in captured.out.splitlines() if "cannot be met" in line]
    assert len(lines) == 1
    assert "attainable ceiling 75.00%" in lines[0]
    doc = json.loads(out_json.read_text())
    assert doc["feasibility"]["ceiling"] == pytest.approx(0.75)
    assert doc["feasibility"]["meetable"] is False
    assert doc["policies"][0]["slo_attainment"] <= 0.75 + 1e-9
