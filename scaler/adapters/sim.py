"""The simulator behind the actuator ports, for the sandbox and tests: capacity that takes time to start.

:class:`SimKubernetes` (a :class:`~scaler.adapters.actuator.KubernetesPort`) and
:class:`SimServerless` (a :class:`~scaler.adapters.actuator.TrafficWeightsPort`) keep the capacity
of the targets a policy names in memory and model its lead times on the sandbox's virtual clock:

* a new pod, serving or standby, is ready ``lead_times.cold_start_seconds`` after it was requested:
  a standby workload (``standby_name``) is promoted by scaling the serving workload up, whose new
  pods start cold, as in a real cluster (the planner knows: ``ModelPolicy.standby_promotion_seconds``).
  Scaling down
  removes the pods that are not ready first. :meth:`SimKubernetes.read` reports ready and starting
  pods back, as a real cluster does, so the planner sees cold starts through the same port.
* pre-warmed serverless instances are provisioned at once (the count a real API reports back) and
  warm after the backend profile's cold start (:meth:`SimServerless.warm`); they never exceed the
  quota. SageMaker targets also keep traffic weights.

Both record every change (``changes``) and can be made to fail (:meth:`SimFaults.outage`: every
call raises :class:`~scaler.adapters.actuator.TransientError` until a virtual time) so the
sandbox exercises the same safety layer as production: clamp, idempotence, pacing, dry-run,
retries and failure tracking. :func:`sandbox_actuators` builds them for ``scaler run --sandbox
--actuate``, naming simulated targets for the policies that name none.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from scaler.adapters.actuator import ActuatorMetrics, Actuators, KubeState, RetryPolicy, TransientError
from scaler.backends.lambda_ import LambdaTarget
from scaler.core.policy import (
    KubernetesTarget,
    LeadTimes,
    ModelPolicy,
    ServerlessTarget,
    Targets,
)
from scaler.core.profile import GENERIC
from scaler.ports import Clock, ServerlessState
from scaler.settings import ActuatorSettings

SANDBOX_NAMESPACE = "sandbox"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimChange:
    """One change the simulator made: at virtual time ``at``, ``target`` went to ``value``."""

    at: float
    target: str
    value: int
    reason: str = ""


class SimFaults:
    """Outages of the simulated APIs, by kind ("kubernetes", "serverless"), in virtual time."""

    def __init__(self, *, clock: Clock) -> None:
        """Create a fault plan with no outage."""
        self.clock = clock
        self._until: dict[str, float] = {}

    def outage(self, kind: str, *, seconds: float) -> None:
        """Make every call of ``kind`` fail for the next ``seconds`` of virtual time."""
        self._until[kind] = self.clock.now() + seconds

    def check(self, kind: str, *, what: str) -> None:
        """Raise TransientError (HTTP 503) while ``kind`` is out; return otherwise."""
        if self.clock.now() < self._until.get(kind, float("-inf")):
            raise TransientError(f"{what}: simulated outage (HTTP 503)")


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class SimKubernetes:
    """Serving and warm standby workloads whose pods take their lead time to become ready."""

    def __init__(
        self, *, clock: Clock, lead_times: Mapping[str, LeadTimes], faults: SimFaults | None = None
    ) -> None:
        """Create the cluster; ``lead_times`` maps ``namespace/name`` of each workload to its model's."""
        self.clock = clock
        self.lead_times = dict(lead_times)
        self.faults = faults or SimFaults(clock=clock)
        self.pods: dict[str, list[float]] = {}  # ready_at of each pod, per workload
        self.changes: list[SimChange] = []

    def _ready(self, key: str, *, now: float) -> int:
        return sum(1 for at in self.pods.get(key, []) if at <= now)

    async def read(self, target: KubernetesTarget, *, name: str) -> KubeState:
        """Return the workload's desired, ready and starting pods; raise TransientError in an outage."""
        key = _key(target.namespace, name)
        self.faults.check("kubernetes", what=f"read {key}")
        now = self.clock.now()
        pods = self.pods.setdefault(key, [])
        ready = self._ready(key, now=now)
        return KubeState(desired=len(pods), ready=ready, starting=len(pods) - ready)

    async def set_replicas(self, target: KubernetesTarget, *, name: str, replicas: int, reason: str) -> None:
        """Scale the workload to ``replicas`` (new pods start cold or promoted); raise in an outage."""
        key = _key(target.namespace, name)
        self.faults.check("kubernetes", what=f"scale {key}")
        now = self.clock.now()
        lead = self.lead_times.get(_key(target.namespace, target.name), LeadTimes())
        pods = self.pods.setdefault(key, [])
        if replicas < len(pods):
            pods.sort()
            del pods[replicas:]  # the latest to be ready go first
        else:
            pods.extend([now + lead.cold_start_seconds] * (replicas - len(pods)))
        self.changes.append(SimChange(at=now, target=key, value=replicas, reason=reason))


