"""Fallback signal (pure): silence, freshness, and silent buckets that are never read as zero load."""

from __future__ import annotations

import math

import pytest

from scaler.core.fallback import FallbackSignal, bucket_requests, fresh, is_silent, observed_from
from scaler.core.types import Observed

NOW = 1_790_000_000.0


@pytest.mark.parametrize(("last", "silent"), [(NOW, False), (NOW - 119.9, False), (NOW - 120, True)])
def test_a_model_is_silent_after_its_fallback_delay(last: float, silent: bool) -> None:
    assert is_silent(last_event_at=last, now=NOW, after_seconds=120) is silent


@pytest.mark.parametrize(
    ("signal", "usable"),
    [
        (FallbackSignal(at=NOW - 10, request_rate=3.0, replicas_ready=2), True),
        (FallbackSignal(at=NOW - 61, request_rate=3.0, replicas_ready=2), False),  # too old
        (FallbackSignal(at=NOW, request_rate=None, replicas_ready=2), False),  # no rate: no signal
        (FallbackSignal(at=NOW, request_rate=math.nan, replicas_ready=None), False),
        (None, False),
    ],
)
def test_only_a_fresh_signal_with_a_rate_is_used(signal: FallbackSignal | None, usable: bool) -> None:
    assert (fresh(signal, now=NOW) is not None) is usable


def test_silent_buckets_count_the_fallback_rate_or_are_missing() -> None:
    assert bucket_requests(FallbackSignal(at=NOW, request_rate=2.5, replicas_ready=1), seconds=60) == 150
    assert math.isnan(bucket_requests(None, seconds=60))


def test_the_signal_replaces_rate_and_ready_replicas_it_knows() -> None:
    observed = Observed(
        replicas_ready=0, replicas_starting=1, standby_ready=0, standby_starting=0, serverless_provisioned=2
    )
    out = observed_from(FallbackSignal(at=NOW, request_rate=4.0, replicas_ready=3), observed)
    assert (out.request_rate, out.replicas_ready, out.replicas_starting) == (4.0, 3, 1)
    kept = observed_from(FallbackSignal(at=NOW, request_rate=4.0, replicas_ready=None), observed)
    assert kept.replicas_ready == 0
