"""Kubernetes replicas and warm standby in virtual time: lifecycle and billing, shared by both cluster models.

Rules (seconds from the workload's start; the caller passes ``now``):

* A replica is billed per second from the moment it is requested until it is removed. It serves from
  ``requested + cold_start_seconds``. At the start of a run ``warm`` replicas are already ready.
* A warm standby replica takes the same cold start to become standby-ready, is billed the same, and
  takes no traffic. Promoting a ready standby into service takes ``standby_promotion_seconds``; billing
  carries on without a break.
* When the replica target rises, ready standby replicas are promoted first and the rest cold-start;
  the standby pool is then refilled by cold starts to its own target. When a target falls, replicas
  still starting are cancelled first (latest first; billing stops at once), then ready ones are
  removed, those that drain soonest first. A removed replica takes no new requests, finishes the ones
  it holds and is billed until it has drained (capped at the end of the run).
* Billing of everything stops at the end of the run (``close``).
* Cold starts take ``cold_start_seconds``, or a draw of ``cold`` per replica when given
  (:class:`scaler.sim.coldstart.ColdStarts`). A standby is a pod of the serving workload held out of
  the Service by a label: it draws the same cold start, and promotion flips the label (the pod, its
  creation and its Ready time stay). :meth:`Fleet.pods` reports every pod as the Kubernetes API would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from scaler.core.policy import LeadTimes
from scaler.sim.results import FloatArray

SERVE, STANDBY = 0, 1


@dataclasses.dataclass(slots=True)
class _Replica:
    rid: int
    since: float  # start of the current role (billing of this segment starts here)
    ready_at: float  # serves (SERVE) or is standby-ready (STANDBY) from here
    pod: int = -1  # serial of the pod (-1: warm at the start, never observed starting)
    created: float = 0.0  # when the pod was requested
    pod_ready: float = 0.0  # when the pod first became Ready (in either role)


Pod = tuple[int, float, float]  # (serial, created, first Ready; may be after now)


@dataclasses.dataclass(slots=True)
class Segments:
    """Closed billing segments: one replica in one role from ``start`` to ``bill_end``.

    ``ready_at`` is when it became ready in that role and ``stop`` when it stopped taking traffic.
    """

    kind: list[int] = dataclasses.field(default_factory=list)
    start: list[float] = dataclasses.field(default_factory=list)
    ready_at: list[float] = dataclasses.field(default_factory=list)
    stop: list[float] = dataclasses.field(default_factory=list)
    bill_end: list[float] = dataclasses.field(default_factory=list)

    def add(self, *, kind: int, start: float, ready_at: float, stop: float, bill_end: float) -> None:
        """Record one segment; returns nothing."""
        self.kind.append(kind)
        self.start.append(start)
        self.ready_at.append(ready_at)
        self.stop.append(stop)
        self.bill_end.append(bill_end)

    def arrays(self, kind: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Return (start, ready_at, stop, bill_end) arrays of the segments of one kind."""
        k = np.asarray(self.kind, dtype=np.int64)
        pick = k == kind
        cols = (self.start, self.ready_at, self.stop, self.bill_end)
        out = [np.asarray(c, dtype=np.float64)[pick] for c in cols]
        return out[0], out[1], out[2], out[3]

    def billed_seconds(self, kind: int) -> float:
        """Return the seconds billed for segments of one kind."""
        start, _, _, bill_end = self.arrays(kind)
        return float(np.sum(bill_end - start))


