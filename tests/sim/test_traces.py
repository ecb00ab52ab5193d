"""Trace location setting and the Azure LLM 2023 loader (small files in tmp_path; real traces if present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaler.sim.traces import (
    AZURE_FILES,
    DEFAULT_TRACES_DIR,
    TRACES_ENV,
    TraceError,
    TraceProblem,
    load_azure,
    traces_dir,
)

REAL_TRACES = Path("/work/shared/traces")
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def write(tmp_path: Path, *lines: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_rows(count: int, *, minute: int = 30) -> list[str]:
    """Return ``count`` valid rows one second apart, from 2023-11-16 18:<minute>:00."""
    return [f"2023-11-16 18:{minute}:{i:02d}.0000000,{100 + i},{10 + i}" for i in range(count)]


@pytest.mark.parametrize(
    ("override", "env", "expected"),
    [
        ("/data/traces", {TRACES_ENV: "/env/traces"}, Path("/data/traces")),
        (None, {TRACES_ENV: "/env/traces"}, Path("/env/traces")),
        (None, {TRACES_ENV: ""}, DEFAULT_TRACES_DIR),
        ("", {}, DEFAULT_TRACES_DIR),
        (None, None, DEFAULT_TRACES_DIR),
    ],
)
def test_traces_dir_prefers_flag_then_environment_then_default(
    override: str | None, env: dict[str, str] | None, expected: Path
) -> None:
    assert traces_dir(override, env=env) == expected


def test_default_traces_dir_is_beside_the_project() -> None:
    assert Path("../shared/traces") == DEFAULT_TRACES_DIR


def test_azure_arrivals_are_seconds_since_the_first_request(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "2023-11-16 18:15:46.6805900,374,44",
        "2023-11-16 18:15:46.6805901,396,109",
        "2023-11-16 18:15:50.9951690,879,55",
        "2023-11-16 18:16:01.1805900,91,16",
    )
    load = load_azure(path)
    workload = load.workload
    assert load.problems == ()
    assert workload.arrivals == pytest.approx([0.0, 1e-7, 4.314579, 14.5], abs=1e-9)
    assert workload.arrivals[1] > 0.0  # the seventh fractional digit survives
    assert workload.prompt_tokens.tolist() == [374, 396, 879, 91]
    assert workload.output_tokens.tolist() == [44, 109, 55, 16]
    assert workload.duration == 15.0
    assert workload.name == "azure:trace"


def test_azure_unsorted_rows_are_sorted_with_their_tokens(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        "2023-11-16 18:00:05.0000000,5,50",
        "2023-11-16 18:00:01.0000000,1,10",
        "2023-11-16 18:00:03.5000000,3,30",
    )
    workload = load_azure(path).workload
    assert workload.arrivals.tolist() == [0.0, 2.5, 4.0]
    assert workload.prompt_tokens.tolist() == [1, 3, 5]
    assert workload.output_tokens.tolist() == [10, 30, 50]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2023-11-16 18:31:00.0000000,100", "expected 3 fields"),
        ("2023-11-16 18:31:00.0000000,1,2,3", "expected 3 fields"),
        ("16/11/2023 18:31:00,100,10", "TIMESTAMP '16/11/2023 18:31:00' is not YYYY-MM-DD"),
        ("2023-13-16 18:31:00.0000000,100,10", "not a valid date and time"),
        ("2023-11-16 18:31:00.0000000,1e3,10", "ContextTokens '1e3' is not a whole number"),
        ("2023-11-16 18:31:00.0000000,100,", "GeneratedTokens '' is not a whole number"),
        ("2023-11-16 18:31:00.0000000,100,-4", "GeneratedTokens -4 is negative"),
    ],
)
def test_azure_bad_row_is_skipped_and_reported_with_its_line(tmp_path: Path, row: str, message: str) -> None:
    rows = good_rows(40)
    path = write(tmp_path, HEADER, *rows[:10], row, *rows[10:])
    load = load_azure(path)
    assert load.workload.requests == 40
    assert len(load.problems) == 1
    assert load.problems[0].line == 12
    assert message in load.problems[0].message
    assert str(load.problems[0]).startswith("trace.csv:12: ")


def test_azure_problems_come_in_line_order_and_blank_lines_keep_numbering(tmp_path: Path) -> None:
    rows = good_rows(50)
    path = write(tmp_path, HEADER, *rows[:5], "", "2023-02-30 10:00:00,1,1", *rows[5:20], "oops", *rows[20:])
    load = load_azure(path)
    assert [problem.line for problem in load.problems] == [8, 24]
    assert load.workload.requests == 50


def test_azure_refuses_a_file_with_too_many_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *good_rows(20), "bad,1,2", "bad,3,4")
    with pytest.raises(TraceError, match=r"trace\.csv: 2 of 22 rows cannot be read .*first: trace\.csv:22"):
        load_azure(path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "the file is empty"),
        (("", ""), "the file is empty"),
        (("timestamp,prompt,output", *good_rows(3)), r":1: header is 'timestamp,prompt,output'"),
        ((HEADER,), "no usable request rows"),
        ((HEADER, "x,1,2"), r"no usable request rows; first problem: trace\.csv:2"),
    ],
)
def test_azure_refuses_unusable_files_naming_them(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(TraceError, match=message) as caught:
        load_azure(path)
    assert str(path) in str(caught.value)


def test_azure_refuses_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_azure(tmp_path / "absent.csv")
    with pytest.raises(TraceError, match="is a directory"):
        load_azure(tmp_path)


def test_azure_refuses_binary_data(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_bytes(b"TIMESTAMP,\xff\xfe\x00")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_azure(path)


def test_trace_problem_reads_as_file_and_line() -> None:
    assert str(TraceProblem(7, "bad", "x.csv")) == "x.csv:7: bad"
    assert str(TraceProblem(7, "bad")) == "line 7: bad"


@pytest.mark.skipif(not REAL_TRACES.is_dir(), reason="real traces not present")
@pytest.mark.parametrize(
    ("kind", "requests", "minutes", "prompt_mean", "output_mean"),
    [("conv", 19_366, 58.4, 1_155, 211), ("code", 8_819, 57.3, 2_048, 28)],
)
def test_real_azure_traces_load_whole(
    kind: str, requests: int, minutes: float, prompt_mean: float, output_mean: float
) -> None:
    load = load_azure(REAL_TRACES / AZURE_FILES[kind])
    workload = load.workload
    assert load.problems == ()
    assert workload.requests == requests
    assert workload.arrivals[-1] / 60 == pytest.approx(minutes, abs=0.1)
    assert np.all(np.diff(workload.arrivals) >= 0)
    assert workload.prompt_tokens.mean() == pytest.approx(prompt_mean, rel=0.001)
    assert workload.output_tokens.mean() == pytest.approx(output_mean, rel=0.01)
