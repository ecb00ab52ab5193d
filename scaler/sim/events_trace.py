"""Replaying the daemon's own input: request and replica-metric events (JSON lines) into workloads.

Each line (or Kafka record) is decoded with the daemon's own validators
(:func:`scaler.core.events.decode_request`, then :func:`~scaler.core.events.decode_metric` for lines
that are not request events), so a replay accepts exactly what the daemon accepts. Timestamps are
history, not "now": instead of the daemon's skew check against its clock, an event is refused when it
lies more than :data:`MAX_SPAN_SECONDS` from the median arrival of the replay.

Per model, arrivals are the ``arrival`` events (prompt tokens from them); output tokens come from the
``finish`` event with the same ``request_id`` (0 without one). Times are seconds since the replay's
origin: ``since`` when given, else the earliest arrival or metric event; the replay lasts until
``until``, else the last arrival or metric event, rounded up to a whole second. Replica metric
events, when present, give what the cluster actually ran (:mod:`scaler.sim.as_run`).

:func:`iter_lines` streams a file line by line with a cap per line, and refuses a file holding a NUL
byte as soon as it reads one (JSON text never holds one; a sparse file is nothing else).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from scaler.core import events
from scaler.sim.traces import MAX_BAD_FRACTION, TraceError
from scaler.sim.workload import FloatArray, Workload

MAX_SPAN_SECONDS: Final = 31 * 86400.0  # an event further than this from the median arrival is refused
MAX_SHOWN: Final = 5  # problems kept in full for the caller to show; the rest are counted
_CHUNK: Final = 1 << 20
_ANY_TIME: Final = 1e300  # "no skew limit" for the decoders; the span check replaces it
_SKIP_FALLBACK: Final = frozenset({"missing_field", "unknown_field"})


@dataclasses.dataclass(frozen=True, slots=True)
class EventProblem:
    """An event skipped while reading: ``where`` it was (``file:line`` or ``topic[partition]@offset``)."""

    where: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {self.detail}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSamples:
    """One model's replica metric events, sorted by time: who reported, when, and ready or not."""

    replica: tuple[str, ...]
    t: FloatArray  # seconds since the replay's origin
    ready: np.ndarray[tuple[int], np.dtype[np.bool_]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModelReplay:
    """One model's part of a replay: its requests, what served them and, if recorded, its replicas."""

    workload: Workload
    serverless: np.ndarray[tuple[int], np.dtype[np.bool_]]  # per arrival: an event said backend=serverless
    ttft: FloatArray  # per arrival: first_token ts - arrival ts, NaN without a first_token event
    rejected: np.ndarray[tuple[int], np.dtype[np.bool_]]  # per arrival: a reject event was seen
    replicas: ReplicaSamples | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventsReplay:
    """Everything a replay read: per-model parts, the time range, and what was skipped."""

    models: dict[str, ModelReplay]  # only models with at least one arrival, in policy-file order
    origin: float  # unix seconds of t = 0
    duration: float  # seconds covered
    events: int  # lines or records read
    bad: int  # of which refused
    problems: tuple[EventProblem, ...]  # the first MAX_SHOWN refused, in order


@dataclasses.dataclass(slots=True)
class _ModelEvents:
    arrival_ts: list[float] = dataclasses.field(default_factory=list)
    arrival_where: list[str] = dataclasses.field(default_factory=list)
    ids: dict[str, int] = dataclasses.field(default_factory=dict)  # request_id -> index of its arrival
    prompt: list[int] = dataclasses.field(default_factory=list)
    output: dict[str, int] = dataclasses.field(default_factory=dict)
    first_token: dict[str, float] = dataclasses.field(default_factory=dict)
    serverless: set[str] = dataclasses.field(default_factory=set)
    rejected: set[str] = dataclasses.field(default_factory=set)
    replica: list[str] = dataclasses.field(default_factory=list)
    replica_ts: list[float] = dataclasses.field(default_factory=list)
    ready: list[bool] = dataclasses.field(default_factory=list)


class EventsReader:
    """Accumulates events fed one at a time (:meth:`feed`) and returns the replay (:meth:`finish`).

    ``since``/``until`` (unix seconds, either may be None) keep only events in ``[since, until]``;
    events outside are skipped silently (a Kafka scan reads a little past its range). ``only``, if
    given, keeps the events of those models alone; other models of ``known_models`` are valid but
    left out, and models outside ``known_models`` are refused (``unknown_model``), as the daemon does.
    """

    def __init__(
        self,
        *,
        known_models: Collection[str],
        since: float | None = None,
        until: float | None = None,
        only: Collection[str] | None = None,
        source: str = "",
    ) -> None:
        """Create an empty reader for the policy file's ``known_models``; ``source`` names the input."""
        self._known = frozenset(known_models)
        wanted = frozenset(only) if only is not None else self._known
        self.known_models = tuple(m for m in dict.fromkeys(known_models) if m in wanted)
        self._wanted = wanted
        self.since, self.until = since, until
        self.source = source
        self.events = 0
        self.bad = 0
        self.problems: list[EventProblem] = []
        self._by_model: dict[str, _ModelEvents] = {}

    def _refuse(self, where: str, reason: str, detail: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_SHOWN:
            self.problems.append(EventProblem(where, reason, detail))

    def _in_range(self, ts: float) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts <= self.until)

    def _decode(self, raw: bytes) -> events.RequestEvent | events.MetricEvent:
        """Return the request or metric event in ``raw``; raise InvalidEvent (the likelier kind's reason).

        A payload naming a ``replica`` field is tried as a metric event first: one C pass each.
        """
        request, metric = events.decode_request, events.decode_metric
        first, second = (metric, request) if b'"replica"' in raw else (request, metric)
        try:
            return first(raw, known_models=self._known, now=0.0, max_skew=_ANY_TIME)
        except events.InvalidEvent as exc:
            if exc.reason not in _SKIP_FALLBACK:
                raise
            try:
                return second(raw, known_models=self._known, now=0.0, max_skew=_ANY_TIME)
            except events.InvalidEvent:
                raise exc from None

    def feed(self, raw: bytes, *, where: str) -> None:
        """Read one line or record ``raw`` (``where`` names it in problems); never raises."""
        if not raw.strip():  # a blank line is no event
            return
        self.events += 1
        try:
            event = self._decode(raw)
        except events.InvalidEvent as exc:
            self._refuse(where, exc.reason, exc.detail)
            return
        if isinstance(event, events.MetricEvent):
            if event.model in self._wanted and self._in_range(event.ts):
                part = self._by_model.setdefault(event.model, _ModelEvents())
                part.replica.append(event.replica)
                part.replica_ts.append(event.ts)
                part.ready.append(event.ready)
            return
        request = event
        if request.model not in self._wanted or not self._in_range(request.ts):
            return
        part = self._by_model.setdefault(request.model, _ModelEvents())
        rid = request.request_id
        if request.backend == "serverless":
            part.serverless.add(rid)
        if request.type == "arrival":
            if rid in part.ids:
                self._refuse(where, "bad_value", f"request_id {rid[:80]!r}: a second arrival")
                return
            part.ids[rid] = len(part.arrival_ts)
            part.arrival_ts.append(request.ts)
            part.arrival_where.append(where)
            part.prompt.append(request.prompt_tokens)
        elif request.type == "finish":
            part.output[rid] = request.output_tokens
        elif request.type == "first_token":
            part.first_token.setdefault(rid, request.ts)
        else:
            part.rejected.add(rid)

    def refuse(self, where: str, reason: str, detail: str) -> None:
        """Count one more event, refused (input that never reached :meth:`feed`, e.g. an overlong line)."""
        self.events += 1
        self._refuse(where, reason, detail)

    def finish(self) -> EventsReplay:
        """Return the replay; raise TraceError if too many events were bad or the range holds no arrival."""
        name = self.source or "events"
        all_ts = [ts for part in self._by_model.values() for ts in part.arrival_ts]
        keeps: dict[str, np.ndarray[tuple[int], np.dtype[np.bool_]]] = {}
        if all_ts:
            median = float(np.median(np.asarray(all_ts)))
            keeps = {model: self._near(part, median) for model, part in self._by_model.items()}
        if self.bad and self.bad > MAX_BAD_FRACTION * self.events:
            raise TraceError(
                f"{name}: {self.bad:,} of {self.events:,} events cannot be used (more than "
                f"{MAX_BAD_FRACTION:.0%}); first: {self.problems[0]}"
            )
        times = [
            np.asarray(part.arrival_ts, dtype=np.float64)[keeps[model]]
            for model, part in self._by_model.items()
            if model in keeps
        ]
        times += [np.asarray(p.replica_ts, dtype=np.float64) for p in self._by_model.values() if p.replica_ts]
        kept = np.concatenate(times) if times else np.zeros(0)
        if not any(keep.any() for keep in keeps.values()):
            window = _window(self.since, self.until)
            first = f"; first problem: {self.problems[0]}" if self.problems else ""
            raise TraceError(f"{name}: no arrival events of {', '.join(self.known_models)}{window}{first}")
        origin = self.since if self.since is not None else float(kept.min())
        end = self.until if self.until is not None else float(kept.max())
        duration = float(max(math.floor(end - origin) + 1, 1))
        models = {
            model: _model(model, self._by_model[model], keep=keeps[model], origin=origin, duration=duration)
            for model in self.known_models
            if model in keeps and keeps[model].any()
        }
        return EventsReplay(
            models=models,
            origin=origin,
            duration=duration,
            events=self.events,
            bad=self.bad,
            problems=tuple(self.problems),
        )

    def _near(self, part: _ModelEvents, median: float) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
        """Return which arrivals lie within MAX_SPAN_SECONDS of ``median``; refuse the rest (metrics too)."""
        ts = np.asarray(part.arrival_ts, dtype=np.float64)
        keep = np.abs(ts - median) <= MAX_SPAN_SECONDS
        for i in np.flatnonzero(~keep):
            detail = f"ts {ts[i]:.15g} is {ts[i] - median:+.0f} s from the replay's median arrival"
            self._refuse(part.arrival_where[i], "timestamp_skew", f"{detail} (limit {MAX_SPAN_SECONDS:g} s)")
        near = [i for i, t in enumerate(part.replica_ts) if abs(t - median) <= MAX_SPAN_SECONDS]
        if len(near) < len(part.replica_ts):
            self.bad += len(part.replica_ts) - len(near)
            part.replica = [part.replica[i] for i in near]
            part.replica_ts = [part.replica_ts[i] for i in near]
            part.ready = [part.ready[i] for i in near]
        return keep


def _model(
    model: str,
    part: _ModelEvents,
    *,
    keep: np.ndarray[tuple[int], np.dtype[np.bool_]],
    origin: float,
    duration: float,
) -> ModelReplay:
    """Return ``model``'s replay from its accumulated events (only the arrivals ``keep`` marks)."""
    ids = [""] * len(part.arrival_ts)
    for rid, i in part.ids.items():
        ids[i] = rid
    ts_all = np.asarray(part.arrival_ts, dtype=np.float64)
    index = np.flatnonzero(keep)
    order = index[np.argsort(ts_all[index], kind="stable")]
    ts = ts_all[order]
    ordered = [ids[i] for i in order]
    first_token = np.array([part.first_token.get(rid, math.nan) for rid in ordered], dtype=np.float64)
    workload = Workload(
        name=f"events:{model}",
        arrivals=np.clip(ts - origin, 0.0, np.nextafter(duration, 0.0)),
        prompt_tokens=np.asarray(part.prompt, dtype=np.int64)[order],
        output_tokens=np.array([part.output.get(rid, 0) for rid in ordered], dtype=np.int64),
        duration=duration,
    )
    replicas = None
    if part.replica_ts:
        rt = np.asarray(part.replica_ts, dtype=np.float64)
        r_order = np.argsort(rt, kind="stable")
        replicas = ReplicaSamples(
            replica=tuple(part.replica[i] for i in r_order),
            t=rt[r_order] - origin,
            ready=np.asarray(part.ready, dtype=np.bool_)[r_order],
        )
    return ModelReplay(
        workload=workload,
        serverless=np.array([rid in part.serverless for rid in ordered], dtype=np.bool_),
        ttft=first_token - ts,
        rejected=np.array([rid in part.rejected for rid in ordered], dtype=np.bool_),
        replicas=replicas,
    )


def _window(since: float | None, until: float | None) -> str:
    if since is None and until is None:
        return ""
    low = "the start" if since is None else _iso(since)
    high = "the end" if until is None else _iso(until)
    return f" from {low} to {high}"


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def iter_lines(
    stream: BinaryIO, *, name: str, max_line: int = events.MAX_EVENT_BYTES, chunk_bytes: int = _CHUNK
) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line number, line)`` from ``stream``; None for a line over ``max_line`` bytes.

    Reads ``chunk_bytes`` at a time and holds at most one chunk and one line, whatever the file's size.
    Raises TraceError naming ``name`` and the byte offset at the first NUL byte (a sparse or corrupt
    file, not JSON lines).
    """
    number = offset = 0
    pending = bytearray()
    overlong = False
    while chunk := stream.read(chunk_bytes):
        nul = chunk.find(b"\0")
        if nul >= 0:
            line = number + chunk.count(b"\n", 0, nul) + 1
            raise TraceError(
                f"{name}:{line}: NUL byte at byte offset {offset + nul}: "
                "not a JSON-lines file (sparse or corrupt?)"
            )
        offset += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if overlong or len(pending) + end - start > max_line:
                yield number, None
            else:
                yield number, bytes(pending) + chunk[start:end]
            pending.clear()
            overlong = False
            start = end + 1
        if not overlong:
            pending += chunk[start:]
            if len(pending) > max_line:
                overlong = True
                pending.clear()
    if overlong or pending:
        yield number + 1, None if overlong else bytes(pending)


def load_events(
    path: Path,
    *,
    known_models: Collection[str],
    since: float | None = None,
    until: float | None = None,
    only: Collection[str] | None = None,
) -> EventsReplay:
    """Return the replay of the JSON-lines event file at ``path`` (arguments as :class:`EventsReader`'s).

    Raises TraceError naming the file if it cannot be read, holds a NUL byte, has more than 5% bad
    lines, or has no arrival event (in ``[since, until]``) of ``known_models``.
    """
    reader = EventsReader(known_models=known_models, since=since, until=until, only=only, source=str(path))
    try:
        with path.open("rb") as stream:
            for number, line in iter_lines(stream, name=str(path)):
                if line is None:
                    reader.refuse(f"{path}:{number}", "too_large", f"over {events.MAX_EVENT_BYTES} bytes")
                    continue
                reader.feed(line, where=f"{path}:{number}")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a JSON-lines file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror})") from None
    return reader.finish()
