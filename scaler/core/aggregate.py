"""Per-model aggregation of decoded events into fixed buckets in numpy ring buffers.

Pure: time is an argument.

A :class:`ModelAggregator` keeps, for one model:

* a ring of *open* buckets (``bucket_seconds`` long, from the policy) counting arrivals, prompt tokens,
  output tokens (credited when a request finishes) and rejects; :meth:`ModelAggregator.close` hands
  back every bucket that ended at least ``grace_seconds`` before ``now``, empty ones included, so the
  forecaster sees zero demand as data;
* a ring of per-second arrival counts for burst detection between planning ticks; from it a closed
  bucket also says how its arrivals fell into equal slots of whole seconds (``peak_slot`` of
  ``slots``: how bursty it was inside, see :mod:`scaler.core.burstiness`), at no cost per event;
* the latest metric event of each replica.

Events that fall into an already-closed bucket are *late* and events too far ahead are *early*: both
are counted and dropped, never folded into the wrong bucket.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from collections.abc import Iterable
from typing import Final

import numpy as np

from scaler.core.burstiness import slot_count
from scaler.core.events import MetricEvent, RequestEvent
from scaler.core.types import DemandForecast

# Columns of the open-bucket ring.
ARRIVALS: Final = 0
PROMPT_TOKENS: Final = 1
OUTPUT_TOKENS: Final = 2
REJECTS: Final = 3
_COLUMNS: Final = 4
MAX_CATCH_UP_BUCKETS: Final = 10_000
SECONDS_RING: Final = 64
MIN_BURST_COUNT: Final = 5  # fewer recent arrivals than this are never a burst, whatever the forecast
_EMPTY_ROW: Final = array("q", bytes(8 * _COLUMNS))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClosedBucket:
    """Totals of one completed bucket ``[start, start + seconds)``."""

    start: float
    seconds: int
    requests: int
    prompt_tokens: int
    output_tokens: int
    rejects: int
    slots: int = 1  # equal slots of whole seconds the bucket was split into
    peak_slot: int | None = None  # arrivals in its busiest slot; None when the seconds are no longer known

    @property
    def rate(self) -> float:
        """Return arrivals per second over the bucket."""
        return self.requests / self.seconds


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSummary:
    """Replica metrics of one model, from each replica's latest fresh report."""

    ready: int
    starting: int
    waiting: int
    running: int
    kv_cache_usage_mean: float


