"""Safety shared by every actuator: retries with jittered backoff, timeouts, pacing, dry-run, reporting.

:class:`Actuators` carries a decision to the Kubernetes and serverless adapters for one model:
it reads the current state back, clamps the decision to the policy's bounds
(:func:`scaler.core.actuation.clamp`), changes only what differs, at most once per target every
``min_interval`` seconds, and retries throttling, 5xx, 409 and timeouts with jittered exponential
backoff. In dry-run it logs what it would change and calls nothing that writes. A kind of capacity
that fails ``failure_threshold`` times in a row is reported unavailable (``/metrics`` and the log)
and flagged in the next :class:`~scaler.core.types.Observed` so the planner compensates.
Only the resources named in a policy's ``targets`` are ever passed to an adapter.

A serverless adapter that is also a :class:`TrafficWeightsPort` (SageMaker) splits an endpoint's
traffic between ``primary_variant`` and ``variant_name`` from the decision's ``spill_fraction``:
the weights are read back with the capacity, set only when they differ by more than
:data:`scaler.core.actuation.WEIGHT_TOLERANCE`, in the same call as a capacity change of that
target, paced and dry-run like any other change.

Operators stay in charge (:mod:`scaler.core.operators`): a Kubernetes target read back as paused
(``spillway.io/paused: "true"``) is never written (``scaler_target_paused``); a replica count that
Spillway did not write is an external change, recorded as an Event on the target and counted
(``scaler_external_changes_total``), and kept as a floor while ``behavior.external_changes`` says so
(the controller floors its decisions too; this guard covers a decision made before the change was
seen). Before replicas of a Deployment go down, the pods with the fewest requests in flight are
marked with a low ``controller.kubernetes.io/pod-deletion-cost`` so the ReplicaSet removes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
import tenacity
from prometheus_client import CollectorRegistry, Counter, Gauge

from scaler.core import actuation, operators
from scaler.core.actuation import Change, Kind
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Unavailable
from scaler.ports import (
    Capacity,
    ConflictError,
    KubernetesOperatorsPort,
    KubernetesPort,
    KubeState,
    LabelStandbyPort,
    PermanentError,
    PodInfo,
    ServerlessPort,
    Superseded,
    TrafficWeightsPort,
    TransientError,
)

__all__ = [  # the ports' types are re-exported for the adapters that implement them
    "ActuationError",
    "ActuatorMetrics",
    "Actuators",
    "Capacity",
    "ConflictError",
    "KubeState",
    "KubernetesOperatorsPort",
    "KubernetesPort",
    "PermanentError",
    "PodInfo",
    "RetryPolicy",
    "ServerlessPort",
    "Superseded",
    "TrafficWeightsPort",
    "TransientError",
    "with_retries",
]

T = TypeVar("T")

_CONFLICT_ATTEMPTS = 4  # a 409 earns at least this many attempts: another writer won, the API is up


class ActuationError(Exception):
    """A change could not be made after every retry; the message names the target and the cause.

    ``permanent`` is True when a retry cannot fix it (a PermanentError: configuration or RBAC).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Attempts per call, backoff base and cap, and the timeout of each attempt (seconds)."""

    attempts: int = 4
    base_seconds: float = 0.2
    cap_seconds: float = 5.0
    timeout_seconds: float = 10.0


Sleep = Callable[[float], Awaitable[None]]


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry: RetryPolicy,
    rng: random.Random,
    on_retry: Callable[[str], None] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Return ``op()``'s result, retrying TransientError and timeouts with jittered exponential backoff.

    The loop is tenacity's; the delay is :func:`scaler.core.actuation.backoff_delay` (equal jitter from
    ``rng``) and is slept with ``sleep`` (a Clock's, so tests and the sandbox retry in virtual time).
    Raises ActuationError (naming ``what``) on a PermanentError or once every attempt failed.
    """

    def delay(state: tenacity.RetryCallState) -> float:
        return actuation.backoff_delay(
            attempt=state.attempt_number, base=retry.base_seconds, cap=retry.cap_seconds, jitter=rng.random()
        )

    def report(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(_failure(state.outcome.exception(), retry))

    def exhausted(state: tenacity.RetryCallState) -> bool:
        # a conflict proves the API answers, so it is retried even where one attempt is all a kind gets
        conflict = state.outcome is not None and isinstance(state.outcome.exception(), ConflictError)
        budget = max(retry.attempts, _CONFLICT_ATTEMPTS) if conflict else retry.attempts
        return state.attempt_number >= budget

    retrying = tenacity.AsyncRetrying(
        stop=exhausted,
        wait=delay,
        retry=tenacity.retry_if_exception_type((TransientError, TimeoutError)),
        sleep=sleep,
        before_sleep=report,
        reraise=True,
    )
    tried = 0
    try:
        async for attempt in retrying:
            tried = attempt.retry_state.attempt_number
            with attempt:
                return await asyncio.wait_for(op(), timeout=retry.timeout_seconds)
    except PermanentError as exc:
        raise ActuationError(f"{what}: {exc}", permanent=True) from None
    except (TransientError, TimeoutError) as exc:
        if on_retry is not None:
            on_retry(_failure(exc, retry))
        raise ActuationError(f"{what}: failed {tried} times, last: {_failure(exc, retry)}") from None
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover


def _failure(exc: BaseException | None, retry: RetryPolicy) -> str:
    """Return what an attempt's failure says in logs (a timeout names the per-attempt limit)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {retry.timeout_seconds} s"
    return str(exc)


class ActuatorMetrics:
    """Actuator metrics, registered in the daemon's registry (served on /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the metrics in ``registry``."""
        self.changes = Counter(
            "scaler_actuator_changes",
            "Capacity changes made (or logged in dry-run).",
            ["model", "kind", "dry_run"],
            registry=registry,
        )
        self.retries = Counter(
            "scaler_actuator_retries",
            "API calls retried (throttled, 5xx, conflict, timeout).",
            ["kind", "target"],
            registry=registry,
        )
        self.failures = Counter(
            "scaler_actuator_failures",
            "Reads or changes that failed after every retry.",
            ["kind", "target"],
            registry=registry,
        )
        self.unavailable = Gauge(
            "scaler_capacity_unavailable",
            "1 while a kind of capacity cannot be changed (API failing).",
            ["model", "kind"],
            registry=registry,
        )
        self.clamped = Counter(
            "scaler_actuator_clamped",
            "Decisions clamped to the policy's bounds at actuation.",
            ["model"],
            registry=registry,
        )
        self.paused = Gauge(
            "scaler_target_paused",
            'Kubernetes targets annotated spillway.io/paused: "true" (never written while 1).',
            ["model", "kind"],
            registry=registry,
        )
        self.external_changes = Counter(
            "scaler_external_changes",
            "Replica counts of a target changed outside Spillway (kubectl scale, an operator).",
            ["model", "kind"],
            registry=registry,
        )
        self.drain_marked = Counter(
            "scaler_drain_pods_marked",
            "Pods marked with a low pod-deletion-cost before a scale-in (removed first).",
            ["model"],
            registry=registry,
        )


_FLAG_NAME: dict[Unavailable, str] = {
    Unavailable.KUBERNETES: "kubernetes",
    Unavailable.SERVERLESS: "serverless",
}
_FLAG: dict[Kind, Unavailable] = {
    "replicas": Unavailable.KUBERNETES,
    "standby": Unavailable.KUBERNETES,
    "serverless": Unavailable.SERVERLESS,
}


class Actuators:
    """Reads back and changes the capacity named in each policy's ``targets``, safely."""

    def __init__(
        self,
        *,
        kubernetes: KubernetesPort | None,
        serverless: ServerlessPort | None,
        metrics: ActuatorMetrics,
        dry_run: bool,
        retry: RetryPolicy | None = None,
        min_interval_seconds: float = 0.0,
        failure_threshold: int = 3,
        seed: int | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Create the actuators (an adapter of None: that kind is never actuated; ``sleep``: a Clock's)."""
        self.kubernetes = kubernetes
        self.serverless = serverless
        self.metrics = metrics
        self.dry_run = dry_run
        self.retry = retry or RetryPolicy()
        self.pacer = actuation.Pacer(min_interval=min_interval_seconds)
        self.tracker = actuation.FailureTracker(threshold=failure_threshold)
        # (model, target, op) -> kind, while that call fails permanently (reported once, unavailable at once)
        self.permanent: dict[tuple[str, str, str], Unavailable] = {}
        self.rng = random.Random(seed)  # noqa: S311  # jitter, not cryptography
        self.sleep = sleep
        self.log = structlog.get_logger("scaler.actuator")
        # fencing (scaler.executor sets it): asked before every write attempt, retries included
        self.gate: Callable[[str], bool] | None = None
        # Kubernetes target -> the replica count Spillway last wrote (or first read, or accepted)
        self.expected: dict[str, int] = {}
        # Kubernetes target -> the latest change of its replicas made outside Spillway
        self.external: dict[str, operators.ExternalChange] = {}
        self.paused_targets: set[str] = set()
        self._deletion_cost_checked = False  # the API server's version read once, at the first drain

    def _targets(self, policy: ModelPolicy) -> dict[Kind, str]:
        targets: dict[Kind, str] = {}
        spec = policy.targets
        if spec is None:
            return targets
        if spec.kubernetes is not None and self.kubernetes is not None:
            k = spec.kubernetes
            targets["replicas"] = k.key
            standby = k.standby_key
            by_label = k.standby_name is None  # pods of the serving workload, kept out by label
            if standby is not None and (not by_label or isinstance(self.kubernetes, LabelStandbyPort)):
                targets["standby"] = standby
        if spec.serverless is not None and self.serverless is not None:
            targets["serverless"] = spec.serverless.key
        return targets

    def unavailable(self, model: str) -> Unavailable:
        """Return the kinds of capacity of ``model`` that keep failing or fail permanently."""
        flags = self.tracker.unavailable(model)
        for (name, _target, _op), flag in self.permanent.items():
            if name == model:
                flags |= flag
        return flags

    async def _call(
        self, *, model: str, kind: Kind, target: str, op: Callable[[], Awaitable[T]], write: bool = False
    ) -> T | None:
        """Return ``op()`` retried, or None after recording the failure (metrics, log, tracker)."""
        retries = self.metrics.retries.labels(kind=kind, target=target)
        # a kind already unavailable gets one attempt per tick: a dead API must not stall the loop
        retry = (
            dataclasses.replace(self.retry, attempts=1)
            if _FLAG[kind] & self.unavailable(model)
            else self.retry
        )
        if write and self.gate is not None:
            op = _gated(op, model=model, gate=self.gate)
        try:
            result = await with_retries(
                op,
                what=f"{kind} {target}",
                retry=retry,
                rng=self.rng,
                on_retry=lambda _: retries.inc(),
                sleep=self.sleep,
            )
        except FencedError:  # this process may no longer act for the model: nothing written, not a failure
            return None
        except ActuationError as exc:
            self.metrics.failures.labels(kind=kind, target=target).inc()
            flag = _FLAG[kind]
            if exc.permanent:
                self._failed_permanently(model=model, kind=kind, target=target, write=write, error=str(exc))
                return None
            if self.tracker.failed(model, flag, op="write" if write else "read"):
                self.metrics.unavailable.labels(model=model, kind=_FLAG_NAME[flag]).set(1)
                self.log.error("capacity_unavailable", model=model, kind=_FLAG_NAME[flag], error=str(exc))
            else:
                self.log.warning("actuation_failed", model=model, kind=kind, target=target, error=str(exc))
            return None
        flag = _FLAG[kind]
        before = self.unavailable(model)
        self.tracker.succeeded(model, flag, op="write" if write else "read")
        self.permanent.pop((model, target, "write" if write else "read"), None)
        if flag & before and not flag & self.unavailable(model):
            self.metrics.unavailable.labels(model=model, kind=_FLAG_NAME[flag]).set(0)
            self.log.info("capacity_available", model=model, kind=_FLAG_NAME[flag])
        return result

    def _failed_permanently(self, *, model: str, kind: Kind, target: str, write: bool, error: str) -> None:
        """Mark the kind unavailable at once and report the target's error once (until it works again)."""
        key = (model, target, "write" if write else "read")
        if key in self.permanent:
            return
        flag = _FLAG[kind]
        self.permanent[key] = flag
        self.metrics.unavailable.labels(model=model, kind=_FLAG_NAME[flag]).set(1)
        self.log.error(
            "actuation_failed_permanently",
            model=model,
            kind=_FLAG_NAME[flag],
            target=target,
            error=error,
            hint="not retried: fix the connection settings, RBAC or the policy's target",
        )

    async def read(self, policy: ModelPolicy, *, now: float | None = None) -> Capacity:
        """Return the capacity read back from every target of ``policy`` (None where unreadable).

        Kubernetes read-backs carry ``paused`` and the latest external change of each target (seen
        at ``now``, default the wall clock), which is recorded as an Event and counted once.
        """
        spec = policy.targets
        targets = self._targets(policy)
        if spec is None or not targets:
            return Capacity()
        replicas = standby = None
        serverless = None
        kube, aws = self.kubernetes, self.serverless
        if spec.kubernetes is not None and kube is not None:
            k = spec.kubernetes
            if k.standby_label and isinstance(kube, LabelStandbyPort):
                labelled = kube
                split = await self._call(
                    model=policy.name,
                    kind="replicas",
                    target=targets["replicas"],
                    op=lambda: labelled.read_split(k),
                )
                replicas, standby = split if split is not None else (None, None)
            else:
                replicas = await self._call(
                    model=policy.name,
                    kind="replicas",
                    target=targets["replicas"],
                    op=lambda: kube.read(k, name=k.name),
                )
            if k.standby_name is not None:
                standby_name = k.standby_name
                standby = await self._call(
                    model=policy.name,
                    kind="standby",
                    target=targets["standby"],
                    op=lambda: kube.read(k, name=standby_name),
                )
            at = time.time() if now is None else now
            replicas = await self._operators(policy, "replicas", targets, replicas, now=at)
            standby = await self._operators(policy, "standby", targets, standby, now=at)
        if spec.serverless is not None and aws is not None:
            s = spec.serverless
            serverless = await self._call(
                model=policy.name,
                kind="serverless",
                target=targets["serverless"],
                op=lambda: aws.read(s, max_concurrency=policy.replica.max_concurrency),
            )
            if s.weighted is not None and isinstance(aws, TrafficWeightsPort):
                weighted = aws
                weights = await self._call(
                    model=policy.name,
                    kind="serverless",
                    target=targets["serverless"],
                    op=lambda: weighted.read_weights(s),
                )
                return Capacity(replicas=replicas, standby=standby, serverless=serverless, weights=weights)
        return Capacity(replicas=replicas, standby=standby, serverless=serverless)

    async def _operators(
        self,
        policy: ModelPolicy,
        kind: Kind,
        targets: dict[Kind, str],
        state: KubeState | None,
        *,
        now: float,
    ) -> KubeState | None:
        """Return ``state`` with the target's latest external change; report pauses and new changes."""
        if state is None:
            return None
        target = targets[kind]
        self.metrics.paused.labels(model=policy.name, kind=kind).set(1 if state.paused else 0)
        if state.paused != (target in self.paused_targets):
            event = "target_paused" if state.paused else "target_resumed"
            self.log.warning(event, model=policy.name, kind=kind, target=target)
            if state.paused:
                self.paused_targets.add(target)
            else:
                self.paused_targets.discard(target)
        # while paused the operators own the count: it is the new baseline, not an external change
        expected = None if state.paused else self.expected.get(target)
        change = operators.detect_change(
            expected=expected, read=state.desired, at=now, generation=state.generation
        )
        self.expected[target] = state.desired
        if change is not None:
            self.external[target] = change
            await self._report_external(policy, kind=kind, target=target, change=change)
        return dataclasses.replace(state, external=self.external.get(target))

    async def _report_external(
        self, policy: ModelPolicy, *, kind: Kind, target: str, change: operators.ExternalChange
    ) -> None:
        """Count, log and record as an Event (best effort) one external change of ``target``."""
        behavior = policy.behavior
        mode = behavior.external_changes
        handling = (
            f"kept as a floor for {behavior.scale_down_delay_seconds:g} s (scale-down delay)"
            if mode == "respect-for-scale-down-delay"
            else "corrected at once"
        )
        self.metrics.external_changes.labels(model=policy.name, kind=kind).inc()
        self.log.warning(
            "external_change",
            model=policy.name,
            kind=kind,
            target=target,
            previous=change.previous,
            replicas=change.replicas,
            generation=change.generation,
            handling=mode,
        )
        kube, spec = self.kubernetes, policy.targets
        if self.dry_run or not isinstance(kube, KubernetesOperatorsPort) or spec is None:
            return
        k = spec.kubernetes
        if k is None:
            return
        name = k.name if kind == "replicas" else (k.standby_name or k.name)
        message = (
            f"replicas changed outside Spillway: {change.previous} -> {change.replicas}"
            f" (generation {change.generation}); {handling} (behavior.external_changes={mode})"
        )
        try:
            await asyncio.wait_for(
                kube.record_event(
                    k, name=name, reason="SpillwayExternalChange", message=message, warning=True
                ),
                timeout=self.retry.timeout_seconds,
            )
        except TimeoutError:
            return

    async def apply(
        self,
        *,
        policy: ModelPolicy,
        decision: Decision,
        current: Capacity,
        now: float,
        inflight: Mapping[str, int] | None = None,
    ) -> list[Change]:
        """Bring the targets of ``policy`` to ``decision`` (clamped); return the changes made (or logged).

        Skips what already matches ``current``, targets changed less than ``min_interval`` ago, paused
        targets and kinds whose current value could not be read; keeps external changes as floors
        while the policy says so. ``inflight`` (requests in flight per pod, from fresh metric events)
        picks the pods a scale-in removes first. Never raises: failures are recorded.
        """
        targets = self._targets(policy)
        if not targets:
            return []
        decision = self._respect_external(policy=policy, decision=decision, current=current, now=now)
        # the controller already clamped at decision time; this guard only ever catches a bug
        desired, notes = actuation.clamp(policy=policy, decision=decision, now=decision.at)
        if notes:
            self.metrics.clamped.labels(model=policy.name).inc()
            self.log.warning("decision_clamped", model=policy.name, notes=notes)
        known: dict[Kind, int | None] = {
            "replicas": current.replicas.desired if current.replicas else None,
            "standby": current.standby.desired if current.standby else None,
            "serverless": current.serverless.provisioned if current.serverless else None,
        }
        paused = {
            kind
            for kind, state in (("replicas", current.replicas), ("standby", current.standby))
            if state is not None and state.paused
        }
        readable = {k: t for k, t in targets.items() if known[k] is not None and k not in paused}
        weights = self._weights_to_set(policy=policy, decision=decision, current=current)
        made: list[Change] = []
        for change in actuation.changes(desired=desired, current=known, targets=readable):
            if not self.pacer.allowed(change.target, now=now):
                self.log.info("actuation_paced", model=policy.name, kind=change.kind, target=change.target)
                if change.kind == "serverless":
                    weights = None  # same target: weights wait for the next allowed change
                continue
            reason = f"{change.kind} {change.current} -> {change.desired}: {decision.reason}"
            together = weights if change.kind == "serverless" else None
            if change.kind == "serverless":
                weights = None  # set in the same call as the capacity, or not at all this tick
            if self.dry_run:
                self.log.info(
                    "actuation_skipped_dry_run",
                    model=policy.name,
                    kind=change.kind,
                    target=change.target,
                    current=change.current,
                    desired=change.desired,
                    **({"weights": together} if together is not None else {}),
                )
            elif not await self._write(
                policy=policy,
                change=change,
                reason=reason,
                weights=together,
                inflight=inflight or {},
                desired=desired,
            ):
                continue
            self.pacer.record(change.target, now=now)
            self.metrics.changes.labels(
                model=policy.name, kind=change.kind, dry_run=str(self.dry_run).lower()
            ).inc()
            made.append(change)
        if weights is not None:
            await self._set_weights_only(
                policy=policy, weights=weights, target=targets["serverless"], now=now
            )
        return made

    async def _write(
        self,
        *,
        policy: ModelPolicy,
        change: Change,
        reason: str,
        weights: dict[str, float] | None,
        inflight: Mapping[str, int],
        desired: actuation.Desired | None = None,
    ) -> bool:
        """Make ``change`` (marking pods first on a scale-in); return True if it was made."""
        kube = change.kind in ("replicas", "standby")
        if change.kind == "replicas" and change.current is not None and change.desired < change.current:
            await self._mark_for_drain(policy=policy, change=change, inflight=inflight)
        try:
            done = await self._change(
                policy=policy, change=change, reason=reason, weights=weights, desired=desired
            )
        except Superseded as exc:  # the next read-back reports the external change
            self.log.warning("actuation_superseded", model=policy.name, target=change.target, error=str(exc))
            return False
        if not done:
            if kube:
                self.expected.pop(change.target, None)  # unknown whether it landed: re-baseline
            return False
        if kube:
            self.expected[change.target] = change.desired
        return True

    def _respect_external(
        self, *, policy: ModelPolicy, decision: Decision, current: Capacity, now: float
    ) -> Decision:
        """Return ``decision`` raised to the floors of external changes in force (logged when it moves)."""
        external = {
            kind: state.external
            for kind, state in (("replicas", current.replicas), ("standby", current.standby))
            if state is not None and state.external is not None
        }
        if not external:
            return decision
        behavior = policy.behavior
        raised, floors = operators.respect_operators(
            decision,
            state=operators.OperatorState(external=external),
            mode=behavior.external_changes,
            delay_seconds=behavior.scale_down_delay_seconds,
            now=now,
        )
        if raised is not decision:
            self.log.info("external_change_respected", model=policy.name, floors=floors)
        return raised

    async def _mark_for_drain(
        self, *, policy: ModelPolicy, change: Change, inflight: Mapping[str, int]
    ) -> None:
        """Mark the pods to remove first before ``change`` lowers a Deployment's replicas; never raises.

        The pods with the fewest requests in flight get :data:`operators.DRAIN_COST`; pods marked so
        by an earlier scale-in and not picked now are unmarked. A failure is logged and the scale-in
        goes ahead (the ReplicaSet then picks by its own ranking).
        """
        spec = policy.targets
        kube = self.kubernetes
        k = spec.kubernetes if spec is not None else None
        if k is None or k.kind != "Deployment" or not isinstance(kube, KubernetesOperatorsPort):
            return
        if change.current is None:
            return
        count = change.current - change.desired
        what = f"drain {change.target}"
        try:
            pods: list[PodInfo] = await with_retries(
                lambda: kube.list_pods(k, name=k.name),
                what=what,
                retry=self.retry,
                rng=self.rng,
                sleep=self.sleep,
            )
            picked = operators.pods_to_remove(pods=[p.name for p in pods], inflight=inflight, count=count)
            mark = str(operators.DRAIN_COST)
            for pod in pods:
                wanted = operators.DRAIN_COST if pod.name in picked else None
                if (pod.deletion_cost == mark) == (wanted is not None):
                    continue  # already as wanted (a cost someone else set on an unpicked pod stays)
                await with_retries(
                    functools.partial(kube.set_deletion_cost, k, pod=pod.name, cost=wanted),
                    what=what,
                    retry=self.retry,
                    rng=self.rng,
                    sleep=self.sleep,
                )
        except ActuationError as exc:
            self.log.warning("drain_marking_failed", model=policy.name, target=change.target, error=str(exc))
            return
        if not picked:
            self.log.info(
                "drain_unknown_load", model=policy.name, target=change.target, why="no pod has fresh metrics"
            )
            return
        self.metrics.drain_marked.labels(model=policy.name).inc(len(picked))
        self.log.info(
            "drain_marked",
            model=policy.name,
            target=change.target,
            remove=count,
            pods=picked,
            inflight={pod: inflight[pod] for pod in picked},
        )
        if not self._deletion_cost_checked:
            await self._check_deletion_cost(kube)

    async def _check_deletion_cost(self, kube: KubernetesOperatorsPort) -> None:
        """Warn once when the API server's ReplicaSets ignore the drain marks (before Kubernetes 1.22)."""
        version = await kube.server_version()
        if version is None:
            return  # asked again at the next drain
        self._deletion_cost_checked = True
        honoured = operators.deletion_cost_honoured(*version)
        if honoured is True:
            return
        self.log.warning(
            "drain_marks_may_be_ignored" if honoured is None else "drain_marks_ignored",
            server_version=".".join(version),
            annotation=operators.DELETION_COST_ANNOTATION,
            why=(
                "Kubernetes 1.21 honours it only with the PodDeletionCost feature gate"
                if honoured is None
                else "this Kubernetes version's ReplicaSet controller predates it (1.22+ honours it): "
                "scale-in removes pods by its own ranking, busy ones included"
            ),
        )

    def _weights_to_set(
        self, *, policy: ModelPolicy, decision: Decision, current: Capacity
    ) -> dict[str, float] | None:
        """Return the traffic weights to set for ``decision``, or None (no weights, unread, or equal)."""
        spec = policy.targets
        s = spec.serverless if spec is not None else None
        weighted = s.weighted if s is not None else None
        if weighted is None or current.weights is None:
            return None
        if not isinstance(self.serverless, TrafficWeightsPort):
            return None
        wanted = actuation.traffic_weights(
            spill_fraction=decision.spill_fraction, primary=weighted[0], burst=weighted[1]
        )
        return wanted if actuation.weights_differ(current=current.weights, desired=wanted) else None

    async def _set_weights_only(
        self, *, policy: ModelPolicy, weights: dict[str, float], target: str, now: float
    ) -> None:
        """Set the traffic weights alone (capacity unchanged), paced, logged in dry-run; never raises."""
        spec = policy.targets
        s = spec.serverless if spec is not None else None
        aws = self.serverless
        if s is None or not isinstance(aws, TrafficWeightsPort):
            return
        if not self.pacer.allowed(target, now=now):
            self.log.info("actuation_paced", model=policy.name, kind="weights", target=target)
            return
        if self.dry_run:
            self.log.info(
                "actuation_skipped_dry_run", model=policy.name, kind="weights", target=target, weights=weights
            )
        else:
            weighted = aws
            done = await self._call(
                model=policy.name,
                kind="serverless",
                target=target,
                op=_returning_true(
                    lambda: weighted.set_weights(
                        s, weights=weights, instances=None, max_concurrency=policy.replica.max_concurrency
                    )
                ),
                write=True,
            )
            if not done:
                return
            self.log.info("actuated", model=policy.name, kind="weights", target=target, weights=weights)
        self.pacer.record(target, now=now)
        self.metrics.changes.labels(
            model=policy.name, kind="weights", dry_run=str(self.dry_run).lower()
        ).inc()

    async def _change(
        self,
        *,
        policy: ModelPolicy,
        change: Change,
        reason: str,
        weights: dict[str, float] | None = None,
        desired: actuation.Desired | None = None,
    ) -> bool:
        spec = policy.targets
        kube, aws = self.kubernetes, self.serverless
        op: Callable[[], Awaitable[None]]
        if spec is None:  # unreachable: _targets() named this change
            return False
        if change.kind in ("replicas", "standby"):
            k = spec.kubernetes
            if k is None or kube is None:
                return False
            name = k.name if change.kind == "replicas" else (k.standby_name or k.name)
            if isinstance(kube, KubernetesOperatorsPort):  # never over a count changed since the read
                checked = kube
                op = lambda: checked.set_replicas(  # noqa: E731
                    k, name=name, replicas=change.desired, reason=reason, only_from=change.current
                )
            else:
                op = lambda: kube.set_replicas(k, name=name, replicas=change.desired, reason=reason)  # noqa: E731
            if k.standby_label and isinstance(kube, LabelStandbyPort) and desired is not None:
                labelled, want = kube, desired  # one workload: replicas + standby pods, standby by label
                op = lambda: labelled.set_label_standby(  # noqa: E731
                    k, replicas=want.replicas, standby=want.standby, reason=reason
                )
        else:
            s = spec.serverless
            if s is None or aws is None:
                return False
            quota = policy.bounds.serverless_quota
            if weights is not None and isinstance(aws, TrafficWeightsPort):
                weighted = aws
                op = lambda: weighted.set_weights(  # noqa: E731
                    s,
                    weights=weights,
                    instances=change.desired,
                    max_concurrency=policy.replica.max_concurrency,
                )
            else:
                op = lambda: aws.set_provisioned(  # noqa: E731
                    s, instances=change.desired, quota=quota, max_concurrency=policy.replica.max_concurrency
                )
        done = await self._call(
            model=policy.name, kind=change.kind, target=change.target, op=_returning_true(op), write=True
        )
        if done:
            self.log.info(
                "actuated",
                model=policy.name,
                kind=change.kind,
                target=change.target,
                current=change.current,
                desired=change.desired,
            )
        return bool(done)


class FencedError(Exception):
    """A write the fencing gate refused at the moment of the attempt (never retried)."""


def _gated(
    op: Callable[[], Awaitable[T]], *, model: str, gate: Callable[[str], bool]
) -> Callable[[], Awaitable[T]]:
    """Return ``op`` that first asks ``gate(model)`` and raises FencedError if it refuses."""

    async def run() -> T:
        if not gate(model):
            raise FencedError(model)
        return await op()

    return run


def _returning_true(op: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        await op()
        return True

    return run
