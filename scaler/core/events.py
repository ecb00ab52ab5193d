"""Request and replica-metric events: decoded from raw Kafka bytes and validated once, at the edge.

Everything past this module receives frozen, typed events; raw dicts never travel further. The
event types are :mod:`msgspec` structs, so one C pass parses and validates a payload (strict types:
a bool is not an int, a string is not a number; bounds as constraints; unknown fields rejected).
Only a rejected payload is looked at again, to explain it: every failure is an :class:`InvalidEvent`
whose ``reason`` is one of a small, fixed set of codes (safe as a metric label) and whose ``detail``
names the field and the value. Nothing else escapes, whatever the bytes.

The shipped JSON Schemas (``scaler/schemas/``) are generated from the same structs
(``python -m scaler.schemas.generate``). Time is an argument: ``now`` and ``max_skew`` bound how far
an event's timestamp may stray.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Container, Iterable
from typing import Annotated, Final, Literal, TypeVar, get_args

import msgspec
import msgspec.inspect

MAX_EVENT_BYTES: Final = 64 * 1024
MAX_ID_CHARS: Final = 256
MAX_COUNT: Final = 2**31 - 1
MAX_REQUEST_RATE: Final = 1e6  # per second, of one replica
MAX_TOKEN_RATE: Final = 1e9
MAX_RATE_SECONDS: Final = 3600.0
RATE_FIELDS: Final = ("request_rate", "prompt_token_rate", "output_token_rate", "rate_seconds")

RequestType = Literal["arrival", "first_token", "finish", "reject"]
Backend = Literal["kubernetes", "serverless"]
REQUEST_TYPES: Final[frozenset[str]] = frozenset(get_args(RequestType))
BACKENDS: Final[frozenset[str]] = frozenset(get_args(Backend))

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

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Model = Annotated[_Id, msgspec.Meta(description="Model name; must have a policy. Also the record key.")]
_Timestamp = Annotated[
    float, msgspec.Meta(description="Unix time in seconds; within the daemon's max skew of its clock.")
]

_RequestRate = Annotated[
    float,
    msgspec.Meta(ge=0.0, le=MAX_REQUEST_RATE, description="Requests served per second, over rate_seconds."),
]
_TokenRate = Annotated[
    float,
    msgspec.Meta(ge=0.0, le=MAX_TOKEN_RATE, description="Prompt or generated tokens per second, likewise."),
]
_RateSeconds = Annotated[
    float, msgspec.Meta(gt=0.0, le=MAX_RATE_SECONDS, description="Seconds before ts that the rates cover.")
]


class InvalidEvent(ValueError):  # noqa: N818  # the name is part of the documented event contract
    """An event that cannot be used; ``reason`` is a code from :data:`REASONS`, ``detail`` explains it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RequestEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One step in the life of an inference request (topic llm.requests, key = model, at most 64 KiB)."""

    model: _Model
    ts: _Timestamp
    type: RequestType
    request_id: _Id
    prompt_tokens: _Count
    output_tokens: _Count
    backend: Annotated[
        Backend | None, msgspec.Meta(description="Where the request was served, if known.")
    ] = None


_PodName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Kubernetes pod name (DNS-1123 subdomain) of the replica, for drain-aware scale-in.",
    ),
]


class MetricEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A vLLM replica's state at one instant (topic llm.metrics, key = model, at most 64 KiB).

    The optional rates (all four or none: :data:`RATE_FIELDS`) are the replica's served requests and
    tokens per second over the ``rate_seconds`` before ``ts``, read from its counters by the vLLM
    bridge; the controller counts them as demand while the model has no request events. ``pod``
    names the replica's pod, for drain-aware scale-in.
    """

    model: _Model
    ts: _Timestamp
    replica: Annotated[_Id, msgspec.Meta(description="Replica (pod) name.")]
    waiting: Annotated[_Count, msgspec.Meta(description="Requests queued.")]
    running: Annotated[_Count, msgspec.Meta(description="Requests being served.")]
    kv_cache_usage: Annotated[float, msgspec.Meta(ge=0.0, le=1.0, description="KV cache in use, 0..1.")]
    ready: Annotated[bool, msgspec.Meta(description="False while the replica is starting.")]
    request_rate: _RequestRate | None = None
    prompt_token_rate: _TokenRate | None = None
    output_token_rate: _TokenRate | None = None
    rate_seconds: _RateSeconds | None = None
    pod: _PodName | None = None

    def __post_init__(self) -> None:
        """Raise ValueError unless the rate fields are all set or all unset (msgspec reports it)."""
        given = [getattr(self, name) is not None for name in RATE_FIELDS]
        if any(given) and not all(given):
            missing = [name for name, value in zip(RATE_FIELDS, given, strict=True) if not value]
            raise ValueError(f"rates come together: {', '.join(RATE_FIELDS)}; missing {', '.join(missing)}")


_Event = TypeVar("_Event", RequestEvent, MetricEvent)

