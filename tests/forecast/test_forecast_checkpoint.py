"""Checkpoints: a restored forecaster forecasts exactly as the original; bad bytes are refused cleanly."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest

from scaler.forecast import checkpoint
from scaler.forecast.models import DemandForecaster

BUCKET = 60


def _trained() -> DemandForecaster:
    rng = np.random.default_rng(8)
    fc = DemandForecaster(bucket_seconds=BUCKET, horizon_buckets=8, season_buckets=[12, 36], min_buckets=5)
    n = 100
    reqs = 50 + 20 * np.sin(2 * np.pi * np.arange(n) / 12) + rng.normal(0, 3, n)
    reqs[[7, 8, 40]] = np.nan
    fc.seed(start=1_700_000_000.0, requests=reqs, prompt_tokens=reqs * 300, output_tokens=reqs * 40)
    return fc


def _same(a: DemandForecaster, b: DemandForecaster, now: float) -> None:
    fa, fb = a.forecast(now=now), b.forecast(now=now)
    assert fa.start == fb.start
    assert fa.valid
    assert fb.valid
    np.testing.assert_array_equal(fa.levels, fb.levels)
    np.testing.assert_array_equal(fa.rate_mean, fb.rate_mean)
    np.testing.assert_array_equal(fa.rate_quantiles, fb.rate_quantiles)
    assert (fa.mean_prompt_tokens, fa.mean_output_tokens) == (fb.mean_prompt_tokens, fb.mean_output_tokens)


def test_round_trip_gives_identical_forecasts_now_and_after_more_data() -> None:
    original = _trained()
    restored = DemandForecaster.from_bytes(original.to_bytes())
    start = 1_700_000_000.0
    _same(original, restored, start + 100 * BUCKET)
    _same(original, restored, start + 103.5 * BUCKET)
    for k in range(100, 100 + restored.refit_every + 3):  # crosses a refit on both
        y = 40.0 + k % 12
        for fc in (original, restored):
            fc.observe(
                bucket_start=start + k * BUCKET, requests=y, prompt_tokens=y * 300, output_tokens=y * 40
            )
    _same(original, restored, start + (103 + restored.refit_every) * BUCKET)
    assert restored.observed_buckets == original.observed_buckets
    assert restored.min_buckets == 5


def test_round_trip_of_an_empty_forecaster() -> None:
    fresh = DemandForecaster(bucket_seconds=10, horizon_buckets=3, season_buckets=[])
    restored = DemandForecaster.from_bytes(fresh.to_bytes())
    assert not restored.forecast(now=0.0).valid
    assert restored.anchor is None


def test_round_trip_inside_the_first_cycle_with_a_missing_bucket() -> None:
    """The raw first cycle marks a missing bucket with NaN: a model handed over young keeps its state."""
    start = 1_700_000_000.0
    original = DemandForecaster(bucket_seconds=1, horizon_buckets=30, season_buckets=[60], min_buckets=1)
    for k, y in enumerate([3.0, np.nan, 2.0, 4.0, 1.0, 3.0]):
        original.observe(bucket_start=start + k, requests=y, prompt_tokens=y * 300, output_tokens=y * 40)
    assert np.isnan(original.seas).any()  # what the checkpoint must carry
    restored = DemandForecaster.from_bytes(original.to_bytes())
    _same(original, restored, start + 6)
    for k in range(6, 70):  # the first cycle completes on both
        for fc in (original, restored):
            fc.observe(bucket_start=start + k, requests=2.0, prompt_tokens=600.0, output_tokens=80.0)
    _same(original, restored, start + 70)


def _ready_season_with_a_nan() -> bytes:
    seas = np.array(_trained().seas)
    seas[0, 3] = np.nan
    return _with_array("seas", seas)


def _header_and_payload(data: bytes) -> tuple[dict[str, object], bytes]:
    at = len(checkpoint.MAGIC)
    (size,) = struct.unpack(">I", data[at : at + 4])
    return json.loads(data[at + 4 : at + 4 + size]), data[at + 4 + size :]


def _rebuild(header: dict[str, object], payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return checkpoint.MAGIC + struct.pack(">I", len(raw)) + raw + payload


def _with_header(**changes: object) -> bytes:
    header, payload = _header_and_payload(_trained().to_bytes())
    header.update(changes)
    return _rebuild(header, payload)


def _with_array(name: str, value: np.ndarray) -> bytes:
    header, payload = _header_and_payload(_trained().to_bytes())
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[name] = value
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return _rebuild(header, buf.getvalue())


def _pickled_object_array() -> bytes:
    header, _ = _header_and_payload(_trained().to_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("params.npy", "w") as fh:
        np.save(fh, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    return _rebuild(header, buf.getvalue())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"garbage" * 20, "bad magic"),
        (checkpoint.MAGIC + b"\x00\x00", "bad magic"),
        (checkpoint.MAGIC + b"\x00\x00\x00\x05{nope", "corrupt"),
        (checkpoint.MAGIC + b"\x00\x00\x00\x02[]", "corrupt"),
        (_with_header(version=99), "version 99"),
        (_with_header(bucket_seconds=-5), "bucket_seconds"),
        (_with_header(horizon_buckets=30), "shape"),
        (_trained().to_bytes()[:-40], "corrupt"),
        (_with_array("state", np.full((3, 8), np.inf)), "non-finite"),
        (_ready_season_with_a_nan(), "array seas holds non-finite"),
        (_with_array("hist", np.zeros(4)), "shape"),
        (_pickled_object_array(), "corrupt"),
    ],
    ids=[
        "empty", "garbage", "short", "bad-json", "json-not-object", "future-version", "bad-config",
        "config-mismatch", "truncated", "non-finite-state", "nan-in-a-ready-season", "wrong-shape",
        "pickled-object",
    ],
)  # fmt: skip
def test_bad_checkpoint_raises_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemandForecaster.from_bytes(data)


def test_foreign_type_raises_value_error() -> None:
    with pytest.raises(ValueError, match="expected bytes"):
        DemandForecaster.from_bytes("not bytes")  # type: ignore[arg-type]
