"""Checkpoint format of :class:`scaler.forecast.models.DemandForecaster` (safe to load from untrusted bytes).

Layout (:mod:`scaler.core.framing`): ``MAGIC``, a 4-byte big-endian header length, a UTF-8 JSON header
(format version, configuration and scalar state), then an ``.npz`` archive of the arrays, read back
with ``allow_pickle=False``. Nothing is ever unpickled. This module knows the format only; the
forecaster turns itself into a :class:`Saved` and back (and checks the arrays fit its configuration).

Version 3 adds the form flag as a fifth column of ``params`` (1 = seasonal, 0 = level model);
versions 1 and 2 load with the flag 1 (they were always seasonal). Version 2 stores ``seas``, ``res``
and ``hist`` as float32 (as the forecaster holds them), ``res`` for the request series alone;
version 1 stored every array as float64 and a residual ring per series, and still loads: those
three rounded to float32, the token series' rings dropped.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from scaler.core import framing
from scaler.core.types import FloatArray
from scaler.forecast.kernels import Float32Array

MAGIC = b"SPILLWAY-FORECAST\n"
VERSION = 3
READABLE = (1, 2, 3)  # version 1: every array float64; versions 1-2: params without the form flag
ARRAYS = ("params", "state", "seas", "res", "hist")
DTYPES: Mapping[str, type[np.floating[Any]]] = {
    "params": np.float64,
    "state": np.float64,
    "seas": np.float32,
    "res": np.float32,
    "hist": np.float32,
}
INTS = ("last_idx", "first_idx", "origin", "n_observed", "since_fit")
_CONFIG = ("bucket_seconds", "horizon_buckets", "season_buckets", "levels", "min_buckets", "anchor")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Saved:
    """What a checkpoint holds: the configuration and scalars (``header``) and the state ``arrays``."""

    header: Mapping[str, Any]
    arrays: Mapping[str, FloatArray | Float32Array]


def dump(saved: Saved) -> bytes:
    """Return the checkpoint bytes of ``saved`` (its header must hold the configuration and the INTS)."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(saved.arrays[name], dtype=DTYPES[name]) for name in ARRAYS}
    np.savez(buf, **arrays)
    return framing.frame(MAGIC, {"version": VERSION, **saved.header}, buf.getvalue())


def load(data: object) -> Saved:
    """Return what checkpoint ``data`` holds, arrays in :data:`DTYPES`; raises ValueError unless it is valid.

    Reads the versions in :data:`READABLE`; float64 arrays of version 1 are rounded to their dtype here
    (values beyond float32's range become infinite, which the forecaster refuses).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"forecaster checkpoint: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        header, payload = framing.unframe(data, MAGIC)
    except ValueError as exc:
        reason = "not a Spillway forecaster checkpoint (bad magic)" if str(exc) == "bad magic" else None
        raise ValueError(f"forecaster checkpoint: {reason or f'corrupt ({exc})'}") from None
    version = header.get("version")
    if isinstance(version, bool) or version not in READABLE:
        raise ValueError(f"forecaster checkpoint: version {version!r} is not supported (expected {READABLE})")
    missing = [name for name in (*_CONFIG, *INTS) if name not in header]
    if missing:
        raise ValueError(f"forecaster checkpoint: corrupt (header lacks {', '.join(missing)})")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz, np.errstate(over="ignore"):
            arrays = {name: np.array(npz[name], dtype=DTYPES[name]) for name in ARRAYS}
        if version == 1 and arrays["res"].ndim == 2:  # a ring per series then
            arrays["res"] = arrays["res"][:1].copy()
        params = arrays["params"]
        if version < 3 and params.ndim == 2 and params.shape[1] == 4:  # no form flag then: seasonal
            arrays["params"] = np.hstack([params, np.ones((params.shape[0], 1))])
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"forecaster checkpoint: corrupt ({type(exc).__name__}: {exc})") from None
    return Saved(header=header, arrays=arrays)