_REQUEST_DECODER: Final = msgspec.json.Decoder(RequestEvent)
_METRIC_DECODER: Final = msgspec.json.Decoder(MetricEvent)
_FIELDS_DECODER: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])  # keys, values left unparsed
_ENCODER: Final = msgspec.json.Encoder()
# What msgspec raises on bad input: its own errors, UnicodeDecodeError for invalid UTF-8 inside a
# string, RecursionError for deep nesting.
_DECODE_ERRORS: Final = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


def decode_request(raw: bytes, *, known_models: Container[str], now: float, max_skew: float) -> RequestEvent:
    """Return the request event encoded in ``raw``; raise :class:`InvalidEvent` if it is not a valid one."""
    if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:  # the hot path: one C call, two checks
        try:
            event = _REQUEST_DECODER.decode(raw)
        except _DECODE_ERRORS as exc:
            raise _explain(raw, exc, RequestEvent) from None
        if event.model in known_models and abs(event.ts - now) <= max_skew:
            return event
    else:
        event = _decode(raw, _REQUEST_DECODER, RequestEvent)
    _check_context(event, known_models=known_models, now=now, max_skew=max_skew)
    return event


def decode_metric(raw: bytes, *, known_models: Container[str], now: float, max_skew: float) -> MetricEvent:
    """Return the replica metric event encoded in ``raw``; raise :class:`InvalidEvent` if it is not valid."""
    if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:  # the hot path, as in decode_request
        try:
            event = _METRIC_DECODER.decode(raw)
        except _DECODE_ERRORS as exc:
            raise _explain(raw, exc, MetricEvent) from None
        if event.model in known_models and abs(event.ts - now) <= max_skew:
            return event
    else:
        event = _decode(raw, _METRIC_DECODER, MetricEvent)
    _check_context(event, known_models=known_models, now=now, max_skew=max_skew)
    return event


def decode_request_batch(values: Iterable[bytes]) -> list[RequestEvent | None]:
    """Return, for each value in order, its request event if it is a well-formed one, else None.

    The ingest path's loop: one decoder call per value, no Python call around it. The model and the
    timestamp are NOT checked here: the caller checks both. None says only that the value is bad:
    :func:`decode_request` says why. Never raises.
    """
    decode = _REQUEST_DECODER.decode
    found: list[RequestEvent | None] = []
    append = found.append
    for raw in values:
        if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:
            try:
                append(decode(raw))
                continue
            except _DECODE_ERRORS:
                pass
        append(None)
    return found


def encode_request(event: RequestEvent) -> bytes:
    """Return the wire form of ``event`` (JSON, UTF-8); ``decode_request`` reads it back unchanged."""
    return _ENCODER.encode(event)


def encode_metric(event: MetricEvent) -> bytes:
    """Return the wire form of ``event`` (JSON, UTF-8); ``decode_metric`` reads it back unchanged."""
    return _ENCODER.encode(event)


def _decode(raw: bytes, decoder: msgspec.json.Decoder[_Event], kind: type[_Event]) -> _Event:
    if type(raw) is not bytes and type(raw) is not bytearray:
        raise InvalidEvent("wrong_type", f"payload is {type(raw).__name__}, not bytes")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"{len(raw)} bytes, limit {MAX_EVENT_BYTES}")
    try:
        return decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _explain(raw, exc, kind) from None


def _check_context(
    event: RequestEvent | MetricEvent, *, known_models: Container[str], now: float, max_skew: float
) -> None:
    """Raise :class:`InvalidEvent` if ``event`` names an unknown model or strays from ``now``."""
    if event.model not in known_models:
        raise InvalidEvent("unknown_model", f"model {event.model[:80]!r} has no policy")
    ts = event.ts  # finite: the decoder refuses NaN, Infinity and numbers beyond a float's range
    if abs(ts - now) > max_skew:
        detail = f"ts {ts:.15g} is {ts - now:+.1f} s from now (limit {max_skew:g} s)"
        raise InvalidEvent("timestamp_skew", detail)


# -- explaining a rejection: only rejected payloads come here, so clarity beats speed ----------------

_NON_FINITE: Final = (b"NaN", b"Infinity")
_AT_BYTE: Final = re.compile(r"\(byte (\d+)\)")
_AT_FIELD: Final = re.compile(r"^(.*) - at `\$\.([^`]*)`$", re.DOTALL)
_KEY_BEFORE: Final = re.compile(rb'"([^"\\]{1,256})"\s*:\s*$')
_WRONG_TYPE: Final = re.compile(r"^Expected `[^`]*`, got `[^`]*`$")