class ModelAggregator:
    """Bucket counters, per-second arrivals and latest replica metrics for one model."""

    __slots__ = (
        "_first_open",
        "_replicas",
        "_ring",
        "_second_counts",
        "_second_stamps",
        "_size",
        "bucket_seconds",
        "early",
        "grace_seconds",
        "last_closed",
        "late",
        "replica_stale_seconds",
    )

    def __init__(
        self,
        *,
        bucket_seconds: int,
        open_buckets: int = 8,
        grace_seconds: float = 2.0,
        replica_stale_seconds: float = 60.0,
    ) -> None:
        """Create an empty aggregator; raise ValueError on a non-positive size."""
        if bucket_seconds <= 0 or open_buckets <= 1:
            raise ValueError(f"bucket_seconds ({bucket_seconds}) and open_buckets ({open_buckets}) too small")
        self.bucket_seconds = int(bucket_seconds)
        self.grace_seconds = float(grace_seconds)
        self.replica_stale_seconds = float(replica_stale_seconds)
        # open buckets as one flat array of int64 (bucket k's columns at k * _COLUMNS): an event touches
        # two or three cells, where numpy's call cost dominates; an array holds no int objects per cell
        self._size = int(open_buckets)
        self._ring = array("q", bytes(8 * _COLUMNS * self._size))
        self._first_open: int | None = None  # index (start // bucket_seconds) of the oldest open bucket
        # per-second ring, arrays too: read a few slots at a time (epoch seconds in a list were an int
        # object each)
        self._second_counts = array("q", bytes(8 * SECONDS_RING))
        self._second_stamps = array("q", [-1]) * SECONDS_RING
        self._replicas: dict[str, MetricEvent] = {}
        self.late = 0
        self.early = 0
        self.last_closed: ClosedBucket | None = None

    # -- ingest -------------------------------------------------------------------------------------

    def add_request(self, event: RequestEvent) -> bool:
        """Count ``event`` into its bucket; return False if it was dropped as late or early."""
        index = math.floor(event.ts / self.bucket_seconds)
        if self._first_open is None:
            self._first_open = index
        offset = index - self._first_open
        if offset < 0:
            self.late += 1
            return False
        size = self._size
        if offset >= size:
            self.early += 1
            return False
        ring, row = self._ring, (index % size) * _COLUMNS
        kind = event.type
        if kind == "arrival":
            ring[row + ARRIVALS] += 1
            ring[row + PROMPT_TOKENS] += event.prompt_tokens
            second = math.floor(event.ts)
            slot = second % SECONDS_RING
            if self._second_stamps[slot] != second:
                self._second_stamps[slot] = second
                self._second_counts[slot] = 0
            self._second_counts[slot] += 1
        elif kind == "finish":
            ring[row + OUTPUT_TOKENS] += event.output_tokens
        elif kind == "reject":
            ring[row + REJECTS] += 1
        return True

    def add_requests(self, events: Iterable[RequestEvent]) -> int:
        """Count every event of ``events`` as :meth:`add_request` would; return how many were counted.

        One loop over the batch with the ring in locals: the per-event cost of the ingest path.
        """
        bucket = self.bucket_seconds
        ring = self._ring
        size = self._size
        stamps, counts = self._second_stamps, self._second_counts
        floor = math.floor
        first = self._first_open
        counted = late = early = 0
        for event in events:
            ts = event.ts
            index = floor(ts / bucket)
            if first is None:
                first = self._first_open = index
            offset = index - first
            if offset < 0:
                late += 1
                continue
            if offset >= size:
                early += 1
                continue
            counted += 1
            row = (index % size) * _COLUMNS
            kind = event.type
            if kind == "arrival":
                ring[row + ARRIVALS] += 1
                ring[row + PROMPT_TOKENS] += event.prompt_tokens
                second = floor(ts)
                slot = second % SECONDS_RING
                if stamps[slot] != second:
                    stamps[slot] = second
                    counts[slot] = 1
                else:
                    counts[slot] += 1
            elif kind == "finish":
                ring[row + OUTPUT_TOKENS] += event.output_tokens
            elif kind == "reject":
                ring[row + REJECTS] += 1
        self.late += late
        self.early += early
        return counted

    def add_second(self, *, second: int, arrivals: int, prompt_tokens: int, output_tokens: int) -> bool:
        """Count a whole second of arrivals at once, as ``arrivals`` arrival events in ``[second, second+1)``.

        Output tokens are credited with them (a replay that knows each request's size up front).
        Return False if the second's bucket is late or early (nothing is counted).
        """
        index = math.floor(second / self.bucket_seconds)
        if self._first_open is None:
            self._first_open = index
        offset = index - self._first_open
        size = self._size
        if offset < 0 or offset >= size:
            if offset < 0:
                self.late += 1
            else:
                self.early += 1
            return False
        ring, row = self._ring, (index % size) * _COLUMNS
        ring[row + ARRIVALS] += arrivals
        ring[row + PROMPT_TOKENS] += prompt_tokens
        ring[row + OUTPUT_TOKENS] += output_tokens
        slot = second % SECONDS_RING
        if self._second_stamps[slot] != second:
            self._second_stamps[slot] = second
            self._second_counts[slot] = 0
        self._second_counts[slot] += arrivals
        return True

    def add_metric(self, event: MetricEvent) -> None:
        """Keep ``event`` if it is the newest report of its replica."""
        known = self._replicas.get(event.replica)
        if known is None or event.ts >= known.ts:
            self._replicas[event.replica] = event

    def begin(self, *, now: float) -> None:
        """Start counting at the first bucket beginning at or after ``now`` (a partial one under-reports).

        Events before it are counted as late. Has no effect once counting has begun.
        """
        if self._first_open is None:
            self._first_open = math.ceil(now / self.bucket_seconds)

    # -- read ---------------------------------------------------------------------------------------

    def close(self, *, now: float) -> list[ClosedBucket]:
        """Return every bucket that ended ``grace_seconds`` or more before ``now``, oldest first; reset them.

        After a long pause only the last :data:`MAX_CATCH_UP_BUCKETS` empty buckets are returned.
        """
        limit = math.floor((now - self.grace_seconds) / self.bucket_seconds)  # first bucket still open
        if self._first_open is None:
            self._first_open = limit
            return []
        if limit <= self._first_open:
            return []
        size, ring = self._size, self._ring
        start = max(self._first_open, limit - MAX_CATCH_UP_BUCKETS)
        closed: list[ClosedBucket] = []
        slots = slot_count(self.bucket_seconds)
        for index in range(start, limit):
            offset = index - self._first_open
            totals = [0] * _COLUMNS
            if offset < size:  # rows past the ring were never written: those buckets are empty
                row = (index % size) * _COLUMNS
                totals = ring[row : row + _COLUMNS].tolist()
            closed.append(
                ClosedBucket(
                    start=float(index * self.bucket_seconds),
                    seconds=self.bucket_seconds,
                    requests=totals[ARRIVALS],
                    prompt_tokens=totals[PROMPT_TOKENS],
                    output_tokens=totals[OUTPUT_TOKENS],
                    rejects=totals[REJECTS],
                    slots=slots,
                    peak_slot=self._peak_slot(index, slots=slots, requests=totals[ARRIVALS]),
                )
            )
        for index in range(self._first_open, min(limit, self._first_open + size)):
            row = (index % size) * _COLUMNS
            ring[row : row + _COLUMNS] = _EMPTY_ROW
        self._first_open = limit
        if closed:
            self.last_closed = closed[-1]
        return closed

    def _peak_slot(self, index: int, *, slots: int, requests: int) -> int | None:
        """Return the arrivals in the busiest of ``slots`` equal slots of bucket ``index``.

        Read from the per-second ring; None when it no longer holds every arrival of the bucket (a
        bucket longer than the ring, closed long after it ended, or restored from a checkpoint).
        """
        bucket = self.bucket_seconds
        if slots < 2 or bucket >= SECONDS_RING:
            return None
        stamps, counts = self._second_stamps, self._second_counts
        start = index * bucket
        width = bucket // slots
        parts = [0] * slots
        for second in range(start, start + bucket):
            at = second % SECONDS_RING
            if stamps[at] == second:
                parts[(second - start) // width] += counts[at]
        return max(parts) if sum(parts) == requests else None

    def recent_rate(self, *, now: float, window_seconds: int) -> tuple[float, int]:
        """Return (arrivals/s, arrivals) over the last ``window_seconds`` seconds, the current one included.

        The rate divides by the time those seconds have actually covered so far (the current second
        only up to ``now``), at least half a second, so a burst shows at its rate within the second.
        """
        if not 1 <= window_seconds < SECONDS_RING:
            raise ValueError(f"window_seconds must be in 1..{SECONDS_RING - 1}, got {window_seconds}")
        newest = math.floor(now)
        stamps, counts = self._second_stamps, self._second_counts
        count = 0
        for second in range(newest - window_seconds + 1, newest + 1):
            slot = second % SECONDS_RING
            if stamps[slot] == second:
                count += counts[slot]
        span = max(window_seconds - 1 + (now - newest), 0.5)
        return count / span, count

    def replicas(self, *, now: float) -> ReplicaSummary:
        """Return the summary of replicas that reported within ``replica_stale_seconds`` of ``now``."""
        fresh = [m for m in self._replicas.values() if now - m.ts <= self.replica_stale_seconds]
        if len(fresh) < len(self._replicas):
            self._replicas = {m.replica: m for m in fresh}
        ready = [m for m in fresh if m.ready]
        return ReplicaSummary(
            ready=len(ready),
            starting=len(fresh) - len(ready),
            waiting=sum(m.waiting for m in fresh),
            running=sum(m.running for m in fresh),
            kv_cache_usage_mean=float(np.mean([m.kv_cache_usage for m in ready])) if ready else 0.0,
        )

    def inflight(self, *, now: float) -> dict[str, int]:
        """Return requests in flight (waiting + running) per pod, from ready replicas' fresh reports.

        A report's ``pod`` names the pod (else its ``replica``); a replica that is not ready (starting,
        or its scrape failed) or whose report is stale is left out: its load is unknown.
        """
        return {
            m.pod or m.replica: m.waiting + m.running
            for m in self._replicas.values()
            if m.ready and now - m.ts <= self.replica_stale_seconds
        }

    # -- checkpoint ---------------------------------------------------------------------------------

    def open_state(self) -> dict[str, object]:
        """Return the open buckets as JSON-ready data (for a checkpoint)."""
        if self._first_open is None:
            return {"bucket_seconds": self.bucket_seconds, "first_open": None, "rows": []}
        size, ring = self._size, self._ring
        starts = (((self._first_open + k) % size) * _COLUMNS for k in range(size))
        rows = [ring[row : row + _COLUMNS].tolist() for row in starts]
        return {"bucket_seconds": self.bucket_seconds, "first_open": self._first_open, "rows": rows}

    def restore_open(self, state: dict[str, object]) -> None:
        """Add the open buckets of ``state`` (from :meth:`open_state`); raise ValueError if malformed."""
        mine = self.bucket_seconds
        if state.get("bucket_seconds") != mine:
            raise ValueError(f"checkpoint bucket_seconds {state.get('bucket_seconds')} != {mine}")
        first = state.get("first_open")
        rows = state.get("rows")
        if first is None:
            return
        if type(first) is not int or not isinstance(rows, list):
            raise ValueError("checkpoint open buckets are malformed")
        size = self._size
        if self._first_open is None:
            self._first_open = first
        for k, row in enumerate(rows):
            index = first + k
            offset = index - self._first_open
            if 0 <= offset < size:
                values = np.asarray(row, dtype=np.int64)
                if values.shape != (_COLUMNS,) or (values < 0).any():
                    raise ValueError(f"checkpoint bucket row {k} is malformed: {row!r}")
                cells = (index % size) * _COLUMNS
                for column, value in enumerate(values.tolist()):
                    self._ring[cells + column] += value


def burst_threshold(forecast: DemandForecast, *, now: float, level: float = 0.99) -> float | None:
    """Return the forecast's rate quantile at ``level`` (or the nearest level above it, else the highest).

    The bucket is the one holding ``now``. Return None if the forecast is unusable or does not cover ``now``.
    """
    if not forecast.valid or forecast.rate_quantiles.size == 0:
        return None
    h = math.floor((now - forecast.start) / forecast.bucket_seconds)
    h = max(h, 0)
    if h >= forecast.rate_quantiles.shape[1]:
        return None
    above = np.nonzero(forecast.levels >= level - 1e-9)[0]
    k = int(above[0]) if above.size else forecast.levels.shape[0] - 1
    return float(forecast.rate_quantiles[k, h])


def is_burst(
    *, recent_rate: float, recent_count: int, threshold: float | None, min_count: int = MIN_BURST_COUNT
) -> bool:
    """Return True when recent arrivals are too many for the forecast's high quantile to explain.

    Counts over a few seconds are noisy: the count must exceed what a Poisson process at the
    ``threshold`` rate reaches with probability about 1e-3 (mean + 3.1 sd + 1) and ``min_count``.
    """
    if threshold is None or recent_count < min_count or recent_rate <= 0.0:
        return False
    span = recent_count / recent_rate
    expected = threshold * span
    return recent_count > expected + 3.1 * math.sqrt(expected) + 1.0
