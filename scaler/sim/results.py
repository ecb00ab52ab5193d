"""What one simulated run returns: a summary row for the report and a timeline for the plot.

The bill by kind (:class:`CostBreakdown`) lives in :mod:`scaler.core.accounting`, shared with the
daemon's ledger.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from scaler.core.accounting import CostBreakdown

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """One row of the report: how a policy did on a workload.

    Latencies are in seconds over served requests; ``slo_attainment`` counts dropped requests as misses.
    """

    policy: str
    workload: str
    cost: CostBreakdown
    requests: int
    served_kubernetes: int
    served_serverless: int
    dropped: int
    slo_attainment: float
    wait_p50: float
    wait_p95: float
    wait_p99: float
    ttft_p50: float
    ttft_p95: float
    ttft_p99: float
    idle_replica_hours: float  # paid replica-hours (serving + standby) not spent serving requests
    scaling_actions: int  # changes of the replica, standby or provisioned-serverless target
    model: str = "per-request"  # or "fluid"
    note: str = ""

    @property
    def serverless_share(self) -> float:
        """Return the share of served requests that serverless served."""
        served = self.served_kubernetes + self.served_serverless
        return self.served_serverless / served if served else 0.0

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict of every figure."""
        out = dataclasses.asdict(self)
        out["cost"] = {**dataclasses.asdict(self.cost), "total": self.cost.total}
        out["serverless_share"] = self.serverless_share
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Per-step series for plots: one entry per ``step`` seconds from the start of the workload."""

    step: float
    t: FloatArray  # start of each step, seconds
    arrival_rate: FloatArray  # requests/s arriving
    replicas_ready: FloatArray  # serving replicas ready (mean over the step)
    replicas_starting: FloatArray
    standby_ready: FloatArray
    serverless_instances: FloatArray  # serverless instances in use or provisioned (mean over the step)
    slo_misses: FloatArray  # requests that missed the SLO (or were dropped), arriving in the step


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    """A summary row and its timeline."""

    summary: Summary
    timeline: Timeline
