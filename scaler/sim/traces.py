"""Real request traces: where they live, the Azure LLM 2023 loader, and the shared error types.

The traces are public production data kept beside the project (never inside it): by default in
``../shared/traces`` relative to the working directory. ``traces_dir`` resolves the setting; the
environment is passed in by the caller (the CLI passes ``os.environ``) so this module stays pure.

Azure LLM inference trace 2023 (Patel et al., "Splitwise", ISCA 2024, CC-BY 4.0): one CSV row per
request, ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps like ``2023-11-16 18:15:46.6805900``.
The ServeGen rate files are read by :mod:`scaler.sim.servegen`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scaler.sim.workload import IntArray, Workload

TRACES_ENV = "SCALER_TRACES_DIR"
DEFAULT_TRACES_DIR = Path("..") / "shared" / "traces"
AZURE_FILES: Mapping[str, str] = {
    "conv": "azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
    "code": "azure-llm-2023/AzureLLMInferenceTrace_code.csv",
}
SERVEGEN_RAW = "servegen-m-large/raw"

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_BAD_FRACTION = 0.05  # more unreadable rows than this and the file is refused as a whole
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?")


class TraceError(Exception):
    """A trace that cannot be used at all; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class TraceProblem:
    """A row skipped while loading: its 1-based ``line`` in ``file`` and why."""

    line: int
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else f"line {self.line}"
        return f"{where}: {self.message}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TraceLoad:
    """A loaded trace and the rows that were skipped (for the caller to show)."""

    workload: Workload
    problems: tuple[TraceProblem, ...]


def traces_dir(override: str | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """Return the trace directory: ``override``, else ``env[SCALER_TRACES_DIR]``, else ``../shared/traces``.

    ``env`` is the process environment, passed in by the caller (``None`` means an empty one).
    Nothing is checked on disk; the loaders raise :class:`TraceError` for a missing file.
    """
    if override:
        return Path(override)
    value = (env or {}).get(TRACES_ENV, "")
    return Path(value) if value else DEFAULT_TRACES_DIR


def read_text(path: Path) -> str:
    """Return the text of ``path`` (UTF-8, BOM stripped); raise TraceError if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror})") from None


def check_bad_fraction(path: Path, problems: list[TraceProblem], rows: int) -> None:
    """Raise TraceError if more than ``MAX_BAD_FRACTION`` of ``rows`` became ``problems``."""
    if problems and len(problems) > MAX_BAD_FRACTION * rows:
        raise TraceError(
            f"{path}: {len(problems)} of {rows} rows cannot be read (more than "
            f"{MAX_BAD_FRACTION:.0%}); first: {problems[0]}"
        )


def _azure_row(line: str, number: int, path: Path) -> tuple[str, int, int] | TraceProblem:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != len(AZURE_HEADER):
        expected = ",".join(AZURE_HEADER)
        return TraceProblem(number, f"expected 3 fields {expected}, got {len(parts)}", path.name)
    stamp, prompt, output = parts
    if not _TIMESTAMP.fullmatch(stamp):
        return TraceProblem(number, f"TIMESTAMP {stamp!r} is not YYYY-MM-DD HH:MM:SS[.fraction]", path.name)
    values: list[int] = []
    for name, text in (("ContextTokens", prompt), ("GeneratedTokens", output)):
        try:
            value = int(text)
        except ValueError:
            return TraceProblem(number, f"{name} {text!r} is not a whole number", path.name)
        if value < 0:
            return TraceProblem(number, f"{name} {value} is negative", path.name)
        values.append(value)
    return stamp, values[0], values[1]


def _to_nanoseconds(stamps: list[str], lines: list[int], path: Path) -> tuple[IntArray, list[TraceProblem]]:
    """Return the stamps as int64 ns (NaT-free) and problems for those numpy cannot read (e.g. month 13)."""
    try:
        return np.array(stamps, dtype="datetime64[ns]").astype(np.int64), []
    except ValueError:
        pass
    values = np.zeros(len(stamps), dtype=np.int64)
    keep = np.ones(len(stamps), dtype=bool)
    problems: list[TraceProblem] = []
    for i, stamp in enumerate(stamps):
        try:
            values[i] = np.datetime64(stamp, "ns").astype(np.int64)
        except ValueError:
            keep[i] = False
            message = f"TIMESTAMP {stamp!r} is not a valid date and time"
            problems.append(TraceProblem(lines[i], message, path.name))
    values[~keep] = np.iinfo(np.int64).min
    return values, problems


def load_azure(path: Path) -> TraceLoad:
    """Return the Azure LLM 2023 trace at ``path`` as a workload plus the rows skipped.

    Arrivals are seconds since the earliest request, sorted (the file need not be); ``duration`` is
    the last arrival rounded up to the next whole second. Blank lines are ignored.
    Raises TraceError naming the file if it is missing or unreadable, the header is not
    ``TIMESTAMP,ContextTokens,GeneratedTokens``, no row is usable, or more than 5% of rows are bad.
    """
    lines = read_text(path).splitlines()
    if not lines or not any(line.strip() for line in lines):
        raise TraceError(f"{path}: the file is empty, expected a header {','.join(AZURE_HEADER)}")
    header = tuple(part.strip() for part in lines[0].split(","))
    if header != AZURE_HEADER:
        raise TraceError(f"{path}:1: header is {lines[0]!r}, expected {','.join(AZURE_HEADER)!r}")
    problems: list[TraceProblem] = []
    stamps: list[str] = []
    numbers: list[int] = []
    prompt: list[int] = []
    output: list[int] = []
    rows = 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        rows += 1
        parsed = _azure_row(line, number, path)
        if isinstance(parsed, TraceProblem):
            problems.append(parsed)
            continue
        stamps.append(parsed[0])
        numbers.append(number)
        prompt.append(parsed[1])
        output.append(parsed[2])
    nanos, bad_dates = _to_nanoseconds(stamps, numbers, path)
    keep = nanos != np.iinfo(np.int64).min
    problems = sorted(problems + bad_dates, key=lambda problem: problem.line)
    if not keep.any():
        detail = f"; first problem: {problems[0]}" if problems else ""
        raise TraceError(f"{path}: no usable request rows{detail}")
    check_bad_fraction(path, problems, rows)
    nanos = nanos[keep]
    order = np.argsort(nanos, kind="stable")
    arrivals = (nanos[order] - nanos[order[0]]).astype(np.float64) / 1e9
    workload = Workload(
        name=f"azure:{path.stem}",
        arrivals=arrivals,
        prompt_tokens=np.asarray(prompt, dtype=np.int64)[keep][order],
        output_tokens=np.asarray(output, dtype=np.int64)[keep][order],
        duration=float(math.floor(arrivals[-1]) + 1),
    )
    return TraceLoad(workload=workload, problems=tuple(problems))
