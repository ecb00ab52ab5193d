"""What one decision looks like on the decisions topic (the gateway's routing weights among it)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

from scaler.control.ledger import LedgerInterval
from scaler.core.types import Decision


def decision_payload(
    *,
    model: str,
    decision: Decision,
    trigger: str,
    dry_run: bool,
    ledger: LedgerInterval | None = None,
    paused: tuple[str, ...] = (),
    floors: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """Return the JSON-ready message published for one decision (routing weights clamped to [0, 1]).

    With ``ledger``, the message carries the interval this decision closed (:func:`ledger_payload`).
    ``paused`` lists the kinds whose targets carry ``spillway.io/paused`` (not actuated);
    ``floors`` the replica counts kept from out-of-band changes, by kind.
    """
    spill = min(max(decision.spill_fraction, 0.0), 1.0)
    payload: dict[str, object] = {
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
    if ledger is not None:
        payload["ledger"] = ledger_payload(ledger)
    return payload


def ledger_payload(interval: LedgerInterval) -> dict[str, object]:
    """Return the ``ledger`` part of a decision message: predicted vs realized over the closed interval.

    ``from``/``to`` bound the interval (unix seconds); ``predicted_dollars`` is what the previous
    decision's ``cost_per_hour.chosen`` comes to over it (null without one); ``realized_dollars`` and
    ``realized_by_kind`` what the ledger priced; ``unpriced_seconds`` the part of it left unpriced (a
    gap in the observations); ``serverless_unobserved_seconds`` the part whose provisioned serverless
    no read-back showed (billed as 0: unknown, as in dry-run); ``slo`` the requests judged in it;
    ``total_*`` the ledger's running totals (they survive restarts through the checkpoint).
    """
    predicted = interval.predicted
    return {
        "from": interval.start,
        "to": interval.end,
        "predicted_dollars": round(predicted, 6) if predicted is not None else None,
        "realized_dollars": round(interval.realized.total, 6),
        "realized_by_kind": {k: round(v, 6) for k, v in interval.realized.as_dict().items()},
        "unpriced_seconds": round(interval.unpriced_seconds, 3),
        "serverless_unobserved_seconds": round(interval.serverless_unobserved_seconds, 3),
        "slo": interval.slo.summary(),
        "total_dollars": round(interval.total.total, 6),
        "total_slo": interval.total_slo.summary(),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class PublishedDecision:
    """What a reader of the decisions topic needs of one message: whose, when, and how many replicas."""

    model: str
    at: float  # unix seconds the decision was made (the publisher's clock)
    replicas: int


def read_decision(value: bytes) -> PublishedDecision:
    """Return the model, time and desired replicas of a message made by :func:`decision_payload`.

    Raises ValueError naming what is wrong when ``value`` is not such a message.
    """
    try:
        message = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError(f"not a JSON object but {type(message).__name__}")
    model = message.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("no 'model' string")
    at = message.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"'at' is not a finite number: {at!r}"[:200])
    desired = message.get("desired")
    replicas = desired.get("replicas") if isinstance(desired, dict) else None
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ValueError(f"'desired.replicas' is not a count: {replicas!r}"[:200])
    return PublishedDecision(model=model, at=float(at), replicas=replicas)
