"""`scaler simulate --trace-format events` and `scaler export`: tables per model, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaler.cli import main
from tests.sim.test_events_trace import T0, many_arrivals, metric, request

POLICY = "models:\n  - name: small\n  - name: big\n"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def events_file(tmp_path: Path, lines: list[str], name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def simulate(trace: Path, policy: Path, *extra: str) -> int:
    args = ["simulate", "--trace", str(trace), "--trace-format", "events", "--policy", str(policy)]
    return main([*args, "--baselines", "none", "--no-progress", *extra])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    return err


def test_every_model_with_events_gets_a_table_with_an_as_run_row(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = many_arrivals("small", 600) + many_arrivals("big", 300)
    lines += [metric("small", T0 + t, "r1", ready=True) for t in range(0, 600, 30)]
    out_json = tmp_path / "out.json"
    assert simulate(events_file(tmp_path, lines), policy, "--json", str(out_json)) == 0
    out = capsys.readouterr().out
    assert "events:small: 600 requests" in out
    assert "events:big: 300 requests" in out
    assert out.count("as run") == 1  # only small has replica events
    doc = json.loads(out_json.read_text())
    assert doc["models"]["small"]["as_run"]["cost"]["replicas"] == pytest.approx(4.0 * 600 / 3600)
    assert "as_run" not in doc["models"]["big"]
    assert doc["models"]["big"]["policies"][0]["requests"] == 300


def test_model_picks_one_model(tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = many_arrivals("small", 100) + many_arrivals("big", 100)
    out_json = tmp_path / "out.json"
    trace = events_file(tmp_path, lines)
    assert simulate(trace, policy, "--model", "big", "--json", str(out_json)) == 0
    captured = capsys.readouterr()
    assert "events:big" in captured.out
    assert "events:small" not in captured.out
    assert json.loads(out_json.read_text())["workload"] == "events:big"  # one model: the usual document
    assert "warning" not in captured.err  # the other model's events are valid, only not simulated


# (models with arrivals, models with replica events only, extra flags, models named as without events)
SILENT_MODELS = [
    pytest.param((("small", "big", "idle"), (), (), []), id="every-model-has-events"),
    pytest.param((("small", "big"), (), (), ["idle"]), id="one-model-silent"),
    pytest.param((("big",), ("small",), (), ["small", "idle"]), id="replica-events-are-no-arrivals"),
    pytest.param((("small",), (), ("--model", "small"), []), id="model-asks-for-one"),
]


@pytest.mark.parametrize("case", SILENT_MODELS)
def test_policy_models_without_events_in_the_range_are_named_on_stderr_and_in_the_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], list[str]],
) -> None:
    arrivals, metrics_only, extra, missing = case
    policy = tmp_path / "policy.yaml"
    policy.write_text("models:\n  - name: small\n  - name: big\n  - name: idle\n", encoding="utf-8")
    lines = [line for model in arrivals for line in many_arrivals(model, 120)]
    lines += [metric(model, T0 + t, "r1", ready=True) for model in metrics_only for t in range(0, 120, 30)]
    assert simulate(events_file(tmp_path, lines), policy, *extra) == 0
    captured = capsys.readouterr()
    for model in arrivals if not extra else extra[1:]:
        assert f"events:{model}: 120 requests" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: no arrival events")]
    logged = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert not any(line.startswith("{") for line in captured.out.splitlines())  # stdout holds tables only
    if not missing:
        assert warnings == []
        assert logged == []
        return
    assert warnings == [
        "warning: no arrival events from 2025-12-01 00:00:00 UTC to 2025-12-01 00:02:00 UTC for "
        f"{', '.join(missing)}: not simulated"
    ]
    assert [(entry["event"], entry["level"], entry["models"]) for entry in logged] == [
        ("replay_models_without_events", "warning", missing)
    ]
    assert (logged[0]["since"], logged[0]["until"]) == (T0, T0 + 120)
    for model in missing:
        assert f"events:{model}" not in captured.out


def test_a_few_bad_lines_are_warnings_naming_their_lines(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = many_arrivals("small", 400)
    for at in (10, 20, 30, 40, 50, 60, 70):
        lines.insert(at, '{"model": "small", "ts": ')
    trace = events_file(tmp_path, lines)
    assert simulate(trace, policy) == 0
    err = capsys.readouterr().err
    assert f"warning: {trace}:11: not_json" in err
    assert "2 more events skipped" in err  # 5 shown, the rest counted


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "small", "ts": 1\n' * 50, "50 of 50 events cannot be used"),  # truncated lines
        (b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,374,44\n", "2 of 2 events"),
        (b"", "no arrival events of small, big"),
    ],
)
def test_hostile_files_are_one_line_errors(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_bytes(content)
    assert simulate(trace, policy) == 1
    assert message in one_error_line(capsys)


def test_a_10_gb_sparse_file_is_a_one_line_error(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "sparse.jsonl"
    with trace.open("wb") as f:
        f.truncate(10 * 2**30)
    assert simulate(trace, policy) == 1
    assert "NUL byte at byte offset 0: not a JSON-lines file" in one_error_line(capsys)


def test_a_range_with_no_events_is_a_one_line_error(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = events_file(tmp_path, many_arrivals("small", 100))
    assert simulate(trace, policy, "--since", "2030-01-01T00:00:00Z", "--until", "2030-01-02T00:00:00Z") == 1
    assert (
        "no arrival events of small, big from 2030-01-01T00:00:00Z to 2030-01-02T00:00:00Z"
        in one_error_line(capsys)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "60"], "--duration: not with events"),
        (["--model", "nope"], "--model nope: not in the policy file"),
        (["--since", "yesterday"], "--since 'yesterday': not unix seconds or an ISO 8601 time"),
    ],
)
def test_bad_flags_are_one_line_errors(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    trace = events_file(tmp_path, many_arrivals("small", 10))
    assert simulate(trace, policy, *args) == 1
    assert message in one_error_line(capsys)


def test_range_flags_without_events_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--since", "0"]) == 1
    assert "need --trace-format events or --from-kafka" in one_error_line(capsys)


def test_from_kafka_needs_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--from-kafka", "--bootstrap-servers", "127.0.0.1:1"]) == 1
    assert "--from-kafka needs --bootstrap-servers, --since and --until" in one_error_line(capsys)


def test_export_refuses_an_empty_range_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", "--bootstrap-servers", "127.0.0.1:1", "--since", "100", "--until", "50"]
    assert main([*args, "--out", str(tmp_path / "x.jsonl")]) == 1
    assert "--until 50 is not after --since 100" in one_error_line(capsys)


def test_iso_times_without_an_offset_are_utc(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = events_file(
        tmp_path, [request("small", T0 + i, "arrival", f"r{i}", prompt=10) for i in range(100)]
    )
    out_json = tmp_path / "out.json"
    assert simulate(trace, policy, "--since", "2025-12-01T00:00:50", "--json", str(out_json)) == 0
    assert json.loads(out_json.read_text())["policies"][0]["requests"] == 50
