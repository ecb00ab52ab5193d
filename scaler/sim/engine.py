"""The simulation loop: a controller steers a simulated cluster through a workload in virtual time.

Every ``controller.interval_seconds`` (first at t=0, with zero counts), or whenever a
:class:`~scaler.sim.protocol.SelfScheduling` controller says it is due, the engine shows the
controller a :class:`TickObservation`, applies the :class:`CapacityTarget` it returns, and advances
the cluster to the next decision. A :class:`Workload` runs on the per-request model
(:mod:`scaler.sim.cluster`), a :class:`RateWorkload` on the fluid model (:mod:`scaler.sim.fluid`);
both return the same summary.

Initial state: ``initial_replicas`` (default ``bounds.min_replicas``) replicas already ready at t=0
(a warm start, as if the model had been running) and nothing else. The policy's bounds are not
enforced on targets: the cluster does what the controller asks (bounding is the controller's job).
"""

from __future__ import annotations

from collections.abc import Callable

from scaler.core.policy import ModelPolicy
from scaler.sim.cluster import Outcome, RequestCluster
from scaler.sim.coldstart import ColdStarts
from scaler.sim.fluid import FluidCluster
from scaler.sim.protocol import CapacityTarget, Controller, SelfScheduling
from scaler.sim.results import SimResult, Summary
from scaler.sim.workload import RateWorkload, Workload


def _check_target(target: CapacityTarget, *, name: str, now: float) -> None:
    """Raise ValueError naming the controller and time if ``target`` asks for negative capacity."""
    for field in ("replicas", "standby", "serverless_provisioned"):
        value = getattr(target, field)
        if not isinstance(value, int) or value < 0:
            raise ValueError(
                f"controller {name!r} at t={now:g}s: {field} must be a non-negative int, got {value!r}"
            )


def simulate(
    workload: Workload | RateWorkload,
    controller: Controller,
    *,
    policy: ModelPolicy,
    timeline_step: float = 60.0,
    on_progress: Callable[[float], None] | None = None,
    initial_replicas: int | None = None,
    cold_starts: ColdStarts | None = None,
) -> SimResult:
    """Return the summary and timeline of ``controller`` steering ``policy``'s model through ``workload``.

    ``initial_replicas`` are ready at t=0 (default ``bounds.min_replicas``): a trace cut from a running
    service starts warm. ``cold_starts`` draws each replica's cold start (default: the policy's
    ``cold_start_seconds`` for every one).

    Raises ValueError if ``timeline_step`` or the controller's interval is not positive, or if the
    controller returns a target with negative or non-integer counts.
    """
    interval = float(controller.interval_seconds)
    if not interval > 0:
        raise ValueError(f"controller {controller.name!r}: interval_seconds must be > 0, got {interval}")
    if not timeline_step > 0:
        raise ValueError(f"timeline_step must be > 0, got {timeline_step}")
    cluster: RequestCluster | FluidCluster
    warm = policy.bounds.min_replicas if initial_replicas is None else initial_replicas
    if warm < 0:
        raise ValueError(f"initial_replicas must be >= 0, got {warm}")
    if isinstance(workload, Workload):
        cluster = RequestCluster(workload, policy=policy, initial_replicas=warm, cold_starts=cold_starts)
        model = "per-request"
    else:
        cluster = FluidCluster(workload, policy=policy, initial_replicas=warm, cold_starts=cold_starts)
        model = "fluid"
    duration = workload.duration
    last = (warm, 0, 0)
    actions = 0
    tick = 0
    now = 0.0
    since = interval  # what the first observation covers
    wake = controller.next_wake if isinstance(controller, SelfScheduling) else None
    while now < duration:
        target = controller.decide(cluster.observe(now=now, interval=since))
        _check_target(target, name=controller.name, now=now)
        wanted = (target.replicas, target.standby, target.serverless_provisioned)
        actions += wanted != last
        last = wanted
        cluster.apply(target, now=now)
        tick += 1
        then = now
        now = wake(now=now, until=duration) if wake is not None else min(tick * interval, duration)
        since = now - then
        cluster.advance(until=now)
        if on_progress is not None:
            on_progress(now / duration)
    outcome = cluster.finish(timeline_step=timeline_step)
    return SimResult(
        summary=summarise(
            outcome, policy=controller.name, workload=workload.name, actions=actions, model=model
        ),
        timeline=outcome.timeline,
    )


def summarise(
    outcome: Outcome, *, policy: str, workload: str, actions: int, model: str, note: str = ""
) -> Summary:
    """Return the report row for one run's ``outcome``."""
    return Summary(
        policy=policy,
        workload=workload,
        cost=outcome.cost,
        requests=outcome.requests,
        served_kubernetes=outcome.served_kubernetes,
        served_serverless=outcome.served_serverless,
        dropped=outcome.dropped,
        slo_attainment=outcome.slo_attainment,
        wait_p50=outcome.wait[0],
        wait_p95=outcome.wait[1],
        wait_p99=outcome.wait[2],
        ttft_p50=outcome.ttft[0],
        ttft_p95=outcome.ttft[1],
        ttft_p99=outcome.ttft[2],
        idle_replica_hours=outcome.idle_replica_hours,
        scaling_actions=actions,
        model=model,
        note=note,
    )
