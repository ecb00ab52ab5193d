"""Ports: the small interfaces the daemon's loop talks to, each implemented by one adapter (and a fake).

Every method says what it returns and what it raises. Adapters live in :mod:`scaler.adapters`;
the in-memory implementations used by ``scaler run --sandbox`` and the tests are in
:mod:`scaler.adapters.memory`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple, Protocol, runtime_checkable

from scaler.backends.base import ServerlessPort, ServerlessState, TrafficWeightsPort
from scaler.control.controller import Forecaster, Planner
from scaler.control.leadtime import ColdStart
from scaler.core.errors import ConflictError, PermanentError, TransientError
from scaler.core.operators import ExternalChange
from scaler.core.policy import KubernetesTarget, ModelPolicy
from scaler.core.types import Decision

__all__ = [
    "Capacity",
    "CheckpointStore",
    "Clock",
    "ConflictError",
    "DeadLetterError",
    "DecisionObserver",
    "DecisionSink",
    "EventSource",
    "Forecaster",
    "ForecasterFactory",
    "ForecasterLoader",
    "KubeState",
    "KubernetesOperatorsPort",
    "KubernetesPort",
    "LabelStandbyPort",
    "OwnershipCallback",
    "PermanentError",
    "Planner",
    "PodInfo",
    "RawRecord",
    "ServerlessPort",
    "ServerlessState",
    "Superseded",
    "TrafficWeightsPort",
    "TransientError",
]


class RawRecord(NamedTuple):
    """One record as it came off the event log, before decoding (a tuple: cheap on the ingest path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


OwnershipCallback = Callable[[frozenset[str]], Awaitable[None]]


class DeadLetterError(ConnectionError):
    """Queued dead letters were not acknowledged; ``origins``: their records' (topic, partition, offset)."""

    def __init__(self, message: str, origins: frozenset[tuple[str, int, int]]) -> None:
        super().__init__(message)
        self.origins = origins


class EventSource(Protocol):
    """Batches of raw records from the request and metric topics, with ownership of models.

    The source calls ``on_revoked`` (and awaits it) BEFORE the models it names may move to another
    process, and ``on_assigned`` once new models are this process's to act for.
    """

    async def start(self, *, on_assigned: OwnershipCallback, on_revoked: OwnershipCallback) -> None:
        """Connect and join; raise ConnectionError if the log cannot be reached at all."""

    async def poll(self, *, wait_seconds: float) -> list[RawRecord]:
        """Return the next records (maybe none) within ``wait_seconds``; transient errors are retried."""

    def still_assigned(self, records: list[RawRecord]) -> list[RawRecord]:
        """Return ``records`` without those of partitions revoked since the last poll (no I/O)."""

    def settle(self) -> None:
        """Mark every record polled so far as counted or dead-lettered (commit may cover it).

        The caller settles only once every dead letter it queued was acknowledged.
        """

    async def commit(self) -> None:
        """Commit the position after every settled record; raise TimeoutError if it cannot."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Return messages behind the log's end per (topic, partition) owned; empty when unknown."""

    def refresh_owned(self) -> frozenset[str]:
        """Return the models owned under the current assignment (after a policy reload changed the set)."""

    def connected(self) -> bool:
        """Return True while the log is reachable (cheap, no I/O: for readiness)."""

    async def stop(self) -> None:
        """Leave the group and close; never raises."""


class DecisionSink(Protocol):
    """Where decisions and rejected events go."""

    async def start(self) -> None:
        """Connect; raise ConnectionError if the log cannot be reached."""

    async def stop(self) -> None:
        """Deliver what is queued and close; never raises."""

    async def flush(self) -> None:
        """Wait until every queued dead letter is delivered; raise ConnectionError if one was not.

        :class:`DeadLetterError` names the letters that failed (the others were delivered).
        """

    async def publish(self, *, model: str, payload: Mapping[str, object]) -> None:
        """Publish a decision for ``model``; raise ConnectionError if it could not be delivered."""

    async def dead_letter(self, *, record: RawRecord, reason: str, detail: str) -> None:
        """Record an event that failed validation; raise ConnectionError if it could not be delivered."""


class DecisionObserver(Protocol):
    """Hears of every decision as it is made (e.g. an external scaler serving them to KEDA)."""

    def decided(self, *, model: str, decision: Decision, payload: Mapping[str, object]) -> None:
        """Take note of ``decision`` for ``model``; called on the event loop, so it must not block."""

    def released(self, models: frozenset[str]) -> None:
        """Forget ``models``: this process no longer acts for them."""


class PartitionListener(Protocol):
    """Hears of request-topic partitions this process was assigned or lost (fencing Leases)."""

    async def assigned(self, partitions: frozenset[int]) -> None:
        """Start holding ``partitions`` (the whole current assignment); must not wait on slow I/O."""

    async def revoked(self, partitions: frozenset[int]) -> None:
        """Stop holding ``partitions``, after their models were released; bounded, never raises."""


class Gate(Protocol):
    """Says, at the moment of acting, whether this process may still act for a model (fencing)."""

    def allows(self, model: str, *, action: str) -> bool:
        """Return True if a decision for ``model`` may be published or applied (``action``) now.

        A refusal is counted and logged by the gate; no I/O, cheap.
        """


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


ForecasterFactory = Callable[[ModelPolicy], Forecaster]
ForecasterLoader = Callable[[bytes], Forecaster]


class Superseded(Exception):  # noqa: N818  # not an error: someone else changed the target first
    """The target changed since it was read back, so the change was not made (the next read sees why)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KubeState:
    """Replica counts of one workload: desired (spec), ready, and starting (desired but not ready).

    ``paused``: the workload carries ``spillway.io/paused: "true"`` (never written while so);
    ``generation`` and ``resource_version`` identify what was read (None: unknown); ``external`` is
    set by :class:`scaler.adapters.actuator.Actuators` when ``desired`` is a count Spillway did not
    write (the latest such change, kept while it is in force).
    ``pods``: when each of its pods was created and became Ready (for the lead-time learner).
    """

    desired: int
    ready: int
    starting: int
    paused: bool = False
    generation: int | None = None
    resource_version: str | None = None
    external: ExternalChange | None = None
    pods: tuple[ColdStart, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """What the actuators read back for one model (None: no target of that kind, or unreadable)."""

    replicas: KubeState | None = None
    standby: KubeState | None = None
    serverless: ServerlessState | None = None
    weights: dict[str, float] | None = None


class KubernetesPort(Protocol):
    """Replicas of the workloads named in a policy (:mod:`scaler.adapters.kubernetes`)."""

    async def read(self, target: KubernetesTarget, *, name: str) -> KubeState:
        """Return the workload's counts; raise TransientError or PermanentError."""

    async def set_replicas(self, target: KubernetesTarget, *, name: str, replicas: int, reason: str) -> None:
        """Set the workload's replicas and record an Event; raise TransientError or PermanentError."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    """One pod of a workload: its name and its pod-deletion-cost annotation (None: unset)."""

    name: str
    deletion_cost: str | None = None


@runtime_checkable
class KubernetesOperatorsPort(KubernetesPort, Protocol):
    """A Kubernetes port that also records Events and marks pods for drain-aware scale-in."""

    async def set_replicas(
        self,
        target: KubernetesTarget,
        *,
        name: str,
        replicas: int,
        reason: str,
        only_from: int | None = None,
    ) -> None:
        """Set the workload's replicas as :class:`KubernetesPort` does; raise Superseded when
        ``only_from`` is given and the workload no longer has that many (someone else changed it)."""

    async def record_event(
        self, target: KubernetesTarget, *, name: str, reason: str, message: str, warning: bool = False
    ) -> None:
        """Record an Event on the workload ``name``; best effort (never raises)."""

    async def list_pods(self, target: KubernetesTarget, *, name: str) -> list[PodInfo]:
        """Return the live pods of the workload ``name``; raise TransientError or PermanentError."""

    async def set_deletion_cost(self, target: KubernetesTarget, *, pod: str, cost: int | None) -> None:
        """Set (None: remove) the pod's deletion cost annotation; raise TransientError or PermanentError."""

    async def server_version(self) -> tuple[str, str] | None:
        """Return the API server's (major, minor) version strings, or None when they cannot be read."""


@runtime_checkable
class LabelStandbyPort(KubernetesPort, Protocol):
    """A Kubernetes port that keeps standby pods inside the serving workload, out of its Service by label."""

    async def read_split(self, target: KubernetesTarget) -> tuple[KubeState, KubeState]:
        """Return (serving, standby) counts of the workload's pods; raise TransientError or PermanentError."""

    async def set_label_standby(
        self, target: KubernetesTarget, *, replicas: int, standby: int, reason: str
    ) -> None:
        """Run ``replicas + standby`` pods, ``standby`` of them labelled standby; raise on failure."""


