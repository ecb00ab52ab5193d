"""What the simulated cluster tells a controller each tick, and what a controller asks of it.

Every policy under test (Spillway's controller, each baseline) is a :class:`Controller`: the simulator
calls ``decide`` every ``interval_seconds`` of virtual time (or, for a :class:`SelfScheduling`
controller, whenever it says it is due) with what a real autoscaler could observe at that moment,
and applies the returned :class:`CapacityTarget` with the cluster's lead times.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TickObservation:
    """What an autoscaler can see at virtual time ``now`` (seconds since the workload's start).

    Counts cover the interval ``(now - interval, now]``; the rest is the state at ``now``.
    """

    now: float
    interval: float
    arrivals: int
    prompt_tokens: int
    output_tokens: int
    replicas_ready: int
    replicas_starting: int
    standby_ready: int
    standby_starting: int
    serverless_provisioned: int
    serverless_active: int
    busy_slots: float  # mean slots in use on ready replicas over the interval
    slots_per_replica: int
    queue_length: int  # requests waiting for a replica slot at ``now`` (a Kafka-lag-like signal)
    in_flight: int  # requests being served anywhere at ``now``
    pods: tuple[tuple[int, float, float], ...] = ()  # (serial, created, first Ready) of started pods


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CapacityTarget:
    """Desired capacity. The cluster model applies it with cold starts and bounds nothing itself.

    ``serverless_enabled`` says whether overflow may go to on-demand serverless (up to the quota);
    ``serverless_provisioned`` instances are kept warm (billed per hour) whether used or not.
    ``reason`` is free text kept for the report (Spillway's planner explains itself here).
    """

    replicas: int
    standby: int = 0
    serverless_provisioned: int = 0
    serverless_enabled: bool = False
    reason: str = ""


class Controller(Protocol):
    """A scaling policy under simulation."""

    @property
    def name(self) -> str:
        """Return the short name shown in the report table."""
        ...

    @property
    def interval_seconds(self) -> float:
        """Return how often ``decide`` is called, in virtual seconds."""
        ...

    def decide(self, obs: TickObservation) -> CapacityTarget:
        """Return the capacity wanted after observing ``obs``. Must not raise on any valid observation."""
        ...


@runtime_checkable
class SelfScheduling(Protocol):
    """A controller that says when it next wants to decide (Spillway's: on its tick or a burst)."""

    def next_wake(self, *, now: float, until: float) -> float:
        """Return the next time after ``now`` at which ``decide`` is due, at most ``until``."""
        ...