class SimServerless:
    """Pre-warmed serverless instances (and SageMaker traffic weights) that warm after a cold start."""

    def __init__(
        self, *, clock: Clock, lead_times: Mapping[str, LeadTimes], faults: SimFaults | None = None
    ) -> None:
        """Create the service; ``lead_times`` maps each target's ``key`` to its model's."""
        self.clock = clock
        self.lead_times = dict(lead_times)
        self.faults = faults or SimFaults(clock=clock)
        self.instances: dict[str, list[float]] = {}  # warm_at of each provisioned instance
        self.weights: dict[str, dict[str, float]] = {}
        self.changes: list[SimChange] = []

    @staticmethod
    def _cold_start(name: str, lead: LeadTimes) -> float:
        """Return the serverless cold start of the target ``name`` (the generic profile's if unset)."""
        cold = lead.serverless_cold_start_seconds
        return GENERIC.cold_start_seconds if cold is None else cold

    async def read(self, target: ServerlessTarget, *, max_concurrency: int) -> ServerlessState:
        """Return the provisioned instances of ``target`` and those warm; raise TransientError in an
        outage."""
        name = target.key
        self.faults.check("serverless", what=f"read {name}")
        return ServerlessState(provisioned=len(self.instances.get(name, [])), ready=self.warm(target))

    def warm(self, target: ServerlessTarget) -> int:
        """Return the provisioned instances of ``target`` past their cold start."""
        now = self.clock.now()
        return sum(1 for at in self.instances.get(target.key, []) if at <= now)

    async def set_provisioned(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` (at most ``quota``); raise TransientError in an outage."""
        name = target.key
        self.faults.check("serverless", what=f"provision {name}")
        now = self.clock.now()
        lead = self.lead_times.get(name, LeadTimes())
        held = self.instances.setdefault(name, [])
        wanted = min(max(instances, 0), quota)
        if wanted < len(held):
            held.sort()
            del held[wanted:]
        else:
            held.extend([now + self._cold_start(name, lead)] * (wanted - len(held)))
        self.changes.append(SimChange(at=now, target=name, value=wanted))

    async def read_weights(self, target: ServerlessTarget) -> dict[str, float]:
        """Return the weights of the variants ``target`` names (1.0 until set); raise in an outage."""
        name = target.key
        self.faults.check("serverless", what=f"read weights of {name}")
        names = list(target.weighted or ())
        current = self.weights.get(name, {})
        return {n: current.get(n, 1.0) for n in names}

    async def set_weights(
        self,
        target: ServerlessTarget,
        *,
        weights: dict[str, float],
        instances: int | None,
        max_concurrency: int,
    ) -> None:
        """Set ``weights`` (clamped to [0, 1]) and, unless None, ``instances`` without a quota check."""
        name = target.key
        self.faults.check("serverless", what=f"weights of {name}")
        if instances is not None:
            await self.set_provisioned(
                target, instances=instances, quota=instances, max_concurrency=max_concurrency
            )
        self.weights[name] = {n: min(max(w, 0.0), 1.0) for n, w in weights.items()}


def _slug(model: str) -> str:
    slug = re.sub(r"[^a-z0-9.-]+", "-", model.lower()).strip("-.")[:50]
    return slug or "model"


def with_sandbox_targets(policy: ModelPolicy) -> ModelPolicy:
    """Return ``policy`` with simulated targets (namespace ``sandbox``) if it names none, else as is.

    The serving Deployment is named after the model, the standby one ``<name>-standby`` (when the
    bounds allow standby), the serverless target a Lambda alias ``live`` of ``<name>-burst``.
    """
    if policy.targets is not None:
        return policy
    name = _slug(policy.name)
    standby = f"{name}-standby" if policy.bounds.max_standby > 0 else None
    targets = Targets(
        kubernetes=KubernetesTarget(namespace=SANDBOX_NAMESPACE, name=name, standby_name=standby),
        serverless=LambdaTarget(backend="lambda", function_name=f"{name}-burst", alias="live"),
    )
    # the simulated Lambda keeps the cold start the policy planned with before it had a target
    lead = policy.lead_times.model_copy(
        update={"serverless_cold_start_seconds": policy.serverless_profile.cold_start_seconds}
    )
    return policy.model_copy(update={"targets": targets, "lead_times": lead})


def sandbox_actuators(
    *,
    actuator: ActuatorSettings,
    dry_run: bool,
    policies: Mapping[str, ModelPolicy],
    clock: Clock,
    registry: CollectorRegistry,
) -> tuple[dict[str, ModelPolicy], Actuators]:
    """Return the policies (with simulated targets where none are named) and actuators on the simulator.

    The retry backoff sleeps on ``clock`` (virtual time, like the simulator); dry-run, attempts, pacing
    and the failure threshold come from ``actuator``.
    """
    named = {model: with_sandbox_targets(policy) for model, policy in policies.items()}
    kube_leads: dict[str, LeadTimes] = {}
    serverless_leads: dict[str, LeadTimes] = {}
    for policy in named.values():
        spec = policy.targets
        if spec is not None and spec.kubernetes is not None:
            kube_leads[_key(spec.kubernetes.namespace, spec.kubernetes.name)] = policy.lead_times
        if spec is not None and spec.serverless is not None:
            serverless_leads[spec.serverless.key] = policy.lead_times.model_copy(
                update={"serverless_cold_start_seconds": policy.serverless_profile.cold_start_seconds}
            )
    faults = SimFaults(clock=clock)
    actuators = Actuators(
        kubernetes=SimKubernetes(clock=clock, lead_times=kube_leads, faults=faults),
        serverless=SimServerless(clock=clock, lead_times=serverless_leads, faults=faults),
        metrics=ActuatorMetrics(registry),
        dry_run=dry_run,
        retry=RetryPolicy(
            attempts=actuator.attempts,
            cap_seconds=min(5.0, actuator.timeout_seconds),
            timeout_seconds=actuator.timeout_seconds,
        ),
        min_interval_seconds=actuator.min_interval_seconds,
        failure_threshold=actuator.failure_threshold,
        sleep=clock.sleep,  # backoff in the sandbox's virtual time
    )
    return named, actuators
