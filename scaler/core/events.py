"""Request and replica-metric events: decoded from raw Kafka bytes and validated once, at the edge.

Everything past this module receives frozen, typed events; raw dicts never travel further. Decoding
is on the ingest hot path, so it uses :func:`json.loads` plus explicit type checks rather than a
validation framework. Every failure is an :class:`InvalidEvent` whose ``reason`` is one of a small,
fixed set of codes (safe as a metric label) and whose ``detail`` names the field and the value.

Time is an argument: ``now`` and ``max_skew`` bound how far an event's timestamp may stray.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Container
from typing import Any, Final, Literal

MAX_EVENT_BYTES: Final = 64 * 1024
MAX_ID_CHARS: Final = 256
MAX_COUNT: Final = 2**31 - 1

RequestType = Literal["arrival", "first_token", "finish", "reject"]
Backend = Literal["kubernetes", "serverless"]
REQUEST_TYPES: Final[frozenset[str]] = frozenset({"arrival", "first_token", "finish", "reject"})
BACKENDS: Final[frozenset[str]] = frozenset({"kubernetes", "serverless"})

# Reason codes (bounded set: they label the rejected-events counter).
REASONS: Final = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "unknown_field",
    "wrong_type",
    "bad_value",
    "unknown_model",
    "timestamp_skew",
)


class InvalidEvent(ValueError):  # noqa: N818  # the name is part of the documented event contract
    """An event that cannot be used; ``reason`` is a code from :data:`REASONS`, ``detail`` explains it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEvent:
    """One step in the life of an inference request (topic ``llm.requests``)."""

    model: str
    ts: float
    type: RequestType
    request_id: str
    prompt_tokens: int
    output_tokens: int
    backend: Backend | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MetricEvent:
    """A vLLM replica's state at one instant (topic ``llm.metrics``)."""

    model: str
    ts: float
    replica: str
    waiting: int
    running: int
    kv_cache_usage: float
    ready: bool


_REQUEST_REQUIRED: Final = frozenset({"model", "ts", "type", "request_id", "prompt_tokens", "output_tokens"})
_REQUEST_FIELDS: Final = _REQUEST_REQUIRED | {"backend"}
_METRIC_FIELDS: Final = frozenset({"model", "ts", "replica", "waiting", "running", "kv_cache_usage", "ready"})


def _reject_constant(name: str) -> float:
    raise InvalidEvent("bad_value", f"{name} is not a finite number")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)  # built once: json.loads(...,
# parse_constant=...) would build a decoder per call


def _parse_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"{len(raw)} bytes, limit {MAX_EVENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", f"invalid byte at offset {exc.start}") from None
    except AttributeError:
        raise InvalidEvent("wrong_type", f"payload is {type(raw).__name__}, not bytes") from None
    try:
        data = _DECODER.decode(text)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent("not_json", "nested too deeply") from None
    except ValueError as exc:
        raise InvalidEvent("not_json", str(exc)[:120]) from None
    if type(data) is not dict:
        raise InvalidEvent("not_object", f"top level is a JSON {type(data).__name__}, not an object")
    return data


def _check_keys(data: dict[str, Any], *, required: frozenset[str], allowed: frozenset[str]) -> None:
    keys = data.keys()
    if not required <= keys:
        missing = sorted(required - keys)
        raise InvalidEvent("missing_field", f"missing {', '.join(missing)}")
    if not keys <= allowed:
        extra = sorted(str(k) for k in keys - allowed)
        raise InvalidEvent("unknown_field", f"unknown {', '.join(extra)}")


def _text(data: dict[str, Any], field: str) -> str:
    value = data[field]
    if type(value) is not str:
        raise InvalidEvent("wrong_type", f"{field} must be a string, got {_show(value)}")
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_value", f"{field} must have 1-{MAX_ID_CHARS} characters, got {len(value)}")
    return value


def _count(data: dict[str, Any], field: str) -> int:
    value = data[field]
    if type(value) is not int:
        raise InvalidEvent("wrong_type", f"{field} must be an integer, got {_show(value)}")
    if value < 0 or value > MAX_COUNT:
        raise InvalidEvent("bad_value", f"{field} must be in 0..{MAX_COUNT}, got {value}")
    return value


