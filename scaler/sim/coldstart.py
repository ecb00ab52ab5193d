"""Replica cold starts drawn from a distribution (seeded), so the lead-time learner has something to learn.

Default: platform teams publish 1.5-8 minutes for a replica of an 8B model to become Ready (node,
image cache, model size). :class:`ColdStarts` reads that range as the 5th-95th percentiles of a
lognormal: median ``sqrt(90 * 480)`` = 208 s, sigma ``ln(480 / 90) / (2 * 1.645)`` = 0.51, every draw
clipped to ``[low, high]``. Standby pods are pods of the serving workload, so they draw the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

_Z95 = 1.6448536269514722  # standard normal 95th percentile


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ColdStarts:
    """A lognormal distribution of replica cold starts in seconds, clipped to ``[low, high]``."""

    median_seconds: float = math.sqrt(90.0 * 480.0)
    sigma: float = math.log(480.0 / 90.0) / (2.0 * _Z95)
    low: float = 30.0
    high: float = 1800.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Raise ValueError for a non-positive median, a negative sigma or ``low > high``."""
        if not (self.median_seconds > 0 and self.sigma >= 0 and 0 <= self.low <= self.high):
            raise ValueError(
                f"cold starts: need median > 0, sigma >= 0, 0 <= low <= high; got median "
                f"{self.median_seconds:g}, sigma {self.sigma:g}, low {self.low:g}, high {self.high:g}"
            )

    @classmethod
    def between(cls, p5: float, p95: float, *, seed: int = 0) -> ColdStarts:
        """Return the lognormal whose 5th and 95th percentiles are ``p5`` and ``p95`` seconds."""
        if not 0 < p5 <= p95:
            raise ValueError(f"cold starts: need 0 < p5 <= p95, got {p5:g}, {p95:g}")
        sigma = math.log(p95 / p5) / (2.0 * _Z95)
        return cls(median_seconds=math.sqrt(p5 * p95), sigma=sigma, low=p5 / 3.0, high=p95 * 4.0, seed=seed)

    def sampler(self) -> Callable[[], float]:
        """Return a function drawing one cold start per call (seeded: the same sequence every run)."""
        rng = np.random.default_rng(self.seed)
        mu = math.log(self.median_seconds)

        def draw() -> float:
            return float(min(max(rng.lognormal(mu, self.sigma), self.low), self.high))

        return draw
