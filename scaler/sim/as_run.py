"""What the cluster actually ran during a replayed range, priced as a baseline row ("as run").

Replicas come from the replica metric events (``llm.metrics``): at each whole second a replica counts
in the state (ready or starting) of its latest event, for at most ``stale_seconds`` after it (a
replica unheard of for longer is gone). Every replica that counts is billed at
``replica_per_hour``, starting ones too (a starting pod holds its GPU, and the simulator bills a
requested replica the same way). Serverless is priced per request whose events say
``backend: serverless``, as the cluster model prices it (busy instance-seconds plus tokens); what was
provisioned ahead is not in the events, so it is not billed.

The SLO figures are the ones the events show: TTFT is ``first_token`` ts minus ``arrival`` ts; a
rejected request is a miss; a request with neither a first token nor a reject is left out.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from scaler.core.accounting import bill, hold_seconds, wait_limit
from scaler.core.policy import ModelPolicy
from scaler.sim.cluster import percentiles
from scaler.sim.events_trace import ModelReplay, ReplicaSamples
from scaler.sim.results import FloatArray, Summary

AS_RUN: Final = "as run"
STALE_SECONDS: Final = 60.0


def replica_seconds(
    samples: ReplicaSamples, *, duration: float, stale_seconds: float
) -> tuple[FloatArray, FloatArray]:
    """Return ``(present, ready)``: replicas counting at each whole second ``0 .. ceil(duration)-1``."""
    seconds = np.arange(max(1, math.ceil(duration)), dtype=np.float64)
    present = np.zeros(seconds.shape[0], dtype=np.float64)
    ready = np.zeros(seconds.shape[0], dtype=np.float64)
    names = np.asarray(samples.replica, dtype=object)
    for name in dict.fromkeys(samples.replica):
        mine = names == name
        t, up = samples.t[mine], samples.ready[mine]
        latest = np.searchsorted(t, seconds, side="right") - 1
        seen = latest >= 0
        fresh = seen & (seconds - t[np.maximum(latest, 0)] <= stale_seconds)
        present += fresh
        ready += fresh & up[np.maximum(latest, 0)]
    return present, ready


def as_run_summary(
    replay: ModelReplay, *, policy: ModelPolicy, stale_seconds: float = STALE_SECONDS
) -> Summary | None:
    """Return the "as run" row for ``replay`` priced with ``policy``'s prices; None without replica events."""
    if replay.replicas is None:
        return None
    workload = replay.workload
    present, _ready = replica_seconds(
        replay.replicas, duration=workload.duration, stale_seconds=stale_seconds
    )
    on_sv = replay.serverless & ~replay.rejected
    prompt = workload.prompt_tokens[on_sv].astype(np.float64)
    output = workload.output_tokens[on_sv].astype(np.float64)
    busy = float(hold_seconds(policy, prompt, output).sum()) / policy.replica.max_concurrency
    cost = bill(
        policy,
        replica_seconds=float(present.sum()),
        serverless_busy_seconds=busy,
        prompt_tokens=float(prompt.sum()),
        output_tokens=float(output.sum()),
    )
    ttft_target, _ = wait_limit(policy)
    seen = np.isfinite(replay.ttft)
    judged = seen | replay.rejected
    met = seen & ~replay.rejected & (replay.ttft <= ttft_target)
    attainment = float(met.sum()) / float(judged.sum()) if judged.any() else math.nan
    ttft = percentiles(replay.ttft[seen & ~replay.rejected])
    rejected = int(replay.rejected.sum())
    return Summary(
        policy=AS_RUN,
        workload=workload.name,
        cost=cost,
        requests=workload.requests,
        served_kubernetes=workload.requests - int(on_sv.sum()) - rejected,
        served_serverless=int(on_sv.sum()),
        dropped=rejected,
        slo_attainment=attainment,
        wait_p50=math.nan,
        wait_p95=math.nan,
        wait_p99=math.nan,
        ttft_p50=ttft[0],
        ttft_p95=ttft[1],
        ttft_p99=ttft[2],
        idle_replica_hours=math.nan,
        scaling_actions=int(np.count_nonzero(np.diff(present))),
        note="from the recorded events: replicas reporting (ready or starting), serverless by backend",
    )
