"""Checkpoint format of :class:`scaler.forecast.models.DemandForecaster` (safe to load from untrusted bytes).

Layout: ``MAGIC``, a 4-byte big-endian header length, a UTF-8 JSON header (format version,
configuration and scalar state), then an ``.npz`` archive of the arrays, read back with
``allow_pickle=False``. Nothing is ever unpickled.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile

import numpy as np

from scaler.forecast.models import DemandForecaster

MAGIC = b"SPILLWAY-FORECAST\n"
VERSION = 1
_ARRAYS = ("params", "state", "seas", "res", "hist")
_INTS = ("last_idx", "first_idx", "origin", "n_observed", "since_fit")


def dump(fc: DemandForecaster) -> bytes:
    """Return the checkpoint bytes of ``fc``."""
    header = {
        "version": VERSION,
        "bucket_seconds": fc.bucket_seconds,
        "horizon_buckets": fc.horizon_buckets,
        "season_buckets": list(fc.season_buckets),
        "levels": [float(v) for v in fc.levels],
        "min_buckets": fc.min_buckets,
        "anchor": fc.anchor,
        **{name: int(getattr(fc, name)) for name in _INTS},
    }
    raw = json.dumps(header, sort_keys=True).encode()
    buf = io.BytesIO()
    np.savez(buf, **{name: getattr(fc, name) for name in _ARRAYS})
    return MAGIC + struct.pack(">I", len(raw)) + raw + buf.getvalue()


def load(data: bytes | bytearray | memoryview) -> DemandForecaster:
    """Return the forecaster in ``data``; raises ValueError unless it is a valid checkpoint (this version)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"forecaster checkpoint: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ValueError("forecaster checkpoint: not a Spillway forecaster checkpoint (bad magic)")
    at = len(MAGIC)
    (size,) = struct.unpack(">I", data[at : at + 4])
    at += 4
    try:
        header = json.loads(data[at : at + size].decode())
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
        version = header.get("version")
        if version != VERSION:
            raise ValueError(
                f"forecaster checkpoint: version {version!r} is not supported (expected {VERSION})"
            )
        fc = DemandForecaster(
            bucket_seconds=int(header["bucket_seconds"]),
            horizon_buckets=int(header["horizon_buckets"]),
            season_buckets=[int(m) for m in header["season_buckets"]],
            levels=[float(v) for v in header["levels"]],
            min_buckets=int(header["min_buckets"]),
        )
        anchor = header["anchor"]
        fc.anchor = None if anchor is None else float(anchor)
        for name in _INTS:
            setattr(fc, name, int(header[name]))
        with np.load(io.BytesIO(data[at + size :]), allow_pickle=False) as npz:
            arrays = {name: np.array(npz[name], dtype=np.float64) for name in _ARRAYS}
    except ValueError as exc:
        if str(exc).startswith("forecaster checkpoint:"):
            raise
        raise ValueError(f"forecaster checkpoint: corrupt ({exc})") from exc
    except (KeyError, TypeError, OSError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"forecaster checkpoint: corrupt ({type(exc).__name__}: {exc})") from exc
    for name, arr in arrays.items():
        expected = getattr(fc, name).shape
        if arr.shape != expected:
            raise ValueError(
                f"forecaster checkpoint: array {name} has shape {arr.shape}, expected {expected}"
            )
        if name != "hist" and not np.isfinite(arr).all():
            raise ValueError(f"forecaster checkpoint: array {name} holds non-finite values")
        setattr(fc, name, arr)
    if fc.anchor is not None and not math.isfinite(fc.anchor):
        raise ValueError("forecaster checkpoint: anchor is not finite")
    return fc
