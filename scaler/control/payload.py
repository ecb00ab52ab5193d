"""What one decision looks like on the decisions topic (the gateway's routing weights among it)."""

from __future__ import annotations

from collections.abc import Mapping

from scaler.core.types import Decision


def decision_payload(
    *,
    model: str,
    decision: Decision,
    trigger: str,
    dry_run: bool,
    paused: tuple[str, ...] = (),
    floors: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """Return the JSON-ready message published for one decision (routing weights clamped to [0, 1]).

    ``paused`` lists the kinds whose targets carry ``spillway.io/paused`` (not actuated);
    ``floors`` the replica counts kept from out-of-band changes, by kind.
    """
    spill = min(max(decision.spill_fraction, 0.0), 1.0)
    return {
        "model": model,
        "at": decision.at,
        "desired": {
            "replicas": decision.replicas,
            "standby": decision.standby,
            "serverless_provisioned": decision.serverless_provisioned,
        },
        "routing": {"kubernetes": round(1.0 - spill, 6), "serverless": round(spill, 6)},
        "reason": decision.reason,
        "bound_by": decision.bound_by,
        "quantile": round(decision.quantile, 6),
        "cost_per_hour": {k: round(v, 6) for k, v in decision.cost_per_hour.items()},
        "held": decision.held,
        "trigger": trigger,
        "dry_run": dry_run,
        "paused": list(paused),
        "external_floors": dict(floors or {}),
    }
