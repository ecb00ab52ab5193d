"""Replaying the daemon's own events: what becomes a workload, and every way a file can be hostile."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.sim import events_trace
from scaler.sim.traces import TraceError

T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC
MODELS = ("small", "big")


def request(
    model: str, ts: float, kind: str, rid: str, *, prompt: int = 0, output: int = 0, **extra: Any
) -> str:
    return json.dumps(
        {
            "model": model,
            "ts": ts,
            "type": kind,
            "request_id": rid,
            "prompt_tokens": prompt,
            "output_tokens": output,
            **extra,
        }
    )


def metric(model: str, ts: float, replica: str, *, ready: bool) -> str:
    return json.dumps(
        {
            "model": model,
            "ts": ts,
            "replica": replica,
            "waiting": 0,
            "running": 1,
            "kv_cache_usage": 0.5,
            "ready": ready,
        }
    )


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def many_arrivals(model: str, n: int, *, start: float = T0) -> list[str]:
    return [request(model, start + i, "arrival", f"{model}-{i}", prompt=100) for i in range(n)]


def test_arrivals_take_output_tokens_from_their_finish_event_per_model(tmp_path: Path) -> None:
    lines = [
        request("small", T0 + 5.5, "arrival", "b", prompt=300),
        request("small", T0 + 1.0, "arrival", "a", prompt=200),
        request("big", T0 + 2.0, "arrival", "c", prompt=50),
        request("small", T0 + 9.0, "finish", "a", prompt=200, output=40),
        request("small", T0 + 3.0, "first_token", "a"),
        request("big", T0 + 8.0, "finish", "c", output=7),
    ]
    replay = events_trace.load_events(write(tmp_path, lines), known_models=MODELS)
    assert list(replay.models) == ["small", "big"]  # policy-file order
    assert replay.origin == T0 + 1.0
    assert replay.duration == 5.0  # the last arrival (or metric) 4.5 s after the origin, rounded up
    small = replay.models["small"].workload
    assert small.arrivals.tolist() == [0.0, 4.5]
    assert small.prompt_tokens.tolist() == [200, 300]
    assert small.output_tokens.tolist() == [40, 0]  # b has no finish: 0
    assert replay.models["small"].ttft[0] == pytest.approx(2.0)
    assert np.isnan(replay.models["small"].ttft[1])
    assert replay.models["big"].workload.output_tokens.tolist() == [7]
    assert replay.bad == 0


def test_a_model_picked_alone_leaves_the_others_out_as_unknown(tmp_path: Path) -> None:
    lines = many_arrivals("small", 100) + many_arrivals("big", 3)
    replay = events_trace.load_events(write(tmp_path, lines), known_models=["small"])
    assert list(replay.models) == ["small"]
    assert replay.bad == 3
    assert replay.problems[0].reason == "unknown_model"
    assert replay.problems[0].where.endswith(":101")


def test_metric_events_are_kept_as_replica_samples(tmp_path: Path) -> None:
    lines = [
        *many_arrivals("small", 10),
        metric("small", T0 + 0.0, "r1", ready=False),
        metric("small", T0 + 4.0, "r1", ready=True),
    ]
    replicas = events_trace.load_events(write(tmp_path, lines), known_models=MODELS).models["small"].replicas
    assert replicas is not None
    assert replicas.replica == ("r1", "r1")
    assert replicas.t.tolist() == [0.0, 4.0]
    assert replicas.ready.tolist() == [False, True]


def test_since_and_until_keep_only_events_in_the_range_and_set_the_origin(tmp_path: Path) -> None:
    path = write(tmp_path, many_arrivals("small", 100))
    replay = events_trace.load_events(path, known_models=MODELS, since=T0 + 10, until=T0 + 19.5)
    workload = replay.models["small"].workload
    assert workload.arrivals.tolist() == [float(i) for i in range(10)]
    assert replay.origin == T0 + 10
    assert replay.duration == 10.0
    assert replay.bad == 0


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"model": "small", "ts": 17645', "not_json"),  # truncated
        ('{"model": "small", "ts": 1.0, "type": "arrival"}', "missing_field"),
        (request("small", T0, "arrival", "x", prompt=-1), "bad_value"),
        (request("small", T0, "arrival", "x", prompt=True), "wrong_type"),  # type: ignore[arg-type]
        ("TIMESTAMP,ContextTokens,GeneratedTokens", "not_json"),  # wrong schema: a CSV header
        (request("small", T0 + 40 * 86400, "arrival", "far", prompt=1), "timestamp_skew"),
    ],
)
def test_a_few_bad_lines_are_skipped_and_named_by_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    lines = many_arrivals("small", 50)
    lines.insert(20, bad_line)
    replay = events_trace.load_events(write(tmp_path, lines), known_models=MODELS)
    assert replay.bad == 1
    assert replay.models["small"].workload.requests == 50
    (problem,) = replay.problems
    assert problem.reason == reason
    assert problem.where == f"{tmp_path / 'events.jsonl'}:21"


def test_more_than_five_percent_bad_is_an_error_naming_the_first(tmp_path: Path) -> None:
    lines = many_arrivals("small", 90) + ['{"truncated": '] * 10
    with pytest.raises(TraceError, match=r"10 of 100 events cannot be used .*events.jsonl:91: not_json"):
        events_trace.load_events(write(tmp_path, lines), known_models=MODELS)


def test_a_file_of_another_schema_is_an_error(tmp_path: Path) -> None:
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + ["2023-11-16 18:15:46.6805900,374,44"] * 20
    with pytest.raises(TraceError, match="21 of 21 events cannot be used"):
        events_trace.load_events(write(tmp_path, lines), known_models=MODELS)


def test_a_range_with_no_events_is_an_error_naming_the_range(tmp_path: Path) -> None:
    path = write(tmp_path, many_arrivals("small", 10))
    with pytest.raises(
        TraceError, match=r"no arrival events of small, big from 2025-12-01T00:16:40Z to 2025-12-01T00:33:20Z"
    ):
        events_trace.load_events(path, known_models=MODELS, since=T0 + 1000, until=T0 + 2000)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(TraceError, match="no arrival events"):
        events_trace.load_events(path, known_models=MODELS)


def test_an_overlong_line_is_one_bad_line_and_reading_goes_on(tmp_path: Path) -> None:
    lines = many_arrivals("small", 30)
    lines.insert(3, '{"model": "' + "x" * 200_000 + '"}')
    replay = events_trace.load_events(write(tmp_path, lines), known_models=MODELS)
    assert replay.models["small"].workload.requests == 30
    assert [(p.where.rsplit(":", 1)[1], p.reason) for p in replay.problems] == [("4", "too_large")]


class _Counting(io.RawIOBase):
    """A read-only stream over a file that counts the bytes handed out."""

    def __init__(self, path: Path) -> None:
        self.inner = path.open("rb")
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.read_bytes += len(data)
        return data

    def close(self) -> None:
        self.inner.close()
        super().close()


def test_a_10_gb_sparse_file_is_refused_after_its_first_chunk(tmp_path: Path) -> None:
    path = tmp_path / "sparse.jsonl"
    with path.open("wb") as f:
        f.truncate(10 * 2**30)  # all NUL bytes, no disk used
    stream = _Counting(path)
    with pytest.raises(TraceError, match=r"sparse.jsonl:1: NUL byte at byte offset 0"):
        list(events_trace.iter_lines(stream, name=str(path)))  # type: ignore[arg-type]
    assert stream.read_bytes <= 2**20
    stream.close()
    with pytest.raises(TraceError, match="not a JSON-lines file"):
        events_trace.load_events(path, known_models=MODELS)


def test_a_nul_after_good_lines_names_its_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n\0\0\0')
    with pytest.raises(TraceError, match=r"torn.jsonl:3: NUL byte at byte offset 18"):
        events_trace.load_events(path, known_models=MODELS)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"x")),
    chunk=st.integers(min_value=1, max_value=16),
    limit=st.integers(min_value=1, max_value=20),
)
def test_iter_lines_splits_like_bytes_split_whatever_the_chunking(
    data: bytes, chunk: int, limit: int
) -> None:
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    want = [(i, line if len(line) <= limit else None) for i, line in enumerate(expected, start=1)]
    got = list(events_trace.iter_lines(io.BytesIO(data), name="x", max_line=limit, chunk_bytes=chunk))
    assert got == want