class Fleet:
    """The replicas and standby replicas of one model; ``drain_end(rid, now)`` says when a replica empties."""

    def __init__(
        self,
        *,
        lead: LeadTimes,
        warm: int,
        drain_end: Callable[[int, float], float],
        cold: Callable[[], float] | None = None,
    ) -> None:
        self._cold_seconds = lead.cold_start_seconds
        self._draw = cold
        self._serial = 0
        self._promote = lead.standby_promotion_seconds
        self._drain_end = drain_end
        self._serving: list[_Replica] = []
        self._standby: list[_Replica] = []
        self._free_ids: list[int] = []
        self._next_id = 0
        self.segments = Segments()
        self.serving_changed = True
        for _ in range(warm):
            self._serving.append(_Replica(self._new_id(), 0.0, 0.0))

    def _start(self, now: float) -> _Replica:
        """Return a new pod requested at ``now``, with its cold start."""
        cold = self._draw() if self._draw is not None else self._cold_seconds
        self._serial += 1
        return _Replica(self._new_id(), now, now + cold, self._serial, now, now + cold)

    def pods(self) -> list[Pod]:
        """Return (serial, created, first Ready) of every pod started during the run, serving or standby."""
        return [(r.pod, r.created, r.pod_ready) for r in (*self._serving, *self._standby) if r.pod >= 0]

    @property
    def id_capacity(self) -> int:
        """Return one more than the largest replica id ever handed out."""
        return self._next_id

    def _new_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop()
        self._next_id += 1
        return self._next_id - 1

    def counts(self, *, now: float) -> tuple[int, int, int, int]:
        """Return (replicas ready, replicas starting, standby ready, standby starting) at ``now``."""
        ready = sum(1 for r in self._serving if r.ready_at <= now)
        sb_ready = sum(1 for r in self._standby if r.ready_at <= now)
        return ready, len(self._serving) - ready, sb_ready, len(self._standby) - sb_ready

    def serving(self) -> tuple[list[int], list[float]]:
        """Return the ids and ready times of the serving replicas (ready or still starting)."""
        return [r.rid for r in self._serving], [r.ready_at for r in self._serving]

    def apply(self, *, replicas: int, standby: int, now: float) -> None:
        """Move towards ``replicas`` serving and ``standby`` standby replicas at ``now``; returns nothing."""
        if replicas > len(self._serving):
            self._grow(replicas - len(self._serving), now=now)
        elif replicas < len(self._serving):
            self._shrink(len(self._serving) - replicas, now=now)
        if standby > len(self._standby):
            for _ in range(standby - len(self._standby)):
                self._standby.append(self._start(now))
        elif standby < len(self._standby):
            self._shrink_standby(len(self._standby) - standby, now=now)

    def _grow(self, count: int, *, now: float) -> None:
        ready_sb = sorted((r for r in self._standby if r.ready_at <= now), key=lambda r: r.ready_at)
        for sb in ready_sb[:count]:
            self._standby.remove(sb)
            self.segments.add(kind=STANDBY, start=sb.since, ready_at=sb.ready_at, stop=now, bill_end=now)
            self._serving.append(_Replica(sb.rid, now, now + self._promote, sb.pod, sb.created, sb.pod_ready))
        for _ in range(count - min(count, len(ready_sb))):
            self._serving.append(self._start(now))
        self.serving_changed = True

    def _shrink(self, count: int, *, now: float) -> None:
        starting = sorted((r for r in self._serving if r.ready_at > now), key=lambda r: -r.ready_at)
        ready = [r for r in self._serving if r.ready_at <= now]
        drains = {r.rid: self._drain_end(r.rid, now) for r in ready}
        ready.sort(key=lambda r: drains[r.rid])
        for rep in (starting + ready)[:count]:
            self._serving.remove(rep)
            bill_end = drains.get(rep.rid, now)
            self.segments.add(kind=SERVE, start=rep.since, ready_at=rep.ready_at, stop=now, bill_end=bill_end)
            self._free_ids.append(rep.rid)
        self.serving_changed = True

    def _shrink_standby(self, count: int, *, now: float) -> None:
        order = sorted(self._standby, key=lambda r: (r.ready_at <= now, -r.ready_at))
        for rep in order[:count]:
            self._standby.remove(rep)
            self.segments.add(kind=STANDBY, start=rep.since, ready_at=rep.ready_at, stop=now, bill_end=now)
            self._free_ids.append(rep.rid)

    def close(self, *, end: float) -> None:
        """End the run at ``end``: close every open segment and cap drains at ``end``; returns nothing."""
        for rep in self._serving:
            self.segments.add(kind=SERVE, start=rep.since, ready_at=rep.ready_at, stop=end, bill_end=end)
        for rep in self._standby:
            self.segments.add(kind=STANDBY, start=rep.since, ready_at=rep.ready_at, stop=end, bill_end=end)
        self._serving = []
        self._standby = []
        self.segments.bill_end = [min(b, end) for b in self.segments.bill_end]
        self.segments.start = [min(s, end) for s in self.segments.start]


def mean_coverage(starts: FloatArray, ends: FloatArray, edges: FloatArray) -> FloatArray:
    """Return, per bin ``[edges[k], edges[k+1])``, the mean count of intervals ``[starts, ends)`` over it."""
    s = np.sort(starts)
    e = np.sort(np.maximum(ends, starts))
    cs = np.concatenate(([0.0], np.cumsum(s)))
    ce = np.concatenate(([0.0], np.cumsum(e)))
    ks = np.searchsorted(s, edges, side="right")
    ke = np.searchsorted(e, edges, side="right")
    integral = (ks * edges - cs[ks]) - (ke * edges - ce[ke])
    widths = np.diff(edges)
    return np.diff(integral) / np.where(widths > 0, widths, 1.0)


def replica_series(segments: Segments, edges: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return mean (replicas ready, replicas starting, standby ready) per bin of ``edges``."""
    start, ready_at, stop, _ = segments.arrays(SERVE)
    ready_from = np.minimum(ready_at, stop)
    ready = mean_coverage(ready_from, stop, edges)
    starting = mean_coverage(start, ready_from, edges)
    _, sb_ready_at, sb_stop, _ = segments.arrays(STANDBY)
    sb_ready = mean_coverage(np.minimum(sb_ready_at, sb_stop), sb_stop, edges)
    return ready, starting, sb_ready
