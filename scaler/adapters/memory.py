"""In-memory ports for ``scaler run --sandbox``: accelerated clock, synthetic event replay, recording sink.

The sandbox runs the real daemon (same :class:`scaler.app.Daemon`, loop, forecaster and planner)
without Kafka: a :class:`ReplaySource` generates request events for every model from a synthetic
rate curve (a daily cycle plus periodic step bursts, Poisson arrivals) in the time of a
:class:`VirtualClock` that runs ``speed`` times faster than the wall clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping

import numpy as np

from scaler.core.events import RequestEvent, encode_request
from scaler.ports import OwnershipCallback, RawRecord

MAX_BATCH_SECONDS = 600  # one poll hands out at most 10 virtual minutes of events


class VirtualClock:
    """Unix time that advances ``speed`` times faster than the wall clock, from the wall-clock now.

    A stall of the process (a loaded machine, a long garbage collection) does not become a jump of
    virtual time: of the wall time between two readings at most ``max_stall_seconds`` counts, so virtual
    time pauses while nothing runs instead of skipping decisions. The daemon's tasks read the clock
    every few milliseconds of wall time, far below that cap.
    """

    def __init__(
        self,
        *,
        speed: float,
        start: float | None = None,
        max_stall_seconds: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a clock; raise ValueError unless ``speed`` > 0 and ``max_stall_seconds`` > 0."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if not max_stall_seconds > 0:
            raise ValueError(f"max_stall_seconds must be > 0, got {max_stall_seconds}")
        self.speed = speed
        self.start = time.time() if start is None else start
        self.max_stall_seconds = max_stall_seconds
        self._monotonic = monotonic
        self._last_wall = monotonic()
        self._elapsed = 0.0  # virtual seconds since start

    def now(self) -> float:
        """Return the virtual unix time (never decreasing)."""
        wall = self._monotonic()
        self._elapsed += min(max(wall - self._last_wall, 0.0), self.max_stall_seconds) * self.speed
        self._last_wall = wall
        return self.start + self._elapsed

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (more if the process stalls meanwhile)."""
        until = self.now() + max(seconds, 0.0)
        while (left := until - self.now()) > 0:  # noqa: ASYNC110  # re-read the clock, no event to wait on
            await asyncio.sleep(min(left / self.speed, self.max_stall_seconds / 2))


def synthetic_rate(t: float, *, base: float, start: float) -> float:
    """Return requests/s at virtual time ``t``: a daily cycle around ``base`` and a 4x burst for
    2 minutes in every 15."""
    daily = 1.0 + 0.5 * math.sin(2 * math.pi * ((t - start) / 86_400.0))
    burst = 4.0 if (t - start) % 900.0 >= 780.0 else 1.0
    return base * daily * burst


class ReplaySource:
    """Event source that replays synthetic request events for ``models`` in virtual time."""

    def __init__(
        self,
        *,
        models: Mapping[str, float],
        clock: VirtualClock,
        topic: str = "llm.requests",
        seed: int = 7,
    ) -> None:
        """Create a source; ``models`` maps each model to its base rate (requests/s)."""
        self.models = dict(models)
        self.clock = clock
        self.topic = topic
        self.rng = np.random.default_rng(seed)
        self.next_second = math.floor(clock.now())
        self.offset = 0
        self.commits = 0
        self.produced = 0

    async def start(self, *, on_assigned: OwnershipCallback, on_revoked: OwnershipCallback) -> None:
        """Own every model at once."""
        await on_assigned(frozenset(self.models))

    async def poll(self, *, wait_seconds: float) -> list[RawRecord]:
        """Return the events of every whole virtual second that has passed since the last poll."""
        now = self.clock.now()
        if math.floor(now) <= self.next_second:  # wait for the current virtual second to end
            await asyncio.sleep(min(wait_seconds, (self.next_second + 1 - now) / self.clock.speed + 0.0005))
            return []
        records: list[RawRecord] = []
        last = min(math.floor(now), self.next_second + MAX_BATCH_SECONDS)
        for second in range(self.next_second, last):
            for model, base in self.models.items():
                count = int(self.rng.poisson(synthetic_rate(second, base=base, start=self.clock.start)))
                stamps = np.sort(self.rng.random(count)) + second
                prompts = self.rng.integers(50, 2000, size=count)
                key = model.encode()
                for ts, prompt in zip(stamps.tolist(), prompts.tolist(), strict=True):
                    self.offset += 1
                    event = RequestEvent(
                        model=model,
                        ts=ts,
                        type="arrival",
                        request_id=f"{model}-{self.offset}",
                        prompt_tokens=int(prompt),
                        output_tokens=0,
                    )
                    records.append(RawRecord(self.topic, 0, self.offset, key, encode_request(event)))
        self.next_second = last
        self.produced += len(records)
        return records

    def still_assigned(self, records: list[RawRecord]) -> list[RawRecord]:
        """Return ``records``: the replay never moves a model."""
        return records

    def settle(self) -> None:
        """Nothing to mark: commits persist nothing."""

    async def commit(self) -> None:
        """Count the commit (nothing to persist)."""
        self.commits += 1

    def refresh_owned(self) -> frozenset[str]:
        """Return every model (the replay owns them all)."""
        return frozenset(self.models)

    def connected(self) -> bool:
        """Return True: the replay is always reachable."""
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        """Return the virtual seconds not yet replayed, as the lag of partition 0."""
        return {(self.topic, 0): max(0, math.floor(self.clock.now()) - self.next_second)}

    async def stop(self) -> None:
        """Nothing to close."""


class MemorySink:
    """Keeps every decision and dead letter in memory (the loop already logs each decision)."""

    def __init__(self) -> None:
        """Create an empty sink."""
        self.decisions: list[tuple[str, dict[str, object]]] = []
        self.letters: list[tuple[RawRecord, str, str]] = []

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        """Record the decision."""
        self.decisions.append((model, dict(payload)))

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        """Record the rejected event."""
        self.letters.append((record, reason, detail))

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def flush(self) -> None:
        """Nothing is queued."""


class MemoryStore:
    """Checkpoints in a dict."""

    def __init__(self) -> None:
        """Create an empty store."""
        self.saved: dict[str, bytes] = {}

    async def load(self, models: frozenset[str]) -> dict[str, bytes]:
        """Return the stored checkpoints of ``models``."""
        return {m: v for m, v in self.saved.items() if m in models}

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        """Store the checkpoints."""
        self.saved.update(checkpoints)
