"""Workloads the simulator replays: real traces (Azure LLM 2023, ServeGen) and seeded synthetic scenarios.

Two shapes: :class:`Workload` lists individual requests (for the per-request cluster model) and
:class:`RateWorkload` gives per-second arrival counts (for the fluid model, used where a trace holds
too many requests to list, such as 14 days of ServeGen m-large).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """Individual requests: ``arrivals`` in seconds since the workload's start, sorted ascending."""

    name: str
    arrivals: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    duration: float

    def __post_init__(self) -> None:
        n = self.arrivals.shape[0]
        if self.prompt_tokens.shape[0] != n or self.output_tokens.shape[0] != n:
            raise ValueError("arrivals, prompt_tokens and output_tokens must have the same length")

    @property
    def requests(self) -> int:
        """Return the number of requests."""
        return int(self.arrivals.shape[0])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RateWorkload:
    """Per-second arrival counts: ``counts[i]`` requests arrive in second ``[i, i+1)``.

    Token sizes are given as means per request (the fluid model serves average requests).
    """

    name: str
    counts: FloatArray
    mean_prompt_tokens: float
    mean_output_tokens: float

    @property
    def duration(self) -> float:
        """Return the length of the workload in seconds."""
        return float(self.counts.shape[0])

    @property
    def requests(self) -> int:
        """Return the (rounded) number of requests."""
        return round(float(self.counts.sum()))
