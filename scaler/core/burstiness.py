"""How bursty a model's arrivals are inside a bucket, learned from the buckets it has seen.

Pure. The forecaster sees bucket totals, so a minute whose arrivals all come in ten seconds looks like
a steady minute, and serverless provisioned for that minute's rate is too little for its ten seconds.
The aggregator splits each bucket into ``k`` equal slots of whole seconds (:func:`slot_count`: up to
:data:`SLOTS`); for a bucket with enough arrivals, the busiest slot is compared with what Poisson
arrivals at the bucket's mean rate would reach in their busiest slot (``m + sqrt(2 ln(k) m)`` for ``m``
arrivals a slot, the usual bound on the maximum of ``k`` counts), since the sizing table already
allows for Poisson arrivals. The learned factor is the median of the last :data:`WINDOW` such ratios
(each from 1 to :data:`MAX_FACTOR`): 1 for steady or Poisson traffic, above 1 for traffic that arrives
in bursts shorter than a bucket. The planner multiplies the rate it provisions serverless for by it
(:func:`scaler.core.plan.plan`).
"""

from __future__ import annotations

import math
import statistics
from array import array
from typing import Final

SLOTS: Final = 6  # most slots a bucket is split into: ten seconds of a one-minute bucket
MIN_PER_SLOT: Final = 4  # a bucket with fewer arrivals a slot says nothing about its shape
WINDOW: Final = 60  # buckets remembered: an hour of one-minute buckets
MIN_SEEN: Final = 3  # buckets needed before the factor leaves 1
MAX_FACTOR: Final = 4.0


def slot_count(bucket_seconds: int) -> int:
    """Return how many equal slots of whole seconds a bucket is split into: the largest divisor of
    ``bucket_seconds`` up to :data:`SLOTS` (1: the bucket cannot be split)."""
    return max(k for k in range(1, SLOTS + 1) if bucket_seconds % k == 0)


def bucket_factor(*, requests: int, peak_slot: int | None, slots: int = SLOTS) -> float | None:
    """Return the busiest slot's arrivals over what Poisson arrivals reach in theirs (at least 1).

    Return None when the bucket says nothing: fewer than two slots, fewer than :data:`MIN_PER_SLOT`
    arrivals a slot, its slots unknown (``peak_slot`` None), or a peak that does not fit the total.
    """
    if peak_slot is None or slots < 2 or requests < MIN_PER_SLOT * slots or not 0 <= peak_slot <= requests:
        return None
    mean = requests / slots
    poisson = mean + math.sqrt(2.0 * math.log(slots) * mean)
    return min(max(peak_slot / poisson, 1.0), MAX_FACTOR)


class BurstFactor:
    """The median within-bucket burst factor of the last :data:`WINDOW` informative buckets."""

    __slots__ = ("_next", "_ratios", "factor")

    def __init__(self) -> None:
        """Start with no buckets seen: factor 1."""
        self._ratios = array("f")
        self._next = 0
        self.factor = 1.0

    @property
    def seen(self) -> int:
        """Return how many buckets the factor is the median of."""
        return len(self._ratios)

    def observe(self, *, requests: int, peak_slot: int | None, slots: int = SLOTS) -> None:
        """Remember one closed bucket's ratio, if it has one (see :func:`bucket_factor`)."""
        ratio = bucket_factor(requests=requests, peak_slot=peak_slot, slots=slots)
        if ratio is None:
            return
        if len(self._ratios) < WINDOW:
            self._ratios.append(ratio)
        else:
            self._ratios[self._next] = ratio
            self._next = (self._next + 1) % WINDOW
        self._refresh()

    def _refresh(self) -> None:
        """Set the factor: the median of the ratios (each within 1-MAX_FACTOR) once MIN_SEEN are in."""
        self.factor = float(statistics.median(self._ratios)) if len(self._ratios) >= MIN_SEEN else 1.0

    def to_state(self) -> list[float]:
        """Return the remembered ratios, oldest first (JSON-ready, for a checkpoint)."""
        ratios = self._ratios.tolist()
        return ratios[self._next :] + ratios[: self._next]

    @classmethod
    def from_state(cls, state: object) -> BurstFactor:
        """Return the learner of :meth:`to_state`'s list; raise ValueError if it is not one."""
        if not isinstance(state, list) or len(state) > WINDOW:
            raise ValueError(f"burstiness must be a list of at most {WINDOW} ratios")
        learner = cls()
        for value in state:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"burstiness ratio {value!r} is not a number")
            if not 1.0 <= value <= MAX_FACTOR:
                raise ValueError(f"burstiness ratio {value!r} is outside 1-{MAX_FACTOR}")
            learner._ratios.append(float(value))
        learner._refresh()
        return learner
