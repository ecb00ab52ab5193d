"""Fallback signal (pure): when a model's events stop arriving, decide on load read from Prometheus instead.

A model is *silent* once no event of it arrived for ``forecast.fallback_after_seconds``. While silent,
completed buckets are counted from the fallback request rate when a fresh one is known, and are
missing (NaN) otherwise: silence is never read as zero load. Time is an argument.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final

from scaler.core.types import Observed

SIGNAL_MAX_AGE_SECONDS: Final = 60.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FallbackSignal:
    """Current load and readiness of one model as read from Prometheus at ``at`` (None = not known)."""

    at: float
    request_rate: float | None
    replicas_ready: int | None
    running: float | None = None
    waiting: float | None = None

    @property
    def usable(self) -> bool:
        """Return True when the signal carries a request rate."""
        return self.request_rate is not None and math.isfinite(self.request_rate) and self.request_rate >= 0


def is_silent(*, last_event_at: float, now: float, after_seconds: float) -> bool:
    """Return True when no event arrived for ``after_seconds`` before ``now``."""
    return now - last_event_at >= after_seconds


def fresh(signal: FallbackSignal | None, *, now: float) -> FallbackSignal | None:
    """Return ``signal`` if it is usable and at most :data:`SIGNAL_MAX_AGE_SECONDS` old, else None."""
    if signal is None or not signal.usable or now - signal.at > SIGNAL_MAX_AGE_SECONDS:
        return None
    return signal


def bucket_requests(signal: FallbackSignal | None, *, seconds: float) -> float:
    """Return the requests of a silent bucket of ``seconds`` from a fresh signal (NaN = unknown)."""
    if signal is None or signal.request_rate is None:
        return math.nan
    return signal.request_rate * seconds


def observed_from(signal: FallbackSignal, observed: Observed) -> Observed:
    """Return ``observed`` with the request rate and ready replicas the signal knows."""
    ready = observed.replicas_ready if signal.replicas_ready is None else signal.replicas_ready
    return dataclasses.replace(observed, request_rate=signal.request_rate, replicas_ready=ready)
