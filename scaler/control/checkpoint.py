"""Checkpoints of a :class:`~scaler.control.controller.ModelController` (safe to read from untrusted bytes).

Layout: ``SPW1``, a 4-byte big-endian header length, a JSON header (its ``version``, the policy
name, the previous decision, the open buckets, the ledger's totals and interval basis and, from
version 2, the observed lead times), then the forecaster's own checkpoint bytes. A version 1 header
(no ``version`` key) still restores, with no lead times observed yet; a checkpoint without a ledger
(written before it existed) starts a fresh one. A checkpoint follows a model when its ownership
moves, so a restarted daemon, or the one that takes the model over, continues from the same
forecast, planner memory, half-filled buckets, ledger totals and learned lead times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

from scaler.control.controller import Forecaster, ModelController, Planner
from scaler.control.leadtime import LeadTimeLearner
from scaler.control.ledger import Ledger
from scaler.core import framing
from scaler.core.aggregate import ModelAggregator
from scaler.core.burstiness import BurstFactor
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, parse_bound_by

MAGIC: Final = b"SPW1"
VERSION: Final = 2  # 1: no version key, no lead times; 2: lead times


def encode(controller: ModelController) -> bytes:
    """Return the checkpoint of ``controller``: magic, header length, JSON header, forecaster bytes."""
    previous = controller.previous
    header = {
        "version": VERSION,
        "policy": controller.policy.name,
        "decision": dataclasses.asdict(previous) if previous is not None else None,
        "open_buckets": controller.aggregator.open_state(),
        "ledger": controller.ledger.state(controller.policy),
        "lead_times": controller.lead.to_state(),
        "burstiness": controller.burst.to_state(),
    }
    return framing.frame(MAGIC, header, controller.forecaster.to_bytes())


def decode(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Return (header, forecaster bytes) of a checkpoint; raise ValueError if it is not one."""
    try:
        return framing.unframe(data, MAGIC)
    except ValueError as exc:
        raise ValueError(f"not a Spillway checkpoint: {exc}") from None


def restore(
    data: bytes,
    *,
    policy: ModelPolicy,
    load_forecaster: Callable[[bytes], Forecaster],
    planner: Planner,
    now: float,
    burst_window_seconds: int = 2,
) -> ModelController:
    """Return the controller saved in ``data``, continuing at ``now`` under ``policy``.

    Raises ValueError when the bytes are not a checkpoint, one of another bucket size, one of a
    newer version, a bad ledger or burstiness list, or one whose lead times do not fit.
    """
    header, blob = decode(data)
    version = header.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(f"checkpoint version {version!r} is not one this daemon reads (1-{VERSION})")
    forecaster = load_forecaster(blob)
    if forecaster.bucket_seconds != policy.forecast.bucket_seconds:
        raise ValueError(
            f"checkpoint bucket {forecaster.bucket_seconds} s, policy now {policy.forecast.bucket_seconds} s"
        )
    controller = ModelController(
        policy=policy,
        forecaster=forecaster,
        planner=planner,
        now=now,
        burst_window_seconds=burst_window_seconds,
    )
    controller.previous = _decision_from(header.get("decision"))
    if header.get("ledger") is not None:
        controller.ledger = Ledger.from_state(header["ledger"])
    if "lead_times" in header:
        controller.lead = LeadTimeLearner.from_state(header["lead_times"])
    if "burstiness" in header:  # written since the burst factor; before it, learned afresh
        controller.burst = BurstFactor.from_state(header["burstiness"])
    open_buckets = header.get("open_buckets")
    if isinstance(open_buckets, dict):
        restored = ModelAggregator(bucket_seconds=policy.forecast.bucket_seconds)
        restored.restore_open(open_buckets)
        restored.close(now=now)
        controller.aggregator = restored
    return controller


def _decision_from(data: object) -> Decision | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("checkpoint decision is not an object")
    fields = dict(data)
    try:
        fields["recent_targets"] = tuple((float(t), int(n)) for t, n in fields.get("recent_targets", ()))
        try:  # a reason another version wrote costs its name, never the checkpoint
            fields["bound_by"] = parse_bound_by(str(fields.get("bound_by", "")))
        except ValueError:
            fields["bound_by"] = "none"
        return Decision(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint decision does not fit: {exc}") from None
