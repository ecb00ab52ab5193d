"""Measured lead times: per model, the cold starts observed, and the quantile the planner leads by. Pure.

Observations (:class:`ColdStart`) come from the Kubernetes API (a pod's ``creationTimestamp`` ->
its ``Ready`` condition's ``lastTransitionTime``, through the executor's read-back) and from the
``ready`` transitions of replica metric events (first ``ready: false`` -> first ``ready: true`` of a
replica). Each pod is counted once (by name, and uid where known); a Kubernetes observation
replaces one of the same pod taken from events (its start is the pod's creation, not its first
metric).

The distribution is bounded: the last :data:`WINDOW` observations per kind. Two lead times are read
off it, both clamped to the policy's ``[floor, ceiling]`` (:meth:`scaler.core.policy.LeadTimes.bounds`)
and both the configured value until ``min_observations`` were seen: the *coverage* lead
(``lead_times.quantile``, p90: what standby and serverless must span while replicas start) and the
*typical* lead (``lead_times.lifetime_quantile``, default 0: the fastest start seen, at most the
coverage lead: where the lifetime a new replica is sized for begins).

Serverless warm-ups come from the backend's read-back (source ``backend``): when the instances ready
fall short of those provisioned, a warm-up starts at that read-back (the one the rise was applied after)
and ends at the first read-back with the instances asked for ready. Read-backs come once per decision,
so a warm-up is known to within one decision interval, and is counted long rather than short.

Bad or missing observations never pull a lead time below the floor, and never shrink it at all:

* a negative duration, a non-finite time, or a time more than :data:`SKEW_SECONDS` ahead of ``now``
  (clock skew) is refused and counted;
* a pod not Ready yet is *pending*: once its age exceeds the current estimate it counts as a
  censored observation of at least its age (it can only raise the estimate; a pod unreported for
  :data:`STALE_SECONDS` stops ageing at its last sighting); a pending pod no longer
  reported for :data:`PENDING_EXPIRY_SECONDS` is kept as such a censored observation if it had
  outgrown the estimate, else forgotten (a start cancelled by a scale-down says nothing);
* a pod first seen already Ready long ago (it started before the daemon watched, or its Ready
  condition flapped later) is not a cold start and is ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Final, Literal

from scaler.core.policy import LeadKind, LeadTimes

Source = Literal["kubernetes", "events", "backend"]
Result = Literal["counted", "replaced", "pending", "seen", "ignored", "refused"]

WINDOW: Final = 64  # observations kept per kind
MAX_KEYS: Final = 1024  # pods remembered as counted or pending
CHECKPOINT_KEYS: Final = 256  # counted pods a checkpoint keeps (the rest would only be re-refused)
SKEW_SECONDS: Final = 60.0  # a timestamp further ahead of now than this is clock skew
RECENT_READY_SECONDS: Final = 300.0  # a pod first seen Ready counts only if it became Ready this recently
PENDING_EXPIRY_SECONDS: Final = 900.0  # a pending pod unreported this long is closed
STALE_SECONDS: Final = 120.0  # a pending pod unreported this long stops ageing
KINDS: Final[tuple[LeadKind, ...]] = ("replica", "serverless")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ColdStart:
    """One start of capacity as read: ``ready_at`` None while it is not ready yet."""

    key: str
    started_at: float
    ready_at: float | None
    kind: LeadKind = "replica"
    source: Source = "kubernetes"
    uid: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeadEstimate:
    """The lead times of one kind: what is used, what is configured, what was learned, and from how much.

    ``seconds`` is the coverage lead (``lead_times.quantile``), ``typical`` the typical one
    (``lead_times.lifetime_quantile``, at most ``seconds``); ``learned``/``learned_typical`` are
    None while the configured value is used for both.
    """

    kind: LeadKind
    seconds: float  # the coverage lead the planner uses
    configured: float
    learned: float | None  # the clamped quantile of the observations (None: too few yet, or learning off)
    observations: int
    censored: int  # of which lower bounds (pods that had not become Ready)
    pending: int
    refused: int
    typical: float  # the typical lead the planner uses
    learned_typical: float | None
    quantile: float = 0.9  # lead_times.quantile, of the coverage lead
    typical_quantile: float = 0.0  # of the typical lead (LeadTimes.typical_quantile)

    @property
    def source(self) -> Literal["learned", "configured"]:
        """Return ``learned`` when the planner uses the learned value, else ``configured``."""
        return "learned" if self.learned is not None else "configured"


@dataclasses.dataclass(slots=True)
class _Sample:
    key: str
    seconds: float
    source: Source
    censored: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _WarmUp:
    key: str
    started_at: float
    level: int  # the provisioned instances it waits for


@dataclasses.dataclass(slots=True)
class _Pending:
    kind: LeadKind
    started_at: float
    last_seen: float
    source: Source


class LeadTimeLearner:
    """The cold starts of one model and the lead times they give (see the module docstring)."""

    def __init__(self) -> None:
        """Create a learner with no observations (every lead time is the configured one)."""
        # a kind's window is made at its first sample: most models never see a cold start, and an empty
        # deque takes 760 B (10,000 models: 15 MB for two kinds)
        self._samples: dict[LeadKind, collections.deque[_Sample]] = {}
        self._counted: collections.OrderedDict[str, str | None] = collections.OrderedDict()
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self.refused: dict[LeadKind, int] = dict.fromkeys(KINDS, 0)
        self._warming: _WarmUp | None = None  # the serverless warm-up in progress (not checkpointed)

    # -- observe ------------------------------------------------------------------------------------

    def observe(self, start: ColdStart, *, lead: LeadTimes, now: float) -> Result:
        """Take one observation at ``now``; return what became of it (``refused``: bad, and counted)."""
        ready = start.ready_at
        times = (start.started_at, now) if ready is None else (start.started_at, ready, now)
        if not all(math.isfinite(t) for t in times) or max(times[:-1]) > now + SKEW_SECONDS:
            self.refused[start.kind] += 1
            return "refused"
        if ready is not None and ready < start.started_at:
            self.refused[start.kind] += 1
            return "refused"
        if start.key in self._counted:
            known_uid = self._counted[start.key]
            if start.uid is None or known_uid is None or start.uid == known_uid:
                return self._again(start)
            del self._counted[start.key]  # the same name, a new pod (a StatefulSet's): start afresh
            self._drop(start.key)
        pending = self._pending.get(start.key)
        if ready is None:
            if pending is None:
                self._pending[start.key] = _Pending(start.kind, start.started_at, now, start.source)
                self._trim(self._pending)
            else:
                pending.started_at = min(pending.started_at, start.started_at)
                pending.last_seen = now
            return "pending"
        if pending is None:
            _, ceiling = lead.bounds(start.kind)
            if now - ready > RECENT_READY_SECONDS or ready - start.started_at > 2.0 * ceiling:
                return "ignored"  # Ready before we watched: not a cold start we saw
            began = start.started_at
        else:
            del self._pending[start.key]
            began = min(pending.started_at, start.started_at)
        self._count(start, seconds=ready - began, censored=False)
        return "counted"

    def observe_metric(self, *, replica: str, ts: float, ready: bool, lead: LeadTimes, now: float) -> Result:
        """Take a replica metric event: ``ready: false`` opens a start at ``ts``, ``ready: true`` closes it.

        A replica first heard of as ready says nothing (its start is unknown).
        """
        if not ready:
            return self.observe(
                ColdStart(key=replica, started_at=ts, ready_at=None, source="events"), lead=lead, now=now
            )
        pending = self._pending.get(replica)
        if pending is None or replica in self._counted:
            return "seen" if replica in self._counted else "ignored"
        return self.observe(
            ColdStart(key=replica, started_at=pending.started_at, ready_at=ts, source="events"),
            lead=lead,
            now=now,
        )

    def observe_provisioned(
        self, *, provisioned: int, ready: int, at: float, lead: LeadTimes, now: float
    ) -> Result | None:
        """Take a serverless read-back taken ``at``: ``provisioned`` instances, ``ready`` of them warm.

        Return what became of the warm-up it continues or ends (None: none in progress). A warm-up that
        was asked for less before it was done says nothing, like a start cancelled by a scale-down.
        """
        warming = self._warming
        if warming is None:
            if ready >= provisioned:
                return None
            warming = self._warming = _WarmUp(key=f"serverless@{at:.3f}", started_at=at, level=provisioned)
        done = ready >= warming.level
        if done or (provisioned < warming.level and ready >= provisioned):
            self._warming = None
            if not done:
                self._pending.pop(warming.key, None)
                return None
        start = ColdStart(
            key=warming.key,
            started_at=warming.started_at,
            ready_at=at if done else None,
            kind="serverless",
            source="backend",
        )
        return self.observe(start, lead=lead, now=now)

    def observe_all(self, starts: tuple[ColdStart, ...], *, lead: LeadTimes, now: float) -> None:
        """Take every observation of one read, then close pending pods unreported for a while."""
        for start in starts:
            self.observe(start, lead=lead, now=now)
        self._expire(lead=lead, now=now)

    def _again(self, start: ColdStart) -> Result:
        """Return what a second sighting of a counted pod does: kubernetes replaces what events said,
        anything else was seen already."""
        if start.source == "kubernetes" and start.ready_at is not None:
            for sample in self._samples.get(start.kind, ()):
                if sample.key == start.key and sample.source == "events":
                    sample.seconds, sample.source = start.ready_at - start.started_at, "kubernetes"
                    self._counted[start.key] = start.uid
                    return "replaced"
        return "seen"

    def _count(self, start: ColdStart, *, seconds: float, censored: bool) -> None:
        self._window(start.kind).append(_Sample(start.key, seconds, start.source, censored))
        self._counted[start.key] = start.uid
        self._trim(self._counted)

    def _window(self, kind: LeadKind) -> collections.deque[_Sample]:
        """Return the samples of ``kind``, made empty at the first call."""
        samples = self._samples.get(kind)
        if samples is None:
            samples = self._samples[kind] = collections.deque(maxlen=WINDOW)
        return samples

    def _drop(self, key: str) -> None:
        for samples in self._samples.values():
            for sample in list(samples):
                if sample.key == key:
                    samples.remove(sample)

    def _expire(self, *, lead: LeadTimes, now: float) -> None:
        """Close pending pods unreported for :data:`PENDING_EXPIRY_SECONDS` (censored if they outgrew it)."""
        for key, pending in list(self._pending.items()):
            if now - pending.last_seen <= PENDING_EXPIRY_SECONDS:
                continue
            del self._pending[key]
            age = pending.last_seen - pending.started_at
            if age > self.estimate(lead, pending.kind, now=pending.last_seen).seconds:
                start = ColdStart(
                    key=key, started_at=pending.started_at, ready_at=None, kind=pending.kind,
                    source=pending.source,
                )
                self._count(start, seconds=age, censored=True)

    @staticmethod
    def _trim(mapping: collections.OrderedDict[str, Any]) -> None:
        while len(mapping) > MAX_KEYS:
            mapping.popitem(last=False)

    # -- estimate -----------------------------------------------------------------------------------

    def estimate(self, lead: LeadTimes, kind: LeadKind, *, now: float) -> LeadEstimate:
        """Return the lead times of ``kind`` at ``now``: the configured one, or the learned quantiles."""
        configured = lead.configured(kind)
        samples = self._samples.get(kind, ())
        pending = [_age(p, now=now) for p in self._pending.values() if p.kind == kind]
        censored = sum(1 for s in samples if s.censored)
        common: dict[str, Any] = {
            "kind": kind, "configured": configured, "observations": len(samples), "censored": censored,
            "pending": len(pending), "refused": self.refused[kind], "quantile": lead.quantile,
            "typical_quantile": lead.typical_quantile,
        }
        if not lead.learn:
            return _configured(configured, common)
        values = [s.seconds for s in samples]
        enough = len(values) >= lead.min_observations
        coverage = self._learned(lead, kind, values, pending, q=lead.quantile, enough=enough)
        if coverage is None:
            return _configured(configured, common)
        typical = self._learned(lead, kind, values, pending, q=lead.typical_quantile, enough=enough)
        typical = coverage if typical is None else min(typical, coverage)
        return LeadEstimate(
            seconds=coverage, learned=coverage, typical=typical, learned_typical=typical, **common
        )

    @staticmethod
    def _learned(
        lead: LeadTimes, kind: LeadKind, values: list[float], pending: list[float], *, q: float, enough: bool
    ) -> float | None:
        """Return the clamped ``q`` quantile of ``values``, raised by pending starts that outgrew it
        (censored: at least their age); None when there are too few values and no pending start outgrew
        the configured value."""
        base = _quantile(values, q) if enough else lead.configured(kind)
        outgrown = [age for age in pending if age > base]
        if outgrown:
            raised = _quantile(values + outgrown, q) if enough else max(outgrown)
            base = max(base, raised)
        elif not enough:
            return None
        floor, ceiling = lead.bounds(kind)
        return min(max(base, floor), ceiling)

    # -- checkpoint ---------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the learner as JSON-able data (samples, pending pods, the latest counted pods)."""
        counted = list(self._counted.items())[-CHECKPOINT_KEYS:]
        return {
            "samples": {
                kind: [[s.key, s.seconds, s.source, s.censored] for s in self._samples.get(kind, ())]
                for kind in KINDS
            },
            "pending": [[k, p.kind, p.started_at, p.last_seen, p.source] for k, p in self._pending.items()],
            "counted": [[k, uid] for k, uid in counted],
            "refused": dict(self.refused),
        }

    @classmethod
    def from_state(cls, state: object) -> LeadTimeLearner:
        """Return the learner saved by :meth:`to_state`; raise ValueError if ``state`` does not fit."""
        if not isinstance(state, dict):
            raise ValueError("lead times: not an object")
        learner = cls()
        try:
            for kind, rows in dict(state.get("samples", {})).items():
                if kind not in KINDS:
                    raise ValueError(f"unknown kind {kind!r}")
                for key, seconds, source, censored in rows[-WINDOW:]:
                    value = float(seconds)
                    if not (math.isfinite(value) and value >= 0.0):
                        raise ValueError(f"bad duration {seconds!r}")
                    learner._window(kind).append(_Sample(str(key), value, _source(source), bool(censored)))
            for key, kind, started, seen, source in state.get("pending", [])[-MAX_KEYS:]:
                if kind not in KINDS:
                    raise ValueError(f"unknown kind {kind!r}")
                learner._pending[str(key)] = _Pending(kind, float(started), float(seen), _source(source))
            for key, uid in state.get("counted", [])[-MAX_KEYS:]:
                learner._counted[str(key)] = None if uid is None else str(uid)
            for kind, count in dict(state.get("refused", {})).items():
                if kind in KINDS:
                    learner.refused[kind] = int(count)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"lead times do not fit: {exc}") from None
        return learner


def _configured(configured: float, common: dict[str, Any]) -> LeadEstimate:
    """Return the estimate that uses the configured value for both leads."""
    return LeadEstimate(seconds=configured, learned=None, typical=configured, learned_typical=None, **common)


def _age(pending: _Pending, *, now: float) -> float:
    """Return how long a pending start is known to have lasted: until now while it is still reported,
    else until it was last seen (a pod gone silent may have become Ready, or been deleted)."""
    if now - pending.last_seen <= STALE_SECONDS:
        return now - pending.started_at
    return pending.last_seen - pending.started_at


def _source(value: object) -> Source:
    if value in ("kubernetes", "events", "backend"):
        return value
    raise ValueError(f"unknown source {value!r}")


def _quantile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of ``values`` (the smallest value with at least ``q`` of them at or
    below it: an observed duration, never an interpolation below a real start)."""
    ordered = sorted(values)
    rank = max(math.ceil(q * len(ordered)) - 1, 0)
    return ordered[rank]
