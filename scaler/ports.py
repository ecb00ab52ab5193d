"""Ports: the small interfaces the daemon's loop talks to, each implemented by one adapter (and a fake).

Every method says what it returns and what it raises. Adapters live in :mod:`scaler.adapters`;
the in-memory implementations used by ``scaler run --sandbox`` and the tests are in
:mod:`scaler.adapters.memory`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple, Protocol

from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, DemandForecast, FloatArray, Observed


class RawRecord(NamedTuple):
    """One record as it came off the event log, before decoding (a tuple: cheap on the ingest path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


OwnershipCallback = Callable[[frozenset[str]], Awaitable[None]]


class EventSource(Protocol):
    """Batches of raw records from the request and metric topics, with ownership of models.

    The source calls ``on_revoked`` (and awaits it) BEFORE the models it names may move to another
    process, and ``on_assigned`` once new models are this process's to act for.
    """

    async def start(self, *, on_assigned: OwnershipCallback, on_revoked: OwnershipCallback) -> None:
        """Connect and join; raise ConnectionError if the log cannot be reached at all."""

    async def poll(self, *, wait_seconds: float) -> list[RawRecord]:
        """Return the next records (maybe none) within ``wait_seconds``; transient errors are retried."""

    async def commit(self) -> None:
        """Commit the position after every record returned so far; raise TimeoutError if it cannot."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Return messages behind the log's end per (topic, partition) owned; empty when unknown."""

    async def stop(self) -> None:
        """Leave the group and close; never raises."""


class DecisionSink(Protocol):
    """Where decisions and rejected events go."""

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        """Publish a decision for ``model``; raise ConnectionError if it could not be delivered."""

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        """Record an event that failed validation; raise ConnectionError if it could not be delivered."""


class CheckpointStore(Protocol):
    """Per-model state that survives restarts and moves with a model's ownership."""

    async def load(self, models: frozenset[str]) -> dict[str, bytes]:
        """Return the latest checkpoint of each of ``models`` that has one."""

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        """Store the checkpoints (model -> bytes); raise ConnectionError if they could not be stored."""


class Clock(Protocol):
    """Wall-clock time and sleeping (virtual in the sandbox and in tests)."""

    def now(self) -> float:
        """Return unix time in seconds."""

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""


class Forecaster(Protocol):
    """The per-model forecaster (:class:`scaler.forecast.models.DemandForecaster`)."""

    def observe(
        self, *, bucket_start: float, requests: float, prompt_tokens: float, output_tokens: float
    ) -> None:
        """Add one completed bucket of counts; raise ValueError on negative or infinite counts."""

    def seed(
        self, *, start: float, requests: FloatArray, prompt_tokens: FloatArray, output_tokens: FloatArray
    ) -> None:
        """Replace the history with per-bucket counts from ``start`` (NaN = missing); raise ValueError."""

    def forecast(self, *, now: float) -> DemandForecast:
        """Return the demand distribution from the bucket holding ``now``."""

    def to_bytes(self) -> bytes:
        """Return a checkpoint of the forecaster."""


class Planner(Protocol):
    """The pure planner (:func:`scaler.core.plan.plan`)."""

    def __call__(
        self,
        *,
        policy: ModelPolicy,
        forecast: DemandForecast,
        observed: Observed,
        previous: Decision | None,
        now: float,
    ) -> Decision:
        """Return the desired state for one model."""


ForecasterFactory = Callable[[ModelPolicy], Forecaster]
ForecasterLoader = Callable[[bytes], Forecaster]