def _number(data: dict[str, Any], field: str) -> float:
    value = data[field]
    kind = type(value)
    if kind is not float and kind is not int:
        raise InvalidEvent("wrong_type", f"{field} must be a number, got {_show(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidEvent("bad_value", f"{field} is not a finite number")
    return number


def _model(data: dict[str, Any], known_models: Container[str]) -> str:
    model = _text(data, "model")
    if model not in known_models:
        raise InvalidEvent("unknown_model", f"model {model[:80]!r} has no policy")
    return model


def _timestamp(data: dict[str, Any], *, now: float, max_skew: float) -> float:
    ts = _number(data, "ts")
    if abs(ts - now) > max_skew:
        detail = f"ts {ts:.3f} is {ts - now:+.1f} s from now (limit {max_skew:g} s)"
        raise InvalidEvent("timestamp_skew", detail)
    return ts


def _show(value: object) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def decode_request(raw: bytes, *, known_models: Container[str], now: float, max_skew: float) -> RequestEvent:
    """Return the request event encoded in ``raw``; raise :class:`InvalidEvent` if it is not a valid one."""
    data = _parse_object(raw)
    keys = data.keys()
    if keys in (_REQUEST_REQUIRED, _REQUEST_FIELDS):
        # Fast path: one pass of cheap checks for a valid event; any doubt falls through to the
        # field-by-field checks below, which name what is wrong.
        model = data["model"]
        ts = data["ts"]
        kind = data["type"]
        rid = data["request_id"]
        prompt = data["prompt_tokens"]
        output = data["output_tokens"]
        backend = data.get("backend")
        if (
            type(model) is str
            and model in known_models
            and (type(ts) is float or type(ts) is int)
            and abs(ts - now) <= max_skew
            and type(kind) is str
            and kind in REQUEST_TYPES
            and type(rid) is str
            and 0 < len(rid) <= MAX_ID_CHARS
            and 0 < len(model) <= MAX_ID_CHARS
            and type(prompt) is int
            and 0 <= prompt <= MAX_COUNT
            and type(output) is int
            and 0 <= output <= MAX_COUNT
            and (backend is None or (type(backend) is str and backend in BACKENDS))
        ):
            return RequestEvent(model, float(ts), kind, rid, prompt, output, backend)  # type: ignore[arg-type]
    _check_keys(data, required=_REQUEST_REQUIRED, allowed=_REQUEST_FIELDS)
    kind = data["type"]
    if type(kind) is not str:
        raise InvalidEvent("wrong_type", f"type must be a string, got {_show(kind)}")
    if kind not in REQUEST_TYPES:
        raise InvalidEvent("bad_value", f"type must be one of {sorted(REQUEST_TYPES)}, got {kind[:40]!r}")
    backend = data.get("backend")
    if backend is not None:
        if type(backend) is not str:
            raise InvalidEvent("wrong_type", f"backend must be a string, got {_show(backend)}")
        if backend not in BACKENDS:
            allowed = sorted(BACKENDS)
            raise InvalidEvent("bad_value", f"backend must be one of {allowed}, got {backend[:40]!r}")
    model = _model(data, known_models)
    return RequestEvent(
        model=model,
        ts=_timestamp(data, now=now, max_skew=max_skew),
        type=kind,  # type: ignore[arg-type]  # checked against REQUEST_TYPES above
        request_id=_text(data, "request_id"),
        prompt_tokens=_count(data, "prompt_tokens"),
        output_tokens=_count(data, "output_tokens"),
        backend=backend,  # type: ignore[arg-type]  # checked against BACKENDS above
    )


def decode_metric(raw: bytes, *, known_models: Container[str], now: float, max_skew: float) -> MetricEvent:
    """Return the replica metric event encoded in ``raw``; raise :class:`InvalidEvent` if it is not valid."""
    data = _parse_object(raw)
    _check_keys(data, required=_METRIC_FIELDS, allowed=_METRIC_FIELDS)
    ready = data["ready"]
    if type(ready) is not bool:
        raise InvalidEvent("wrong_type", f"ready must be a boolean, got {_show(ready)}")
    usage = _number(data, "kv_cache_usage")
    if not 0.0 <= usage <= 1.0:
        raise InvalidEvent("bad_value", f"kv_cache_usage must be in 0..1, got {usage:g}")
    model = _model(data, known_models)
    return MetricEvent(
        model=model,
        ts=_timestamp(data, now=now, max_skew=max_skew),
        replica=_text(data, "replica"),
        waiting=_count(data, "waiting"),
        running=_count(data, "running"),
        kv_cache_usage=usage,
        ready=ready,
    )


def encode_request(event: RequestEvent) -> bytes:
    """Return the wire form of ``event`` (JSON, UTF-8); ``decode_request`` reads it back unchanged."""
    data = dataclasses.asdict(event)
    if event.backend is None:
        del data["backend"]
    return json.dumps(data, separators=(",", ":")).encode()


def encode_metric(event: MetricEvent) -> bytes:
    """Return the wire form of ``event`` (JSON, UTF-8); ``decode_metric`` reads it back unchanged."""
    return json.dumps(dataclasses.asdict(event), separators=(",", ":")).encode()
