"""Event decoding: what is accepted, what is rejected and with which reason, and that nothing else escapes."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core import events
from scaler.core.events import InvalidEvent, MetricEvent, RequestEvent

NOW = 1_750_000_000.0
MODELS = frozenset({"llama-8b", "qwen-32b"})
SKEW = 300.0

GOOD_REQUEST: dict[str, Any] = {
    "model": "llama-8b",
    "ts": NOW - 1.5,
    "type": "arrival",
    "request_id": "r-1",
    "prompt_tokens": 812,
    "output_tokens": 0,
}
GOOD_METRIC: dict[str, Any] = {
    "model": "qwen-32b",
    "ts": NOW,
    "replica": "qwen-32b-7f9c-abcde",
    "waiting": 3,
    "running": 41,
    "kv_cache_usage": 0.62,
    "ready": True,
}


def _req(**changes: Any) -> bytes:
    data = {**GOOD_REQUEST, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP}).encode()


def _met(**changes: Any) -> bytes:
    data = {**GOOD_METRIC, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP}).encode()


_DROP = object()


def _decode_request(raw: bytes) -> RequestEvent:
    return events.decode_request(raw, known_models=MODELS, now=NOW, max_skew=SKEW)


def _decode_metric(raw: bytes) -> MetricEvent:
    return events.decode_metric(raw, known_models=MODELS, now=NOW, max_skew=SKEW)


def test_a_good_request_decodes_to_typed_fields() -> None:
    event = _decode_request(_req(backend="serverless"))
    assert event == RequestEvent(
        model="llama-8b",
        ts=NOW - 1.5,
        type="arrival",
        request_id="r-1",
        prompt_tokens=812,
        output_tokens=0,
        backend="serverless",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.model = "other"  # type: ignore[misc]


def test_backend_is_optional_and_may_be_null() -> None:
    assert _decode_request(_req()).backend is None
    assert _decode_request(_req(backend=None)).backend is None


def test_an_integer_timestamp_is_accepted_as_float() -> None:
    event = _decode_request(_req(ts=int(NOW)))
    assert event.ts == NOW
    assert isinstance(event.ts, float)


@pytest.mark.parametrize(
    ("raw", "reason", "names"),
    [
        (b"\xff\xfe{}", "not_utf8", "offset"),
        (b'{"model": "llama-8b"', "not_json", ""),
        (b"", "not_json", ""),
        (b"[1, 2]", "not_object", "list"),
        (b'"arrival"', "not_object", "str"),
        (b"[" * 50_000 + b"]" * 50_000, "too_large", "bytes"),
        (b"[" * 30_000 + b"]" * 30_000, "not_json", "deeply"),
        (b" " * (64 * 1024 + 1), "too_large", "65537"),
        (_req(model=_DROP), "missing_field", "model"),
        (_req(request_id=_DROP, ts=_DROP), "missing_field", "request_id, ts"),
        (_req(extra=1), "unknown_field", "extra"),
        (_req(model="gpt-9"), "unknown_model", "gpt-9"),
        (_req(model=7), "wrong_type", "model"),
        (_req(model=""), "bad_value", "model"),
        (_req(type="arrived"), "bad_value", "arrived"),
        (_req(type=None), "wrong_type", "type"),
        (_req(backend="gpu"), "bad_value", "gpu"),
        (_req(backend=1), "wrong_type", "backend"),
        (_req(prompt_tokens=True), "wrong_type", "prompt_tokens"),
        (_req(prompt_tokens=1.0), "wrong_type", "prompt_tokens"),
        (_req(prompt_tokens="12"), "wrong_type", "prompt_tokens"),
        (_req(output_tokens=-1), "bad_value", "output_tokens"),
        (_req(output_tokens=2**31), "bad_value", "output_tokens"),
        (_req(ts="2025-06-15T00:00:00Z"), "wrong_type", "ts"),
        (_req(ts=False), "wrong_type", "ts"),
        (_req(ts=NOW + SKEW + 1), "timestamp_skew", "from now"),
        (_req(ts=NOW - SKEW - 1), "timestamp_skew", "from now"),
        (_req(request_id="x" * 257), "bad_value", "request_id"),
        (_req().replace(b'"output_tokens": 0', b'"output_tokens": NaN'), "bad_value", "NaN"),
        (_req().replace(b'"prompt_tokens": 812', b'"prompt_tokens": 1e999'), "wrong_type", "prompt_tokens"),
        (_req().replace(b'"ts": 1749999998.5', b'"ts": Infinity'), "bad_value", "Infinity"),
        (_req().replace(b'"ts": 1749999998.5', b'"ts": 1e999'), "bad_value", "ts"),
        (_req().replace(b'"prompt_tokens": 812', b'"prompt_tokens": ' + b"9" * 5000), "not_json", ""),
    ],
)
def test_bad_requests_are_rejected_with_a_reason_that_names_the_problem(
    raw: bytes, reason: str, names: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_request(raw)
    assert caught.value.reason == reason
    assert caught.value.reason in events.REASONS
    assert names in caught.value.detail


def test_a_good_metric_decodes_to_typed_fields() -> None:
    assert _decode_metric(_met()) == MetricEvent(
        model="qwen-32b",
        ts=NOW,
        replica="qwen-32b-7f9c-abcde",
        waiting=3,
        running=41,
        kv_cache_usage=0.62,
        ready=True,
    )


@pytest.mark.parametrize("usage", [0, 1, 0.0, 1.0])
def test_kv_cache_usage_bounds_are_inclusive(usage: float) -> None:
    assert _decode_metric(_met(kv_cache_usage=usage)).kv_cache_usage == float(usage)


@pytest.mark.parametrize(
    ("raw", "reason", "names"),
    [
        (_met(ready=1), "wrong_type", "ready"),
        (_met(ready="true"), "wrong_type", "ready"),
        (_met(kv_cache_usage=1.01), "bad_value", "kv_cache_usage"),
        (_met(kv_cache_usage=-0.1), "bad_value", "kv_cache_usage"),
        (_met(kv_cache_usage=True), "wrong_type", "kv_cache_usage"),
        (_met(waiting=-3), "bad_value", "waiting"),
        (_met(running=2.5), "wrong_type", "running"),
        (_met(replica=None), "wrong_type", "replica"),
        (_met(backend="kubernetes"), "unknown_field", "backend"),
        (_met(ready=_DROP), "missing_field", "ready"),
        (_met(model="nope"), "unknown_model", "nope"),
        (_met(ts=NOW + 10 * SKEW), "timestamp_skew", "limit 300 s"),
    ],
)
def test_bad_metrics_are_rejected_with_a_reason_that_names_the_problem(
    raw: bytes, reason: str, names: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_metric(raw)
    assert caught.value.reason == reason
    assert names in caught.value.detail


def test_a_request_is_not_a_metric_and_vice_versa() -> None:
    with pytest.raises(InvalidEvent, match="missing_field"):
        _decode_metric(_req())
    with pytest.raises(InvalidEvent, match="missing_field"):
        _decode_request(_met())


def _reasons(raw: bytes) -> set[str]:
    """Decode as both kinds; return the rejection reasons (any other exception fails the test)."""
    found: set[str] = set()
    for decode in (_decode_request, _decode_metric):
        try:
            decode(raw)
        except InvalidEvent as exc:
            found.add(exc.reason)
    return found


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    assert _reasons(raw) <= set(events.REASONS)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from([*GOOD_REQUEST, *GOOD_METRIC, "backend", "x"]), _json_values))
@settings(max_examples=300, deadline=None)
def test_random_json_objects_never_raise_anything_but_invalid_event(data: dict[str, Any]) -> None:
    assert _reasons(json.dumps(data).encode()) <= set(events.REASONS)


_requests = st.builds(
    RequestEvent,
    model=st.sampled_from(sorted(MODELS)),
    ts=st.floats(min_value=NOW - SKEW, max_value=NOW + SKEW),
    type=st.sampled_from(sorted(events.REQUEST_TYPES)),
    request_id=st.text(min_size=1, max_size=40),
    prompt_tokens=st.integers(0, events.MAX_COUNT),
    output_tokens=st.integers(0, events.MAX_COUNT),
    backend=st.sampled_from([None, "kubernetes", "serverless"]),
)
_metrics = st.builds(
    MetricEvent,
    model=st.sampled_from(sorted(MODELS)),
    ts=st.floats(min_value=NOW - SKEW, max_value=NOW + SKEW),
    replica=st.text(min_size=1, max_size=40),
    waiting=st.integers(0, 10_000),
    running=st.integers(0, 10_000),
    kv_cache_usage=st.floats(0.0, 1.0),
    ready=st.booleans(),
)


@given(_requests)
def test_every_valid_request_round_trips(event: RequestEvent) -> None:
    assert _decode_request(events.encode_request(event)) == event


@given(_metrics)
def test_every_valid_metric_round_trips(event: MetricEvent) -> None:
    assert _decode_metric(events.encode_metric(event)) == event


@pytest.mark.parametrize(
    ("schema_file", "event_type", "sample"),
    [
        ("request-event.schema.json", RequestEvent, GOOD_REQUEST),
        ("metric-event.schema.json", MetricEvent, GOOD_METRIC),
    ],
)
def test_shipped_json_schema_describes_the_same_fields_as_the_decoder(
    schema_file: str, event_type: type, sample: dict[str, Any]
) -> None:
    schema = json.loads(resources.files("scaler.schemas").joinpath(schema_file).read_text())
    fields = {f.name for f in dataclasses.fields(event_type)}
    assert set(schema["properties"]) == fields
    assert set(schema["required"]) == set(sample)
    assert schema["additionalProperties"] is False


def test_schema_enums_match_the_decoder() -> None:
    schema = json.loads(resources.files("scaler.schemas").joinpath("request-event.schema.json").read_text())
    assert set(schema["properties"]["type"]["enum"]) == events.REQUEST_TYPES
    assert set(schema["properties"]["backend"]["enum"]) - {None} == events.BACKENDS
