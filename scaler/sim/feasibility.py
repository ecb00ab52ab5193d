"""SLO feasibility: the attainment no capacity can beat on a workload under a policy (the ceiling).

A request's time to first token is its wait plus its prefill ``P/Tp`` (the cluster model's), so a
request whose prefill alone exceeds the TTFT target misses whatever capacity is bought: the
*attainable ceiling* is the share of requests whose prefill fits. The *cold path* is a request served
by a serverless instance started for it: it also waits the serverless cold start, so the share whose
``P/Tp + serverless_cold_start`` still fits says whether bursts may lean on cold serverless at all
(with the defaults, 15 s against 2 s, none may: bursts need warm capacity). A queue-wait target does
not count prefill, so it never lowers the ceiling.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaler.core.policy import ModelPolicy
from scaler.sim.workload import RateWorkload, Workload

CEILING_SLACK = 0.005  # a policy is judged against the ceiling minus half a point where the ceiling binds


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Feasibility:
    """What share of a workload's requests any capacity can serve within the SLO's targets."""

    requests: int
    prefill_misses: int  # prefill alone exceeds the TTFT target
    cold_path_misses: int  # miss if served by a serverless instance that starts for them
    goal: float  # the policy's attainment goal

    @property
    def ceiling(self) -> float:
        """Return the attainable ceiling: the share of requests whose prefill fits the target."""
        return 1.0 - self.prefill_misses / self.requests if self.requests else 1.0

    @property
    def cold_path_ceiling(self) -> float:
        """Return the share of requests a cold serverless start still serves within target."""
        return 1.0 - self.cold_path_misses / self.requests if self.requests else 1.0

    @property
    def meetable(self) -> bool:
        """Return whether the attainment goal is at most the ceiling."""
        return self.goal <= self.ceiling + 1e-12

    @property
    def judged_goal(self) -> float:
        """Return the attainment to judge a policy by: the goal, or the ceiling minus half a point."""
        return self.goal if self.meetable else max(0.0, self.ceiling - CEILING_SLACK)

    def line(self, *, policy: str) -> str:
        """Return one line for a report: the ceiling, and whether the goal can be met at all."""
        text = (
            f"attainable ceiling {self.ceiling:.2%} ({self.prefill_misses:,} of {self.requests:,} requests "
            f"miss on prefill alone); cold serverless path meets target for {self.cold_path_ceiling:.2%}"
        )
        if not self.meetable:
            text += (
                f". The SLO of policy {policy} ({self.goal:.2%}) cannot be met on this workload: "
                f"judge attainment against {self.judged_goal:.2%}"
            )
        return text

    def as_dict(self) -> dict[str, object]:
        """Return the figures as plain JSON-ready values."""
        return {
            "requests": self.requests,
            "prefill_misses": self.prefill_misses,
            "cold_path_misses": self.cold_path_misses,
            "ceiling": self.ceiling,
            "cold_path_ceiling": self.cold_path_ceiling,
            "goal": self.goal,
            "meetable": self.meetable,
            "judged_goal": self.judged_goal,
        }


def prefill_seconds(workload: Workload | RateWorkload, *, policy: ModelPolicy) -> np.ndarray:
    """Return the prefill time ``P/Tp`` of each row of ``workload.rows()`` (one per second for rates)."""
    return workload.rows().prompt_tokens / policy.replica.prefill_tokens_per_second


def feasibility(workload: Workload | RateWorkload, *, policy: ModelPolicy) -> Feasibility:
    """Return the attainable ceiling of ``workload`` under ``policy`` (see the module docstring).

    A rate workload serves mean-size requests: its requests all fit or all miss. Raises nothing.
    """
    ttft = policy.slo.ttft_seconds
    n = workload.requests
    if ttft is None or n == 0:
        return Feasibility(requests=n, prefill_misses=0, cold_path_misses=0, goal=policy.slo.attainment)
    rows = workload.rows()
    prefill = rows.prompt_tokens / policy.replica.prefill_tokens_per_second
    cold = policy.lead_times.serverless_cold_start_seconds
    over = min(n, round(float(rows.weights[prefill > ttft].sum())))
    cold_over = min(n, round(float(rows.weights[prefill + cold > ttft].sum())))
    return Feasibility(
        requests=n, prefill_misses=over, cold_path_misses=cold_over, goal=policy.slo.attainment
    )
