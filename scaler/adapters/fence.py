"""The fencing gate the executor asks right before it publishes a decision or applies one.

A decision for a model leaves the process only while the consumer group says its partition is
assigned to this process in the current generation and the group session cannot have expired
(:class:`scaler.adapters.kafka.KafkaEventSource` keeps those facts), and, when Leases are on,
while this process holds the partition's Lease with margin (:class:`scaler.adapters.lease.LeaseKeeper`).
The rules are :func:`scaler.control.fencing.fence_reason`. A refusal is counted in
``scaler_decisions_fenced_total{action,reason}`` and logged once when a model becomes fenced and
once when it is free again, not per decision.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from scaler.adapters.metrics import DaemonMetrics
from scaler.control import fencing


def default_identity() -> str:
    """Return this process's identity (Lease holder, decision header): host (pod) name + random suffix."""
    return f"{socket.gethostname()[:48]}-{secrets.token_hex(4)}"


class GroupFacts(Protocol):
    """What the consumer knows of its assignment (the Kafka source)."""

    generation: int | None

    def partition_of(self, model: str) -> int | None:
        """Return ``model``'s request-topic partition (None before the first assignment)."""

    def group_view(self, partition: int) -> fencing.GroupView:
        """Return the group's facts of ``partition`` now."""


class LeaseFacts(Protocol):
    """When this process last renewed each partition's Lease (the lease keeper)."""

    identity: str
    duration: float
    margin: float

    def renewed_at(self, partition: int) -> float | None:
        """Return the monotonic send time of the last successful acquire/renew, or None."""


class Fence:
    """The gate (:class:`scaler.ports.Gate`) over the group's facts and, optionally, the Leases."""

    def __init__(
        self,
        *,
        group: GroupFacts,
        leases: LeaseFacts | None,
        session_timeout: float,
        session_margin: float,
        identity: str,
        metrics: DaemonMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a gate; ``leases`` None means the group checks alone apply."""
        self.group = group
        self.leases = leases
        self.session_timeout = session_timeout
        self.session_margin = session_margin
        self.identity = identity
        self.metrics = metrics
        self.monotonic = monotonic
        self.log = structlog.get_logger("scaler.fence")
        self._fenced: dict[str, str] = {}  # model -> reason, while fenced (for transition logs)

    def reason(self, model: str) -> fencing.FenceReason | None:
        """Return why ``model``'s decisions must not leave this process now, or None."""
        partition = self.group.partition_of(model)
        if partition is None:
            return "not_assigned"
        leases = self.leases
        return fencing.fence_reason(
            self.group.group_view(partition),
            session_timeout=self.session_timeout,
            margin=self.session_margin,
            lease_renewed_at=leases.renewed_at(partition) if leases is not None else None,
            lease_duration=leases.duration if leases is not None else None,
            lease_margin=leases.margin if leases is not None else 0.0,
            now=self.monotonic(),
        )

    def allows(self, model: str, *, action: str) -> bool:
        """Return True if ``model``'s decision may be published/applied (``action``) now; count refusals."""
        why = self.reason(model)
        before = self._fenced.get(model)
        if why is None:
            if before is not None:
                del self._fenced[model]
                self.log.info("fence_lifted", model=model, was=before)
            return True
        self.metrics.decisions_fenced.labels(action=action, reason=why).inc()
        if before != why:
            self._fenced[model] = why
            self.log.warning("fenced", model=model, reason=why, action=action)
        return False

    def headers(self, model: str) -> list[tuple[str, bytes]]:
        """Return the headers of ``model``'s decision records: who published it, in which generation."""
        generation = self.group.generation
        return [
            ("spillway-member", self.identity.encode()),
            ("spillway-generation", str(generation if generation is not None else -1).encode()),
        ]
