"""The shadow ledger of one model: what the capacity in force cost, and each request's SLO outcome.

Pure; time is ``now=``. The prices, hold times and SLO targets are the cluster model's, from
:mod:`scaler.core.accounting` (the simulator bills with the same functions).

**Cost.** The controller reports the capacity it observes (:meth:`Ledger.observe`: replicas ready or
starting, standby ready or starting, provisioned serverless: the executor's read-back where it read
one, else the replica metric events). The capacity seen at ``t_k`` prices the time since the
previous observation ``t_{k-1}``: a read-back at a decision shows what the previous decision put in
force. A gap longer than :data:`MAX_GAP_SECONDS` (a daemon that was down) is left unpriced and
counted in ``unpriced_seconds``. Provisioned serverless is billed only as a read-back shows it (no
event carries it): priced without one (dry-run, no serverless target, a failed read) it is billed
as 0 and, where the policy prices provisioned instances, the seconds count in
``serverless_unobserved_seconds``, so that 0 reads "unknown", not "none ran". Serverless work is
priced per request at its ``finish`` event when that event, or an earlier one of the request, says
``backend: serverless``: its busy instance-seconds ``S/C`` and its prompt and output tokens.
Replicas draining after a scale-down are not in any read-back, so unlike the simulator the ledger
does not bill their drain.

**SLO.** Requests are matched by ``request_id``:

* ``first_token``: TTFT is its ``ts`` minus the arrival's ``ts``, queue wait TTFT minus ``P/Tp``;
  the outcome is ``met`` or ``missed``, source ``measured``;
* ``reject``: ``missed``, ``measured`` (a reject is a miss whether or not its arrival was seen);
* ``finish`` with no first token seen: the cluster model's estimate, source ``estimated``: queue
  wait ``max(0, finish - arrival - S)``, TTFT that plus ``P/Tp``;
* no verdict for :data:`PENDING_SECONDS` after the arrival, a first token or finish whose arrival
  was never seen (it came before this process owned the model), or an arrival pushed out when
  :data:`MAX_PENDING` requests are open: ``unknown``, source ``none``.

Each request is judged once while it is in memory (until its finish, or :data:`PENDING_SECONDS`),
however often its events are delivered (Kafka delivers at least once). Attainment is
met / (met + missed): unknown requests are left out, not counted as misses. In memory a request is
60 bits of its id's hash and its arrival time (about 95 bytes of memory in a dict, where the id itself
would take another 80-150): two requests of one model open at once whose ids hash alike in those bits
would be taken for one (odds about n²/2^61 with n open: 1e-9 at :data:`MAX_PENDING`).

**Intervals.** :meth:`Ledger.close_interval` ends the interval at a decision and returns what the
previous decision predicted it would cost (its ``cost_per_hour["chosen"]`` over the interval) beside
what the ledger measured. The totals and the interval basis are checkpointed (:meth:`Ledger.state`);
open requests are not (after a handover their later events count as unknown).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Final, Literal

from scaler.core import accounting
from scaler.core.accounting import NO_COST, CostBreakdown
from scaler.core.events import RequestEvent
from scaler.core.policy import ModelPolicy
from scaler.core.types import Observed

Outcome = Literal["met", "missed", "unknown"]
Source = Literal["measured", "estimated", "none"]

MAX_GAP_SECONDS: Final = 600.0  # a longer gap between two capacity observations is not priced
PENDING_SECONDS: Final = 600.0  # an arrival without a verdict for this long is unknown
MAX_PENDING: Final = 50_000  # requests kept per model and book (~90 B each); beyond, the oldest go
_EVICT_SHARE: Final = 0.05  # pushed out at once when full (one scan, not one per arrival)
_STATE_VERSION: Final = 1
# the book key: 60 bits of the id's hash, an int of two 30-bit digits (a 32-byte block where the full
# 64-bit hash takes three digits and a 48-byte block): 14 B less per open request on average
_KEY_MASK: Final = (1 << 60) - 1
MET_MEASURED, MET_ESTIMATED, MISSED_MEASURED, MISSED_ESTIMATED, UNKNOWN = range(5)  # SloCounts order


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SloCounts:
    """Requests judged against the SLO, by outcome and source."""

    met_measured: int = 0
    met_estimated: int = 0
    missed_measured: int = 0
    missed_estimated: int = 0
    unknown: int = 0

    @property
    def met(self) -> int:
        """Return the requests that met the SLO."""
        return self.met_measured + self.met_estimated

    @property
    def missed(self) -> int:
        """Return the requests that missed it (rejects included)."""
        return self.missed_measured + self.missed_estimated

    @property
    def estimated(self) -> int:
        """Return the judged requests whose verdict is an estimate from their finish time."""
        return self.met_estimated + self.missed_estimated

    @property
    def attainment(self) -> float:
        """Return met / (met + missed); NaN when none was judged."""
        judged = self.met + self.missed
        return self.met / judged if judged else math.nan

    def labelled(self) -> Iterator[tuple[Outcome, Source, int]]:
        """Yield ``(outcome, source, count)`` for each combination (the metric's labels)."""
        yield "met", "measured", self.met_measured
        yield "met", "estimated", self.met_estimated
        yield "missed", "measured", self.missed_measured
        yield "missed", "estimated", self.missed_estimated
        yield "unknown", "none", self.unknown

    def minus(self, other: SloCounts) -> SloCounts:
        """Return the counts added since ``other``."""
        return SloCounts(
            met_measured=self.met_measured - other.met_measured,
            met_estimated=self.met_estimated - other.met_estimated,
            missed_measured=self.missed_measured - other.missed_measured,
            missed_estimated=self.missed_estimated - other.missed_estimated,
            unknown=self.unknown - other.unknown,
        )

    def summary(self) -> dict[str, int]:
        """Return ``{met, missed, unknown, estimated}`` (estimated: of met and missed)."""
        return {"met": self.met, "missed": self.missed, "unknown": self.unknown, "estimated": self.estimated}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LedgerInterval:
    """One interval between decisions: what the previous decision predicted, what the ledger measured.

    ``predicted`` is None when there was no previous decision (or it priced nothing); ``total`` and
    ``total_slo`` are the ledger's running totals at ``end``; ``serverless_unobserved_seconds`` the
    priced seconds in it whose provisioned serverless no read-back showed (billed as 0: unknown).
    """

    start: float
    end: float
    predicted: float | None
    realized: CostBreakdown
    slo: SloCounts
    unpriced_seconds: float
    total: CostBreakdown
    total_slo: SloCounts
    serverless_unobserved_seconds: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Unexported:
    """What accrued since the exporter last asked (:meth:`Ledger.take_unexported`)."""

    cost: CostBreakdown
    slo: SloCounts
    predicted: float
    serverless_unobserved_seconds: float = 0.0


class Ledger:
    """Cost of the capacity in force and SLO outcomes of one model's requests (see the module docstring)."""

    __slots__ = (
        "_cost",
        "_counts",
        "_exported_cost",
        "_exported_predicted",
        "_exported_slo",
        "_exported_unobserved",
        "_interval_cost",
        "_interval_slo",
        "_interval_start",
        "_interval_unobserved",
        "_interval_unpriced",
        "_judged",
        "_observed_at",
        "_open",
        "_policy",
        "_predicted",
        "_serverless",
        "_sv_busy",
        "_sv_output",
        "_sv_prompt",
        "_tp",
        "_ttft_target",
        "_unobserved",
        "_unpriced",
        "_wait_target",
        "max_pending",
        "pending_seconds",
    )

    def __init__(self, *, max_pending: int = MAX_PENDING, pending_seconds: float = PENDING_SECONDS) -> None:
        """Create an empty ledger; raise ValueError on a non-positive limit."""
        if max_pending < 1 or not pending_seconds > 0:
            raise ValueError(f"max_pending {max_pending} and pending_seconds {pending_seconds} must be > 0")
        self.max_pending = max_pending
        self.pending_seconds = float(pending_seconds)
        # -- requests, by their id's hash; the hot path touches these plain containers only
        self._open: dict[int, float] = {}  # arrival ts, no verdict yet
        self._judged: dict[int, float] = {}  # arrival ts, verdict given, finish awaited
        self._serverless: set[int] = set()  # open or judged requests an event placed on serverless
        self._counts = [0, 0, 0, 0, 0]  # SloCounts fields, in order
        self._sv_busy = 0.0  # serverless busy instance-seconds not yet priced
        self._sv_prompt = 0.0  # serverless prompt tokens not yet priced
        self._sv_output = 0.0  # serverless output tokens not yet priced
        self._policy: ModelPolicy | None = None  # whose targets these are
        self._ttft_target = self._wait_target = self._tp = math.inf
        # -- capacity and totals
        self._cost = NO_COST
        self._observed_at: float | None = None
        self._unpriced = 0.0
        self._unobserved = 0.0  # priced seconds without a read-back of provisioned serverless
        self._predicted = 0.0
        # -- the interval since the last decision
        self._interval_start: float | None = None
        self._interval_cost = NO_COST
        self._interval_slo = SloCounts()
        self._interval_unpriced = 0.0
        self._interval_unobserved = 0.0
        # -- what the exporter has not seen (per process: never checkpointed)
        self._exported_cost = NO_COST
        self._exported_slo = SloCounts()
        self._exported_predicted = 0.0
        self._exported_unobserved = 0.0

    # -- requests (called per event: keep it cheap) --------------------------------------------------

    def add_request(self, event: RequestEvent, policy: ModelPolicy) -> None:  # noqa: PLR0912  # hot path: one call
        """Take one validated request event into the SLO counts and the serverless bill."""
        kind = event.type
        rid = hash(event.request_id) & _KEY_MASK  # the book key: the id itself is not kept
        if kind == "arrival":
            if rid in self._judged:  # delivered again (at least once): it has its verdict
                return
            opened = self._open
            if len(opened) >= self.max_pending:
                self._push_out(opened)
            opened[rid] = event.ts
            if event.backend == "serverless":
                self._serverless.add(rid)
            return
        if policy is not self._policy:
            self._set_targets(policy)
        counts = self._counts
        if kind == "first_token":
            arrived = self._open.pop(rid, None)
            if len(self._judged) >= self.max_pending:
                self._push_out(self._judged)
            if arrived is not None:
                ttft = event.ts - arrived
                met = ttft <= self._ttft_target and ttft - event.prompt_tokens / self._tp <= self._wait_target
                counts[MET_MEASURED if met else MISSED_MEASURED] += 1
                self._judged[rid] = arrived
            elif rid not in self._judged:  # its arrival came before this process, or never
                counts[UNKNOWN] += 1
                self._judged[rid] = event.ts
            if event.backend == "serverless":
                self._serverless.add(rid)
            return
        if kind == "finish":
            arrived = self._open.pop(rid, None)
            if arrived is not None:  # no first token seen: the cluster model's estimate
                hold = accounting.hold_seconds(policy, float(event.prompt_tokens), float(event.output_tokens))
                wait = max(0.0, event.ts - arrived - hold)
                met = wait + event.prompt_tokens / self._tp <= self._ttft_target and wait <= self._wait_target
                counts[MET_ESTIMATED if met else MISSED_ESTIMATED] += 1
            elif self._judged.pop(rid, None) is None:
                counts[UNKNOWN] += 1
            if event.backend == "serverless" or rid in self._serverless:
                self._serverless.discard(rid)
                hold = accounting.hold_seconds(policy, float(event.prompt_tokens), float(event.output_tokens))
                self._sv_busy += hold / policy.replica.max_concurrency
                self._sv_prompt += event.prompt_tokens
                self._sv_output += event.output_tokens
            return
        # reject: a miss, unless a first token already judged it
        if self._judged.pop(rid, None) is None:
            self._open.pop(rid, None)
            counts[MISSED_MEASURED] += 1
        self._serverless.discard(rid)

    def _set_targets(self, policy: ModelPolicy) -> None:
        """Keep ``policy``'s SLO targets and prefill rate at hand (the hot path reads them per event)."""
        self._ttft_target, self._wait_target = accounting.wait_limit(policy)
        self._tp = policy.replica.prefill_tokens_per_second
        self._policy = policy

    def _push_out(self, book: dict[int, float]) -> None:
        """Make room in ``book``: its oldest entries go (open requests as unknown, judged ones silently)."""
        oldest = list(itertools.islice(book, max(1, int(self.max_pending * _EVICT_SHARE))))
        for rid in oldest:
            del book[rid]
        if self._serverless:
            self._serverless.difference_update(oldest)
        if book is self._open:
            self._counts[UNKNOWN] += len(oldest)

    def _expire(self, *, now: float) -> None:
        """Count open requests older than ``pending_seconds`` as unknown; forget old judged ones."""
        cutoff = now - self.pending_seconds
        for book in (self._open, self._judged):
            stale = []
            for rid, ts in book.items():  # oldest first (insertion order): stop at the first fresh one
                if ts >= cutoff:
                    break
                stale.append(rid)
            for rid in stale:
                del book[rid]
            if self._serverless:
                self._serverless.difference_update(stale)
            if book is self._open:
                self._counts[UNKNOWN] += len(stale)

    @property
    def open_requests(self) -> int:
        """Return the requests kept in memory (awaiting a verdict or a finish)."""
        return len(self._open) + len(self._judged)

    # -- capacity -----------------------------------------------------------------------------------

    def observe(
        self, *, now: float, policy: ModelPolicy, capacity: Observed, serverless_observed: bool = True
    ) -> None:
        """Price the time since the previous observation at ``capacity``; expire stale open requests.

        An observation earlier than the previous one prices nothing. Without ``serverless_observed``
        (no read-back showed provisioned serverless) none is billed, whatever ``capacity`` says, and
        the seconds count in :attr:`serverless_unobserved_seconds` where the policy prices it.
        """
        self._settle(policy)
        last = self._observed_at
        if last is None or now > last:
            self._observed_at = now
        if last is not None and now > last:
            seconds = now - last
            if seconds > MAX_GAP_SECONDS:
                self._unpriced += seconds
            else:
                replicas = capacity.replicas_ready + capacity.replicas_starting
                standby = capacity.standby_ready + capacity.standby_starting
                provisioned = capacity.serverless_provisioned if serverless_observed else 0
                if not serverless_observed and policy.serverless_provisioned_price > 0:
                    self._unobserved += seconds
                self._cost = self._cost.plus(
                    accounting.bill(
                        policy,
                        replica_seconds=replicas * seconds,
                        standby_seconds=standby * seconds,
                        provisioned_seconds=provisioned * seconds,
                    )
                )
        self._expire(now=now)

    def _settle(self, policy: ModelPolicy) -> None:
        """Price the serverless work taken in since the last settlement at ``policy``'s prices."""
        if self._sv_busy or self._sv_prompt or self._sv_output:
            self._cost = self._cost.plus(
                accounting.bill(
                    policy,
                    serverless_busy_seconds=self._sv_busy,
                    prompt_tokens=self._sv_prompt,
                    output_tokens=self._sv_output,
                )
            )
            self._sv_busy = self._sv_prompt = self._sv_output = 0.0

    def close_interval(
        self,
        *,
        now: float,
        policy: ModelPolicy,
        capacity: Observed,
        predicted_per_hour: float | None,
        serverless_observed: bool = True,
    ) -> LedgerInterval:
        """Observe ``capacity``, end the interval at ``now`` and return it; the next one starts at ``now``.

        ``predicted_per_hour`` is the previous decision's $/h for its chosen mix (None: none made);
        ``serverless_observed`` as for :meth:`observe`.
        """
        self.observe(now=now, policy=policy, capacity=capacity, serverless_observed=serverless_observed)
        start = self._interval_start if self._interval_start is not None else now
        seconds = max(0.0, now - start)
        predicted = None
        if predicted_per_hour is not None and math.isfinite(predicted_per_hour) and seconds > 0:
            predicted = max(0.0, predicted_per_hour) * seconds / 3600.0
            self._predicted += predicted
        total_slo = self.slo
        interval = LedgerInterval(
            start=start,
            end=now,
            predicted=predicted,
            realized=self._cost.minus(self._interval_cost),
            slo=total_slo.minus(self._interval_slo),
            unpriced_seconds=self._unpriced - self._interval_unpriced,
            total=self._cost,
            total_slo=total_slo,
            serverless_unobserved_seconds=self._unobserved - self._interval_unobserved,
        )
        self._interval_start = max(now, start)
        self._interval_cost, self._interval_slo = self._cost, total_slo
        self._interval_unpriced, self._interval_unobserved = self._unpriced, self._unobserved
        return interval

    # -- totals -------------------------------------------------------------------------------------

    @property
    def cost(self) -> CostBreakdown:
        """Return the cost priced so far (serverless work up to the last observation or settlement)."""
        return self._cost

    def settled_cost(self, policy: ModelPolicy) -> CostBreakdown:
        """Return the cost so far, every finished serverless request priced at ``policy``'s prices."""
        self._settle(policy)
        return self._cost

    @property
    def slo(self) -> SloCounts:
        """Return the SLO counts so far."""
        c = self._counts
        return SloCounts(
            met_measured=c[0], met_estimated=c[1], missed_measured=c[2], missed_estimated=c[3], unknown=c[4]
        )

    @property
    def predicted(self) -> float:
        """Return the sum of the predictions of every closed interval."""
        return self._predicted

    @property
    def unpriced_seconds(self) -> float:
        """Return the seconds left unpriced (gaps longer than :data:`MAX_GAP_SECONDS`)."""
        return self._unpriced

    @property
    def serverless_unobserved_seconds(self) -> float:
        """Return the priced seconds whose provisioned serverless no read-back showed (billed as 0)."""
        return self._unobserved

    def take_unexported(self, policy: ModelPolicy) -> Unexported:
        """Return what accrued since the last call (or since the ledger was made or restored), as taken."""
        cost, slo = self.settled_cost(policy), self.slo
        out = Unexported(
            cost=cost.minus(self._exported_cost),
            slo=slo.minus(self._exported_slo),
            predicted=self._predicted - self._exported_predicted,
            serverless_unobserved_seconds=self._unobserved - self._exported_unobserved,
        )
        self._exported_cost, self._exported_slo, self._exported_predicted = cost, slo, self._predicted
        self._exported_unobserved = self._unobserved
        return out

    # -- checkpoint ---------------------------------------------------------------------------------

    def state(self, policy: ModelPolicy) -> dict[str, object]:
        """Return the totals and the interval basis as JSON-ready data (open requests are not kept)."""
        cost = self.settled_cost(policy)
        return {
            "version": _STATE_VERSION,
            "cost": cost.as_dict(),
            "slo": dataclasses.asdict(self.slo),
            "predicted": self._predicted,
            "unpriced_seconds": self._unpriced,
            "observed_at": self._observed_at,
            "interval_start": self._interval_start,
            "interval_cost": self._interval_cost.as_dict(),
            "interval_slo": dataclasses.asdict(self._interval_slo),
            "interval_unpriced_seconds": self._interval_unpriced,
            "serverless_unobserved_seconds": self._unobserved,
            "interval_serverless_unobserved_seconds": self._interval_unobserved,
        }

    @classmethod
    def from_state(cls, data: object) -> Ledger:
        """Return the ledger saved by :meth:`state`; raise ValueError if ``data`` is not such a state."""
        if not isinstance(data, Mapping):
            raise ValueError("ledger state is not an object")
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"ledger state version {data.get('version')!r}, expected {_STATE_VERSION}")
        ledger = cls()
        ledger._cost = _cost_from(data.get("cost"), "cost")
        ledger._interval_cost = _cost_from(data.get("interval_cost"), "interval_cost")
        slo = _slo_from(data.get("slo"), "slo")
        ledger._counts = [getattr(slo, f.name) for f in dataclasses.fields(SloCounts)]
        ledger._interval_slo = _slo_from(data.get("interval_slo"), "interval_slo")
        ledger._predicted = _amount(data.get("predicted"), "predicted")
        ledger._unpriced = _amount(data.get("unpriced_seconds"), "unpriced_seconds")
        ledger._interval_unpriced = _amount(data.get("interval_unpriced_seconds"), "interval_unpriced")
        # absent from checkpoints written before the ledger counted them: none counted then
        ledger._unobserved = _amount(data.get("serverless_unobserved_seconds", 0.0), "serverless_unobserved")
        ledger._interval_unobserved = _amount(
            data.get("interval_serverless_unobserved_seconds", 0.0), "interval_serverless_unobserved"
        )
        ledger._observed_at = _time(data.get("observed_at"), "observed_at")
        ledger._interval_start = _time(data.get("interval_start"), "interval_start")
        # this process exports only what it measures itself: its counters start from zero
        ledger._exported_cost, ledger._exported_slo = ledger._cost, slo
        ledger._exported_predicted = ledger._predicted
        ledger._exported_unobserved = ledger._unobserved
        return ledger


def _amount(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"ledger state: {name} must be a finite number >= 0, got {value!r:.40}")
    return float(value)


def _time(value: object, name: str) -> float | None:
    return None if value is None else _amount(value, name)


def _cost_from(value: object, name: str) -> CostBreakdown:
    if not isinstance(value, Mapping) or set(value) != set(accounting.COST_KINDS):
        raise ValueError(f"ledger state: {name} must have exactly the kinds {list(accounting.COST_KINDS)}")
    return CostBreakdown(**{kind: _amount(value[kind], f"{name}.{kind}") for kind in accounting.COST_KINDS})


def _slo_from(value: object, name: str) -> SloCounts:
    fields = [f.name for f in dataclasses.fields(SloCounts)]
    if not isinstance(value, Mapping) or set(value) != set(fields):
        raise ValueError(f"ledger state: {name} must have exactly the counts {fields}")
    counts: dict[str, int] = {}
    for field in fields:
        count = value[field]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"ledger state: {name}.{field} must be a whole number >= 0, got {count!r:.40}")
        counts[field] = count
    return SloCounts(**counts)
