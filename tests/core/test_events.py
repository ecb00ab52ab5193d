"""Event decoding: what is accepted, what is rejected and with which reason, and that nothing else escapes."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.core import events
from scaler.core.events import InvalidEvent, MetricEvent, RequestEvent
from scaler.schemas import generate

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
    with pytest.raises(AttributeError):
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


RATES: dict[str, Any] = {
    "request_rate": 4.5,
    "prompt_token_rate": 3600.0,
    "output_token_rate": 900.0,
    "rate_seconds": 5.0,
}


def test_a_metric_may_carry_the_replicas_rates_and_they_round_trip() -> None:
    event = _decode_metric(_met(**RATES))
    assert (event.request_rate, event.prompt_token_rate, event.output_token_rate, event.rate_seconds) == (
        4.5,
        3600.0,
        900.0,
        5.0,
    )
    assert json.loads(events.encode_metric(event)) == {**GOOD_METRIC, **RATES}
    assert "request_rate" not in json.loads(
        events.encode_metric(_decode_metric(_met()))
    )  # omitted when unset


@pytest.mark.parametrize(
    ("changes", "reason", "names"),
    [
        ({"request_rate": 4.5}, "bad_value", "missing prompt_token_rate, output_token_rate, rate_seconds"),
        ({**RATES, "rate_seconds": _DROP}, "bad_value", "missing rate_seconds"),
        ({**RATES, "request_rate": -0.1}, "bad_value", "request_rate"),
        ({**RATES, "request_rate": 2e6}, "bad_value", "request_rate"),
        ({**RATES, "output_token_rate": 1e10}, "bad_value", "output_token_rate"),
        ({**RATES, "rate_seconds": 0}, "bad_value", "rate_seconds"),
        ({**RATES, "rate_seconds": 7200}, "bad_value", "rate_seconds"),
        ({**RATES, "request_rate": "4.5"}, "wrong_type", "request_rate"),
    ],
)
def test_bad_rates_are_rejected_with_their_field(changes: dict[str, Any], reason: str, names: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_metric(_met(**changes))
    assert (caught.value.reason, names in caught.value.detail) == (reason, True), caught.value.detail


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


def test_a_huge_integer_timestamp_is_a_dead_letter_not_a_crash() -> None:
    """Issue 17: a few hundred digits in ts or kv_cache_usage raised OverflowError out of the decoder."""
    digits = b"9" * 400
    with pytest.raises(InvalidEvent) as caught:
        _decode_request(_req().replace(b'"ts": 1749999998.5', b'"ts": ' + digits))
    assert (caught.value.reason, caught.value.detail[:2]) == ("bad_value", "ts")
    with pytest.raises(InvalidEvent) as caught:
        _decode_metric(_met().replace(b'"kv_cache_usage": 0.62', b'"kv_cache_usage": ' + digits))
    assert caught.value.reason == "bad_value"
    assert "kv_cache_usage" in caught.value.detail
    with pytest.raises(InvalidEvent) as caught:
        _decode_metric(_met().replace(b'"waiting": 3', b'"waiting": -' + digits))
    assert (caught.value.reason, caught.value.detail[:7]) == ("bad_value", "waiting")


_BAD_BYTE = _req().replace(b'"r-1"', b'"r\xff"')


@pytest.mark.parametrize(
    ("raw", "reason", "names"),
    [
        ("{}", "wrong_type", "str"),
        (memoryview(b"{}"), "wrong_type", "memoryview"),
        (None, "wrong_type", "NoneType"),
        (_req().replace(b'"r-1"', b'"\\ud800"'), "not_json", "escape"),
        (_req().replace(b'"r-1"', b'"\\udc80"'), "not_json", "surrogate"),
        (_BAD_BYTE, "not_utf8", f"offset {_BAD_BYTE.index(0xFF)}"),
        (_req() + b" trailing", "not_json", "trailing"),
        (_req(model=[[[0]]]), "wrong_type", "model"),
        (_req(model={"a": 1}), "wrong_type", "model"),
        (b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not_json", "deeply"),
        (_req().replace(b'"ts": 1749999998.5', b'"ts": -Infinity'), "bad_value", "ts: -Infinity"),
        (_req().replace(b'"output_tokens": 0', b'"output_tokens": NaN'), "bad_value", "output_tokens: NaN"),
    ],
)
def test_hostile_payloads_are_rejected_with_a_reason(raw: object, reason: str, names: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_request(raw)  # type: ignore[arg-type]
    assert caught.value.reason == reason
    assert names in caught.value.detail


def test_a_rejection_detail_stays_short_whatever_the_payload() -> None:
    raw = json.dumps({**GOOD_REQUEST, **{f"extra-{i:05d}-" + "x" * 70: 0 for i in range(600)}}).encode()
    with pytest.raises(InvalidEvent) as caught:
        _decode_request(raw)
    assert caught.value.reason == "unknown_field"
    assert "extra-00000-" in caught.value.detail
    assert "and 595 more" in caught.value.detail
    assert len(caught.value.detail) < 600


def test_a_duplicate_field_counts_once_and_the_last_value_wins() -> None:
    raw = _req().replace(b'"ts"', b'"prompt_tokens": 5, "ts"', 1)
    assert _decode_request(raw).prompt_tokens == 812


def test_a_bytearray_payload_is_accepted() -> None:
    assert _decode_request(bytearray(_req())).request_id == "r-1"


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
    request_rate=st.floats(0.0, events.MAX_REQUEST_RATE),
    prompt_token_rate=st.floats(0.0, events.MAX_TOKEN_RATE),
    output_token_rate=st.floats(0.0, events.MAX_TOKEN_RATE),
    rate_seconds=st.floats(0.001, events.MAX_RATE_SECONDS),
) | st.builds(
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


def test_the_wire_form_omits_an_unknown_backend_and_keeps_field_order() -> None:
    event = _decode_request(_req())
    assert json.loads(events.encode_request(event)) == GOOD_REQUEST
    assert list(json.loads(events.encode_request(event))) == list(GOOD_REQUEST)


@pytest.mark.parametrize("file_name", sorted(generate.FILES))
def test_the_shipped_schemas_are_the_generated_ones(file_name: str) -> None:
    shipped = resources.files("scaler.schemas").joinpath(file_name).read_text(encoding="utf-8")
    assert shipped == generate.render(file_name), "stale: run python -m scaler.schemas.generate"


def test_the_schema_check_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "DIRECTORY", tmp_path)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    assert json.loads((tmp_path / "request-event.schema.json").read_text())["additionalProperties"] is False


@pytest.mark.parametrize(
    ("file_name", "good", "bad"),
    [
        (
            "request-event.schema.json",
            GOOD_REQUEST,
            [{"backend": "gpu"}, {"type": "arrived"}, {"prompt_tokens": -1}, {"model": ""}, {"x": 1}],
        ),
        (
            "metric-event.schema.json",
            GOOD_METRIC,
            [
                {"kv_cache_usage": 1.5},
                {"ready": "yes"},
                {"waiting": 2**31},
                {"replica": "r" * 257},
                {"request_rate": 1.0},
                {**RATES, "rate_seconds": 0},
                {**RATES, "prompt_token_rate": -1},
            ],
        ),
    ],
)
def test_the_shipped_schemas_accept_and_refuse_what_the_decoder_does(
    file_name: str, good: dict[str, Any], bad: list[dict[str, Any]]
) -> None:
    schema = json.loads(resources.files("scaler.schemas").joinpath(file_name).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    decode = _decode_request if file_name.startswith("request") else _decode_metric
    validator.validate(good)
    decode(json.dumps(good).encode())
    for change in bad:
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**good, **change})
        with pytest.raises(InvalidEvent):
            decode(json.dumps({**good, **change}).encode())
    missing = {k: v for k, v in good.items() if k != "ts"}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(missing)
