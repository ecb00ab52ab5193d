"""vLLM's counters as per-second request and token rates: the pure part of the bridge's rates.

A vLLM server counts, per ``model_name``, requests served (``vllm:request_success``, one series per
``finished_reason``: stop, length, abort, ... summed here), prompt tokens (``vllm:prompt_tokens``) and
generated tokens (``vllm:generation_tokens``), summed over its engines too. prometheus_client exposes
a counter as ``NAME_total``; older vLLM versions named the counter with the suffix already, and an
untyped re-exposition may drop it, so a sample counts under either name (``_total`` preferred when a
server shows both).

:func:`rates` turns two successive scrapes into rates, the way Prometheus' ``rate()`` does: the first
scrape yields none; a counter that went down was reset (the pod restarted) and its increase is its new
value, so a rate is never negative; a clock that did not advance (by a millisecond), or a gap longer than
``max_seconds``, yields none either (an average over a long outage says little about any second of it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from scaler.core.events import MAX_RATE_SECONDS, MAX_REQUEST_RATE, MAX_TOKEN_RATE

REQUESTS = "vllm:request_success"
PROMPT_TOKENS = "vllm:prompt_tokens"
OUTPUT_TOKENS = "vllm:generation_tokens"
COUNTERS = (REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS)
MIN_SECONDS = 0.001  # closer scrapes say nothing about a rate (and could divide by almost zero)
SAMPLE_NAMES: Mapping[str, tuple[str, bool]] = {  # sample name -> (counter, has the _total suffix)
    name + suffix: (name, bool(suffix)) for name in COUNTERS for suffix in ("_total", "")
}


@dataclasses.dataclass(frozen=True, slots=True)
class Totals:
    """One server's counters for one model at the scrape taken at ``at`` (finite, >= 0)."""

    at: float
    requests: float
    prompt_tokens: float
    output_tokens: float


@dataclasses.dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates over the ``seconds`` between two scrapes; ``reset``: a counter went down."""

    seconds: float
    requests: float
    prompt_tokens: float
    output_tokens: float
    reset: bool

    def in_bounds(self) -> bool:
        """Return True if a metric event can carry these rates (within its schema's bounds)."""
        return (
            self.requests <= MAX_REQUEST_RATE
            and max(self.prompt_tokens, self.output_tokens) <= MAX_TOKEN_RATE
            and self.seconds <= MAX_RATE_SECONDS
        )


def rates(previous: Totals | None, current: Totals, *, max_seconds: float) -> Rates | None:
    """Return the rates from ``previous`` to ``current``; None on the first scrape (``previous`` None),
    when under :data:`MIN_SECONDS` passed, or more than ``max_seconds``. Never negative (module doc)."""
    if previous is None:
        return None
    seconds = current.at - previous.at
    if not MIN_SECONDS <= seconds <= max_seconds:
        return None
    pairs = (
        (previous.requests, current.requests),
        (previous.prompt_tokens, current.prompt_tokens),
        (previous.output_tokens, current.output_tokens),
    )
    increases = [new - old if new >= old else new for old, new in pairs]
    return Rates(
        seconds=seconds,
        requests=increases[0] / seconds,
        prompt_tokens=increases[1] / seconds,
        output_tokens=increases[2] / seconds,
        reset=any(new < old for old, new in pairs),
    )


class CounterReader:
    """Collects the counter samples of one scrape; :meth:`totals` sums them per model."""

    def __init__(self) -> None:
        """Start with no samples."""
        self._sums: dict[tuple[str, str, bool], float] = {}  # (model, counter, suffixed) -> sum
        self._bad: dict[str, str] = {}  # model -> what was wrong with one of its counters

    def add(self, name: str, labels: Mapping[str, str], value: float) -> bool:
        """Count one sample if ``name`` is a vLLM counter with a model; return whether it was one."""
        known = SAMPLE_NAMES.get(name)
        model = labels.get("model_name", "")
        if known is None or not model:
            return False
        if math.isnan(value) or math.isinf(value) or value < 0:
            self._bad.setdefault(model, f"{name}{{model_name={model[:64]!r}}} is {value}")
            return True
        key = (model, *known)
        self._sums[key] = self._sums.get(key, 0.0) + value
        return True

    def totals(self, *, at: float) -> tuple[dict[str, Totals], dict[str, str]]:
        """Return (model -> totals at ``at``, model -> problem): a model needs all three counters, finite
        and non-negative, to have totals; one with a malformed counter has a problem instead."""
        found: dict[str, Totals] = {}
        for model in sorted({key[0] for key in self._sums} - set(self._bad)):
            values = []
            for counter in COUNTERS:
                value = self._sums.get((model, counter, True), self._sums.get((model, counter, False)))
                if value is None:
                    break
                values.append(value)
            else:
                found[model] = Totals(
                    at=at, requests=values[0], prompt_tokens=values[1], output_tokens=values[2]
                )
        return found, dict(self._bad)
