"""Event decode micro-benchmark: the stdlib-json decoder of an earlier commit vs msgspec (prints figures).

Both decoders run in the same process over the same payloads, interleaved run by run; the figure is
the median over the runs of the per-event cost (ns/event), with the fastest and slowest run. The old
decoder is ``scaler/core/events.py`` as of the newest commit whose version did not use msgspec (or
``--old-rev``), loaded from ``git show`` into a temporary module.

Workloads: valid request events, valid metric events, a mix of rejected events (one of each kind
the tests check). Also prints how many rejected payloads get the
same reason from both decoders.

    .venv/bin/python bench/decode.py [--events 100000] [--runs 7] [--old-rev REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaler.core import events as new_events

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_750_000_000.0
SKEW = 300.0
MODELS = {f"model-{i}": None for i in range(100)}  # a dict, as the runtime passes its policies


def _old_rev() -> str:
    revs = subprocess.run(
        ["git", "rev-list", "HEAD", "--", "scaler/core/events.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for rev in revs:
        if "msgspec" not in _source(rev):
            return rev
    raise SystemExit("no earlier version of scaler/core/events.py without msgspec")


def _source(rev: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:scaler/core/events.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _load_old(rev: str, directory: Path) -> ModuleType:
    path = directory / "old_events.py"
    path.write_text(_source(rev), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_events", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_events"] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


def _requests(count: int, rng: random.Random) -> list[bytes]:
    kinds = ["arrival", "first_token", "finish", "reject"]
    out = []
    for i in range(count):
        event: dict[str, Any] = {
            "model": f"model-{rng.randrange(100)}",
            "ts": NOW - rng.uniform(0, 5),
            "type": kinds[i % 4],
            "request_id": f"req-{rng.getrandbits(64):016x}",
            "prompt_tokens": rng.randrange(1, 8000),
            "output_tokens": rng.randrange(0, 2000),
        }
        if i % 2:
            event["backend"] = "kubernetes" if i % 3 else "serverless"
        out.append(json.dumps(event).encode())
    return out


def _metrics(count: int, rng: random.Random) -> list[bytes]:
    return [
        json.dumps(
            {
                "model": f"model-{rng.randrange(100)}",
                "ts": NOW - rng.uniform(0, 5),
                "replica": f"model-{i % 100}-7f9c-{i % 7:05d}",
                "waiting": rng.randrange(0, 50),
                "running": rng.randrange(0, 256),
                "kv_cache_usage": rng.random(),
                "ready": bool(i % 5),
            }
        ).encode()
        for i in range(count)
    ]


def _rejected(count: int, rng: random.Random) -> list[bytes]:
    good = json.loads(_requests(1, rng)[0])
    good.pop("backend", None)
    base = json.dumps(good).encode()
    ts = json.dumps(good["ts"]).encode()
    variants = [
        b"\xff\xfe{}",
        b'{"model": "model-1"',
        b"[1, 2]",
        json.dumps({k: v for k, v in good.items() if k != "ts"}).encode(),
        json.dumps({**good, "extra": 1}).encode(),
        json.dumps({**good, "model": "gpt-9"}).encode(),
        json.dumps({**good, "model": 7}).encode(),
        json.dumps({**good, "type": "arrived"}).encode(),
        json.dumps({**good, "prompt_tokens": True}).encode(),
        json.dumps({**good, "output_tokens": -1}).encode(),
        json.dumps({**good, "ts": NOW + 10 * SKEW}).encode(),
        base.replace(ts, b"NaN"),
        base.replace(ts, b"9" * 400),
    ]
    return [variants[i % len(variants)] for i in range(count)]


def _per_event_ns(
    decode: Callable[..., Any], payloads: list[bytes], invalid: tuple[type[Exception], ...]
) -> float:
    start = time.perf_counter_ns()
    for raw in payloads:
        try:  # noqa: SIM105  # contextlib.suppress would add its own cost to every event
            decode(raw, known_models=MODELS, now=NOW, max_skew=SKEW)
        except invalid:
            pass
    return (time.perf_counter_ns() - start) / len(payloads)


def _reason(decode: Callable[..., Any], raw: bytes, invalid: type[Exception]) -> str:
    try:
        decode(raw, known_models=MODELS, now=NOW, max_skew=SKEW)
    except invalid as exc:
        return str(getattr(exc, "reason", "?"))
    except Exception as exc:
        return f"raised {type(exc).__name__}"
    return "accepted"


def _row(name: str, old: list[float], new: list[float]) -> None:
    o, n = statistics.median(old), statistics.median(new)
    print(
        f"{name:<22} old {o:8.0f} ns [{min(old):.0f}-{max(old):.0f}]   "
        f"new {n:8.0f} ns [{min(new):.0f}-{max(new):.0f}]   x{o / n:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--old-rev", default=None, help="commit of the old decoder (default: newest without msgspec)"
    )
    args = parser.parse_args()
    rev = args.old_rev or _old_rev()
    rng = random.Random(12)
    with tempfile.TemporaryDirectory() as tmp:
        old = _load_old(rev, Path(tmp))
        workloads = {
            "valid requests": (_requests(args.events, rng), "decode_request"),
            "valid metrics": (_metrics(args.events, rng), "decode_metric"),
            "rejected (13 kinds)": (_rejected(args.events // 4, rng), "decode_request"),
        }
        print(
            f"old decoder: scaler/core/events.py at {rev[:10]}; {args.runs} runs, median [min-max] per event"
        )
        for name, (payloads, function) in workloads.items():
            old_ns: list[float] = []
            new_ns: list[float] = []
            for _ in range(args.runs):
                # the old decoder raises OverflowError on a 400-digit ts (issue 17): counted as a rejection
                old_ns.append(
                    _per_event_ns(getattr(old, function), payloads, (old.InvalidEvent, OverflowError))
                )
                new_ns.append(
                    _per_event_ns(getattr(new_events, function), payloads, (new_events.InvalidEvent,))
                )
            _row(name, old_ns, new_ns)
        rejected = _rejected(13, rng)
        same = [
            (
                _reason(old.decode_request, raw, old.InvalidEvent),
                _reason(new_events.decode_request, raw, new_events.InvalidEvent),
            )
            for raw in rejected
        ]
        agree = sum(1 for a, b in same if a == b)
        print(f"rejected payloads with the same reason from both: {agree}/{len(same)}")
        for (a, b), raw in zip(same, rejected, strict=True):
            if a != b:
                print(f"  differs: old {a}, new {b}: {raw[:60]!r}")


if __name__ == "__main__":
    main()