def _explain(raw: bytes, error: Exception, kind: type[RequestEvent | MetricEvent]) -> InvalidEvent:
    """Return the :class:`InvalidEvent` that says why ``raw`` failed to decode as ``kind`` with ``error``."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidEvent("not_utf8", f"invalid byte at offset {exc.start}")
    try:
        fields = _FIELDS_DECODER.decode(raw)
    except RecursionError:
        return InvalidEvent("not_json", "nested too deeply")
    except msgspec.ValidationError:  # the top level is valid JSON or not, but not an object
        return _not_object(raw)
    except msgspec.DecodeError as exc:
        return _malformed(raw, exc)
    shape = _SHAPES[kind]
    missing = sorted(name for name in shape.required if name not in fields)
    if missing:
        return InvalidEvent("missing_field", f"missing {', '.join(missing)}")
    unknown = sorted(name for name in fields if name not in shape.types)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return InvalidEvent("unknown_field", f"unknown {', '.join(name[:80] for name in unknown[:5])}{more}")
    if isinstance(error, msgspec.ValidationError):
        return _field_error(str(error), fields, shape)
    if isinstance(error, msgspec.DecodeError):
        return _malformed(raw, error)
    return InvalidEvent("not_json", f"{type(error).__name__}: {error}"[:120])


def _malformed(raw: bytes, error: msgspec.DecodeError) -> InvalidEvent:
    message = str(error)
    at = _AT_BYTE.search(message)
    if at is not None:
        offset = int(at.group(1))
        literal = next((c for c in _NON_FINITE if raw.startswith(c, offset)), None)
        if literal is not None:
            if raw[offset - 1 : offset] == b"-":  # msgspec points past the sign of -Infinity
                offset, literal = offset - 1, b"-" + literal
            key = _KEY_BEFORE.search(raw[max(0, offset - 300) : offset])
            where = f"{key.group(1).decode(errors='replace')}: " if key else ""
            return InvalidEvent("bad_value", f"{where}{literal.decode()} is not a finite number")
    return InvalidEvent("not_json", message[:120])


def _not_object(raw: bytes) -> InvalidEvent:
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        return InvalidEvent("not_json", "nested too deeply")
    except msgspec.ValidationError as exc:  # a number too long to parse
        return InvalidEvent("not_json", str(exc)[:120])
    except msgspec.DecodeError as exc:
        return _malformed(raw, exc)
    return InvalidEvent("not_object", f"top level is a JSON {type(value).__name__}, not an object")


def _field_error(message: str, fields: dict[str, msgspec.Raw], shape: _Shape) -> InvalidEvent:
    """Map msgspec's ``message`` (e.g. "Expected `int` >= 0 - at `$.waiting`") onto a reason."""
    at = _AT_FIELD.match(message)
    if at is None:
        return InvalidEvent("bad_value", message[:200])
    problem, field = at.group(1), at.group(2)
    literal = bytes(fields[field]) if field in fields else b""
    shown = literal[:40].decode("utf-8", "replace") + ("..." if len(literal) > 40 else "")
    if _WRONG_TYPE.match(problem):
        return InvalidEvent("wrong_type", f"{field}: {_lower_first(problem)}")
    if problem == "Integer value out of range":  # more digits than the parser reads
        return InvalidEvent("not_json", f"{field}: an integer of {len(literal)} digits is out of range")
    if problem == "Number out of range":
        field_type = shape.types.get(field)
        if not isinstance(field_type, msgspec.inspect.FloatType) and any(c in literal for c in b".eE"):
            return InvalidEvent("wrong_type", f"{field}: expected `int`, got `float` {shown}")
        return InvalidEvent("bad_value", f"{field} is not a finite number: {shown} is beyond a float's range")
    if problem.startswith("Invalid enum value"):
        allowed = sorted(shape.choices.get(field, ()))
        return InvalidEvent("bad_value", f"{field}: {_lower_first(problem)[:80]}, allowed {allowed}")
    return InvalidEvent("bad_value", f"{field}: {_lower_first(problem)}, got {shown}")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    """What a rejection's explanation needs to know of an event type, read from the struct itself."""

    required: tuple[str, ...]
    types: dict[str, msgspec.inspect.Type]  # field -> its type, constraints unwrapped
    choices: dict[str, frozenset[str]]  # field -> allowed values of a Literal (or optional Literal) field

    @classmethod
    def of(cls, kind: type[msgspec.Struct]) -> _Shape:
        """Return the shape of ``kind``, from :func:`msgspec.inspect.type_info`."""
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        types = {f.name: _unwrap(f.type) for f in info.fields}
        choices: dict[str, frozenset[str]] = {}
        for name, field_type in types.items():
            options = field_type.types if isinstance(field_type, msgspec.inspect.UnionType) else (field_type,)
            for option in options:
                if isinstance(option, msgspec.inspect.LiteralType):
                    choices[name] = frozenset(str(v) for v in option.values)
        return cls(required=tuple(f.name for f in info.fields if f.required), types=types, choices=choices)


def _unwrap(field_type: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while isinstance(field_type, msgspec.inspect.Metadata):
        field_type = field_type.type
    return field_type


_SHAPES: Final[dict[type, _Shape]] = {kind: _Shape.of(kind) for kind in (RequestEvent, MetricEvent)}
