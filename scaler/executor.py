"""The executor: publishes decisions and carries them out, off the ingest path (KEDA's ScaleExecutor).

The runtime decides synchronously and hands each decision here with :meth:`Executor.submit`, which
never waits. Then, per model:

* the decision is published at once, in its own task (a slow broker delays publishing, never
  ingest or deciding), after the model's previous decision is sent or has failed: a model's
  decisions reach the topic in the order they were made, outages included; decisions published
  are counted apart from decisions made;
* actuation runs in the model's own worker, latest decision wins: it reads the targets back, applies
  the decision through :class:`scaler.adapters.actuator.Actuators` (clamp guard, idempotence,
  pacing, retries, dry-run) and keeps what it read as the model's :class:`ReadBack` for the next
  decision. A target whose API hangs holds up only its own model's worker; decisions of that model
  are still made and published every interval, and only the newest waits to be applied.

Fencing: with a ``gate`` (:class:`scaler.ports.Gate`), a decision is published, and applied, only
if the gate allows it at that very moment (checked right before the broker call, before each apply
and before each write attempt of it, retries included): a decision made before a pause is never
sent after it by a process that lost the model.

A model with targets is not decided before its first read-back (its worker reads at once when the
model is attached): deciding on nothing could scale a running workload down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

import structlog

from scaler.adapters.actuator import Actuators
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.controller import ReadBack
from scaler.core.actuation import Change
from scaler.core.operators import OperatorState
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Unavailable
from scaler.ports import Capacity, Clock, DecisionObserver, DecisionSink, Gate

MAX_PUBLISHING = 10_000  # decisions in flight to the broker at most; beyond, new ones are counted lost
RELEASE_PUBLISH_SECONDS = 2.0  # how long a revoke waits for decisions of the models it moves to be sent


@dataclasses.dataclass(slots=True)
class _Worker:
    """The actuation state of one model: its task, the newest decision to apply, its read-back."""

    policy: ModelPolicy
    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    pending: Decision | None = None
    inflight: Mapping[str, int] = dataclasses.field(default_factory=dict)
    readback: ReadBack | None = None
    busy: bool = False
    released: bool = False


class Executor:
    """Publishes decisions and applies them per model, never on the caller's path."""

    def __init__(
        self,
        *,
        sink: DecisionSink,
        actuators: Actuators | None,
        metrics: DaemonMetrics,
        clock: Clock,
        observers: Sequence[DecisionObserver] = (),
        gate: Gate | None = None,
    ) -> None:
        """Create an executor; ``actuators`` None means decisions are only published.

        ``observers`` hear of every decision as it is submitted, and of models released; ``gate``
        (fencing) may refuse a publish or an apply at the moment it would happen.
        """
        self.gate = gate
        if gate is not None and actuators is not None:  # every write attempt asks too (retries included)
            actuators.gate = lambda model: gate.allows(model, action="actuate")
        self.sink = sink
        self.observers = list(observers)
        self.actuators = actuators
        self.metrics = metrics
        self.clock = clock
        self.log = structlog.get_logger("scaler.executor")
        self._workers: dict[str, _Worker] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self._last_publish: dict[str, asyncio.Task[None]] = {}  # per model: the newest decision's send

    # -- models -------------------------------------------------------------------------------------

    def attach(self, policy: ModelPolicy) -> None:
        """Start acting for ``policy``'s model: its worker reads the targets back at once."""
        if self.actuators is None:
            return
        worker = self._workers.get(policy.name)
        if worker is not None:
            worker.policy = policy
            return
        worker = _Worker(policy=policy, wake=asyncio.Event())
        worker.task = asyncio.create_task(self._run(policy.name, worker), name=f"actuate:{policy.name}")
        self._workers[policy.name] = worker

    async def release(self, models: frozenset[str]) -> None:
        """Stop acting for ``models``: their workers are cancelled and awaited; nothing more is applied.

        Publishes of their decisions already under way are awaited, at most RELEASE_PUBLISH_SECONDS.
        """
        for observer in self.observers:
            observer.released(models)
        tasks = []
        for model in models:
            worker = self._workers.pop(model, None)
            if worker is not None and worker.task is not None:
                worker.released = True  # seen even if a cancel is lost (asyncio.wait_for before 3.12)
                worker.wake.set()
                worker.task.cancel()
                tasks.append(worker.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        # a decision already handed to the producer is let finish (bounded) before the revoke returns,
        # so it reaches the broker before the next owner's first decision for the model
        names = {f"publish:{model}" for model in models}
        sending = [task for task in self._publishing if task.get_name() in names]
        if sending:
            await asyncio.wait(sending, timeout=RELEASE_PUBLISH_SECONDS)

    def readback(self, model: str) -> ReadBack | None:
        """Return what was last read back from ``model``'s targets (None: no actuation)."""
        worker = self._workers.get(model)
        return worker.readback if worker is not None else None

    def awaiting_first_read(self, model: str) -> bool:
        """Return True while a model with actuation has never had its targets read back."""
        worker = self._workers.get(model)
        return worker is not None and worker.readback is None

    # -- decisions ----------------------------------------------------------------------------------

    def submit(
        self,
        *,
        policy: ModelPolicy,
        decision: Decision,
        payload: Mapping[str, object],
        inflight: Mapping[str, int] | None = None,
    ) -> None:
        """Publish ``payload`` and hand ``decision`` to the model's worker; returns at once.

        ``inflight`` (requests in flight per pod) picks the pods a scale-in removes first.
        """
        model = policy.name
        for observer in self.observers:
            observer.decided(model=model, decision=decision, payload=payload)
        if len(self._publishing) >= MAX_PUBLISHING:
            self.metrics.publish_errors.inc()
            self.log.error("decision_not_published", model=model, error="publish backlog full")
        else:
            after = self._last_publish.get(model)
            task = asyncio.create_task(self._publish(model, payload, after=after), name=f"publish:{model}")
            self._publishing.add(task)
            self._last_publish[model] = task
            task.add_done_callback(self._published)
        worker = self._workers.get(model)
        if worker is not None:
            worker.policy = policy
            worker.pending = decision
            worker.inflight = dict(inflight or {})
            worker.wake.set()

    def _published(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        model = task.get_name().removeprefix("publish:")
        if self._last_publish.get(model) is task:
            del self._last_publish[model]

    async def _publish(
        self, model: str, payload: Mapping[str, object], *, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None and not after.done():  # the model's previous decision goes first
            await asyncio.wait({after})
        if self.gate is not None and not self.gate.allows(model, action="publish"):
            return
        try:
            await self.sink.publish(model=model, payload=payload)
        except ConnectionError as exc:
            self.metrics.publish_errors.inc()
            self.log.error("decision_not_published", model=model, error=str(exc))
            return
        self.metrics.decisions_published.labels(model=model).inc()

    async def _run(self, model: str, worker: _Worker) -> None:
        """Read back at once, then apply every newest decision (never raises but on cancellation)."""
        actuators = self.actuators
        assert actuators is not None
        first = True
        while True:
            if not first:
                await worker.wake.wait()
            if worker.released:
                return
            worker.wake.clear()
            decision, worker.pending = worker.pending, None
            inflight, worker.inflight = worker.inflight, {}
            worker.busy = True
            try:
                read_at = self.clock.now()
                capacity = await actuators.read(worker.policy, now=read_at)
                worker.readback = readback_from(
                    capacity, unavailable=actuators.unavailable(model), read_at=read_at
                )
                if decision is not None and (
                    self.gate is None or self.gate.allows(model, action="actuate")
                ):
                    made = await actuators.apply(
                        policy=worker.policy,
                        decision=decision,
                        current=capacity,
                        now=self.clock.now(),
                        inflight=inflight,
                    )
                    if not actuators.dry_run:  # dry-run changed nothing: the read-back stands
                        worker.readback = _after(worker.readback, made)
            except Exception:  # one model's actuation must never stop its worker
                self.log.exception("actuation_crashed", model=model)
            finally:
                worker.busy = False
            first = False

    async def idle(self) -> None:
        """Wait until every publish is done and every worker has applied what it was given."""
        while True:
            if self._publishing:
                await asyncio.gather(*list(self._publishing), return_exceptions=True)
                continue
            if any(w.busy or w.pending is not None or w.wake.is_set() for w in self._workers.values()):
                await asyncio.sleep(0.001)
                continue
            return

    async def close(self) -> None:
        """Let in-flight publishes finish and stop every worker; never raises (bound it with a timeout)."""
        await asyncio.gather(*list(self._publishing), return_exceptions=True)
        await self.release(frozenset(self._workers))


def readback_from(capacity: Capacity, *, unavailable: Unavailable, read_at: float | None = None) -> ReadBack:
    """Return what ``capacity`` (read at ``read_at``) says as the controller's read-back, with the kinds
    whose API keeps failing and the cold starts of the serving and standby workloads' pods."""
    replicas, standby, serverless = capacity.replicas, capacity.standby, capacity.serverless
    kinds = (("replicas", replicas), ("standby", standby))
    state = OperatorState(
        paused=frozenset(kind for kind, s in kinds if s is not None and s.paused),
        external={kind: s.external for kind, s in kinds if s is not None and s.external is not None},
    )
    pods = (replicas.pods if replicas is not None else ()) + (standby.pods if standby is not None else ())
    return ReadBack(
        replicas_ready=replicas.ready if replicas is not None else None,
        replicas_starting=replicas.starting if replicas is not None else None,
        standby_ready=standby.ready if standby is not None else None,
        standby_starting=standby.starting if standby is not None else None,
        serverless_provisioned=serverless.provisioned if serverless is not None else None,
        serverless_ready=serverless.ready if serverless is not None else None,
        read_at=read_at,
        unavailable=unavailable,
        operators=state,
        cold_starts=pods,
    )


def _after(readback: ReadBack, made: list[Change]) -> ReadBack:
    """Return ``readback`` with the changes just made: new replicas count as starting."""
    fields: dict[str, int] = {}
    for change in made:
        if change.kind == "serverless":
            fields["serverless_provisioned"] = change.desired
            continue
        prefix = "replicas" if change.kind == "replicas" else "standby"
        ready = getattr(readback, f"{prefix}_ready")
        if ready is None:
            continue
        fields[f"{prefix}_ready"] = min(ready, change.desired)
        fields[f"{prefix}_starting"] = max(change.desired - ready, 0)
    return dataclasses.replace(readback, **fields) if fields else readback  # type: ignore[arg-type]
