"""`scaler policy validate|schema|explain` as an SRE runs them: exit codes, stdout, stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaler.cli import main

POLICIES = Path(__file__).resolve().parents[1] / "policies"
EXAMPLES = sorted(POLICIES.glob("*.yaml"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_all_examples_exits_0_with_one_ok_line_per_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "policy", "validate", *map(str, EXAMPLES))
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == len(EXAMPLES)
    assert f"{POLICIES / 'default.yaml'}: ok (1 model)" in lines
    assert f"{POLICIES / 'steady-high-volume.yaml'}: ok (2 models)" in lines


def test_validate_reports_each_problem_on_stderr_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: a\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n  - name: b\n    prices:\n      replica_per_hour: -3.0\n    bounds:\n      min_replica: 1\n"
    )
    code, out, err = run(capsys, "policy", "validate", str(good), str(bad))
    assert code == 1
    assert out == f"{good}: ok (1 model)\n"
    assert err.splitlines() == [
        f"{bad}:4: models[0].prices.replica_per_hour: must be >= 0, got -3.0",
        f"{bad}:6: models[0].bounds.min_replica: unknown key 'min_replica'; did you mean 'min_replicas'?",
    ]
    assert "Traceback" not in out + err


def test_validate_checks_model_names_across_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("models:\n  - name: same\n")
    second.write_text("models:\n  - name: same\n")
    code, _, err = run(capsys, "policy", "validate", str(first), str(second))
    assert code == 1
    assert err == f"{second}:2: models[0].name: model 'same' is already defined in {first}:2\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "file is empty; expected a mapping with a 'models' list"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"models: [\n", "YAML syntax error"),
    ],
)
def test_validate_unreadable_or_broken_files_exit_1_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "policy", "validate", str(path))
    assert code == 1
    assert out == ""
    assert err.startswith(str(path))
    assert message in err
    assert "Traceback" not in err


def test_validate_a_directory_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "policy", "validate", str(tmp_path))
    assert (code, err) == (1, f"{tmp_path}: is a directory, not a policy file\n")


@pytest.mark.parametrize(
    "argv",
    [("policy", "validate"), ("policy", "explain"), ("policy", "frobnicate"), ("policy", "schema", "extra")],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    assert "usage: scaler" in capsys.readouterr().err


def test_policy_without_a_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "policy")
    assert code == 2
    assert out == ""
    assert "validate" in err
    assert "Examples:" in err


@pytest.mark.parametrize("command", ["validate", "schema", "explain"])
def test_help_has_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["policy", command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert f"scaler policy {command}" in out


def test_schema_prints_json_schema_with_dialect_and_title(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "policy", "schema")
    assert (code, err) == (0, "")
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Spillway policy file"
    assert "ModelPolicy" in schema["$defs"]
    assert out.startswith("{\n  ")  # pretty printed, diff-able


def test_explain_prints_break_even_and_effective_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "policy", "explain", str(POLICIES / "steady-high-volume.yaml"))
    assert (code, err) == (0, "")
    assert out.count("Model ") == 2
    # $2.50 per replica-hour vs $0.0021 * 3600 = $7.56 per busy hour
    assert "pays off above 33% utilisation (replica $2.50/h vs serverless $7.56 per busy hour)" in out
    assert "Effective policy (defaults filled in):" in out


def test_explain_one_model(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(POLICIES / "steady-high-volume.yaml")
    code, out, _ = run(capsys, "policy", "explain", path, "--model", "llama-3.1-8b-chat")
    assert code == 0
    assert out.startswith("Model llama-3.1-8b-chat\n")
    assert "llama-3.1-70b-chat" not in out


def test_explain_unknown_model_exits_2_listing_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(POLICIES / "steady-high-volume.yaml")
    code, out, err = run(capsys, "policy", "explain", path, "--model", "gpt-5")
    assert (code, out) == (2, "")
    assert err == (
        f"scaler policy explain: no model 'gpt-5' in {path} (it has: llama-3.1-70b-chat, llama-3.1-8b-chat)\n"
    )


def test_explain_invalid_file_exits_1_with_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("models:\n  - name: m\n    slo: {attainment: 1.2}\n")
    code, out, err = run(capsys, "policy", "explain", str(path))
    assert (code, out) == (1, "")
    assert err == f"{path}:3: models[0].slo.attainment: must be < 1, got 1.2\n"


def test_explain_with_a_trace_reports_the_ceiling_of_each_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:00:{i:02d}.0000000,{30_000 if i < 6 else 500},50" for i in range(60)]
    trace = tmp_path / "long.csv"
    trace.write_text("\n".join(rows) + "\n")
    code, out, err = run(capsys, "policy", "explain", str(POLICIES / "default.yaml"), "--trace", str(trace))
    assert code == 0, err
    # 30,000 prompt tokens need 2.5 s of prefill against the default 2 s TTFT: 6 of 60 requests miss
    assert "attainable ceiling 90.00% (6 of 60 requests miss on prefill alone)" in out
    assert out.count("cannot be met on this workload") == 1


def test_explain_with_a_missing_trace_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "policy", "explain", str(POLICIES / "default.yaml"), "--trace", str(tmp_path / "x")
    )
    assert code == 2
    assert "no such file" in err


def test_explain_shows_what_a_running_daemon_learned(capsys: pytest.CaptureFixture[str]) -> None:
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from scaler.adapters.metrics import DaemonMetrics  # noqa: PLC0415
    from scaler.control.leadtime import LeadEstimate  # noqa: PLC0415

    metrics = DaemonMetrics()
    learned = LeadEstimate(
        kind="replica", seconds=212.0, configured=300.0, learned=212.0, observations=9, censored=0, pending=0,
        refused=0, typical=160.0, learned_typical=160.0,
    )  # fmt: skip
    configured = LeadEstimate(
        kind="serverless", seconds=15.0, configured=15.0, learned=None, observations=0, censored=0, pending=0,
        refused=0, typical=15.0, learned_typical=None,
    )  # fmt: skip
    metrics.record_lead_times(model="llama-3.1-8b-instruct", lead_times=(learned, configured))
    body = metrics.exposition()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        code, out, _ = run(capsys, "policy", "explain", str(POLICIES / "default.yaml"), "--metrics", url)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    assert "replica cold start 212 s learned (p90, typical 160 s (p0); configured 300 s)" in out
    typical = 'scaler_lead_time_seconds{kind="replica",model="llama-3.1-8b-instruct",quantile="0",'
    assert typical in body.decode()
    assert "serverless warm-up 15 s configured (nothing learned yet)" in out
    code, _, err = run(capsys, "policy", "explain", str(POLICIES / "default.yaml"), "--metrics", "file:///etc/x")
    assert code == 2
    assert "--metrics: 'file:///etc/x' is not an http(s) URL" in err
