"""Decoder properties over open-ended input: nothing but InvalidEvent escapes, and what passes is valid.

"Valid" is judged independently of the decoder: the payload is parsed again with the standard
library and checked against the shipped JSON Schema with ``jsonschema``, plus the two rules a schema
cannot say (a known model, a timestamp within the skew of ``now``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
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
    "backend": "serverless",
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


def _validator(file_name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("scaler.schemas").joinpath(file_name).read_text(encoding="utf-8")
    return jsonschema.Draft202012Validator(json.loads(text))


KINDS: dict[str, tuple[Callable[..., RequestEvent | MetricEvent], jsonschema.Draft202012Validator]] = {
    "request": (events.decode_request, _validator("request-event.schema.json")),
    "metric": (events.decode_metric, _validator("metric-event.schema.json")),
}


def _strict_json(raw: bytes) -> Any:
    def refuse(literal: str) -> None:
        raise AssertionError(f"the decoder accepted {literal}")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def _check(raw: bytes) -> set[str]:
    """Decode ``raw`` as both kinds; return the rejection reasons; fail if a passing event is not valid."""
    reasons: set[str] = set()
    for decode, validator in KINDS.values():
        try:
            event = decode(raw, known_models=MODELS, now=NOW, max_skew=SKEW)
        except InvalidEvent as exc:  # anything else escapes and fails the test
            reasons.add(exc.reason if exc.detail else f"{exc.reason} without a detail")
            continue
        data = _strict_json(raw)
        validator.validate(data)
        assert data["model"] in MODELS
        assert abs(data["ts"] - NOW) <= SKEW
        assert {name: getattr(event, name) for name in data} == data
        assert isinstance(event.ts, float)
    assert reasons <= set(events.REASONS)
    return reasons


# -- random bytes ------------------------------------------------------------------------------------


@given(st.binary(max_size=512))
@settings(max_examples=400, deadline=None)
@example(b"\xff\xfe{}")
@example(b"\xed\xa0\x80")  # a UTF-8-encoded lone surrogate
def test_random_bytes_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    assert _check(raw)


# -- random JSON -------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
_numbers = (
    st.integers()
    | st.integers(min_value=10**17, max_value=10**400)
    | st.integers(min_value=-(10**400), max_value=-(10**17))
    | st.floats()  # NaN and +-Infinity are written as literals by json.dumps
    | st.sampled_from([2**31 - 1, 2**31, -1, 0, 1, 0.0, 1.0, -0.0, 1e308, 5e-324])
)
_scalars = st.none() | st.booleans() | _numbers | _text
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)


def _dump(value: Any, *, ascii_only: bool) -> bytes:
    """Return ``value`` as JSON bytes; lone surrogates become escapes or, raw, invalid UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@given(_json_values, st.booleans())
@settings(max_examples=300, deadline=None)
def test_random_json_never_raises_anything_but_invalid_event(value: Any, ascii_only: bool) -> None:
    assert _check(_dump(value, ascii_only=ascii_only))


_FIELD_NAMES = sorted({*GOOD_REQUEST, *GOOD_METRIC, "x", ""})


@given(st.dictionaries(st.sampled_from(_FIELD_NAMES), _json_values), st.booleans())
@settings(max_examples=300, deadline=None)
def test_random_json_objects_never_raise_anything_but_invalid_event(
    data: dict[str, Any], ascii_only: bool
) -> None:
    assert _check(_dump(data, ascii_only=ascii_only))


@given(st.integers(1, 33_000), st.sampled_from(["[", '{"a":', '{"model":', '{"ts":[']))
@settings(max_examples=40, deadline=None)
def test_deep_nesting_never_raises_anything_but_invalid_event(depth: int, opener: str) -> None:
    closer = "".join("]" if c == "[" else "}" for c in reversed(opener * depth) if c in "[{")
    assert _check((opener * depth + "0" + closer).encode())


# -- a valid event with one field mutated ---------------------------------------------------------------

_good = st.sampled_from(
    [GOOD_REQUEST, GOOD_METRIC, {k: v for k, v in GOOD_REQUEST.items() if k != "backend"}]
)
_MUTATIONS = [("request", f) for f in [*GOOD_REQUEST, "x"]] + [
    ("metric", f) for f in [*GOOD_METRIC, "backend"]
]
_near_valid = st.sampled_from(
    ["kubernetes", "finish", "llama-8b", "", "x" * 257, NOW, NOW + SKEW + 1e-6, 1.0000001]
)


@pytest.mark.parametrize(("kind", "field"), _MUTATIONS)
@given(value=_json_values | _near_valid)
@settings(max_examples=60, deadline=None)
def test_a_valid_event_with_one_field_mutated_passes_only_if_still_valid(
    kind: str, field: str, value: Any
) -> None:
    good = GOOD_REQUEST if kind == "request" else GOOD_METRIC
    _check(_dump({**good, field: value}, ascii_only=True))


@given(_good, st.sampled_from(_FIELD_NAMES))
@settings(max_examples=50, deadline=None)
def test_a_valid_event_with_one_field_dropped_passes_only_if_still_valid(
    good: dict[str, Any], field: str
) -> None:
    _check(_dump({k: v for k, v in good.items() if k != field}, ascii_only=True))


@given(_good, st.data())
@settings(max_examples=400, deadline=None)
def test_a_valid_event_with_bytes_spliced_in_passes_only_if_still_valid(
    good: dict[str, Any], data: st.DataObject
) -> None:
    raw = json.dumps(good).encode()
    start = data.draw(st.integers(0, len(raw)))
    end = data.draw(st.integers(start, min(len(raw), start + 8)))
    patch = data.draw(
        st.binary(max_size=8) | st.sampled_from([b"NaN", b"1e999", b"9" * 400, b'"', b"\\", b"-"])
    )
    _check(raw[:start] + patch + raw[end:])


# -- what passes, with the sample events themselves as a check that the oracle accepts them --------


def test_the_sample_events_pass_and_satisfy_the_schema() -> None:
    for good in (GOOD_REQUEST, GOOD_METRIC):
        assert _check(json.dumps(good).encode()) == {"missing_field"}  # only the other kind refuses


def test_the_oracle_refuses_what_the_schema_refuses() -> None:
    for change in ({"prompt_tokens": True}, {"ts": "1"}, {"backend": "gpu"}):
        try:
            KINDS["request"][1].validate({**GOOD_REQUEST, **change})
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"the shipped schema accepts {change}")


# -- the ingest path's batch decoder agrees with the one-event decoder ------------------------------

_ANY_MODEL = type("AnyModel", (), {"__contains__": lambda self, item: True})()
_payloads = (
    st.binary(max_size=64)
    | st.builds(lambda v, a: _dump(v, ascii_only=a), _json_values, st.booleans())
    | st.builds(
        lambda d: json.dumps({**GOOD_REQUEST, **d}).encode(),
        st.dictionaries(st.sampled_from(_FIELD_NAMES), _scalars, max_size=2),
    )
    | st.just(json.dumps(GOOD_REQUEST).encode())
    | st.just(b"x" * (events.MAX_EVENT_BYTES + 1))
)


@given(st.lists(_payloads, max_size=12))
@settings(max_examples=300, deadline=None)
def test_the_batch_decoder_passes_exactly_what_the_one_event_decoder_passes(values: list[bytes]) -> None:
    found = events.decode_request_batch(values)
    assert len(found) == len(values)
    for raw, event in zip(values, found, strict=True):
        try:
            alone = events.decode_request(raw, known_models=_ANY_MODEL, now=NOW, max_skew=float("inf"))
        except InvalidEvent:
            assert event is None, raw
        else:
            assert event == alone
