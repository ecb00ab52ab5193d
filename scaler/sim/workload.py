"""Workloads the simulator replays: real traces (Azure LLM 2023, ServeGen) and seeded synthetic scenarios.

Two shapes: :class:`Workload` lists individual requests (for the per-request cluster model) and
:class:`RateWorkload` gives per-second arrival counts (for the fluid model, used where a trace holds
too many requests to list, such as 14 days of ServeGen m-large). Both give the same view,
:class:`Requests` (weighted rows), so code that only sums or bins requests is written once for both.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Requests:
    """Requests as weighted rows: ``weights[i]`` requests arrive at ``arrivals[i]`` with those token counts.

    A listed request is one row of weight 1; a rate workload's second ``i`` is one row of mean-sized
    requests at ``i + 0.5`` (its middle), weighted by that second's count.
    """

    arrivals: FloatArray
    prompt_tokens: FloatArray
    output_tokens: FloatArray
    weights: FloatArray


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

    def first(self, seconds: float) -> Workload:
        """Return the requests of the first ``seconds`` (the whole workload if it is shorter)."""
        if seconds >= self.duration:
            return self
        keep = int(np.searchsorted(self.arrivals, seconds, side="left"))
        return Workload(
            name=f"{self.name} first {seconds:g} s",
            arrivals=self.arrivals[:keep],
            prompt_tokens=self.prompt_tokens[:keep],
            output_tokens=self.output_tokens[:keep],
            duration=float(seconds),
        )

    def as_rates(self) -> RateWorkload:
        """Return per-second arrival counts with the mean token sizes (for the fluid model)."""
        seconds = max(1, math.ceil(self.duration))
        idx = np.minimum(self.arrivals.astype(np.int64), seconds - 1)
        n = max(self.requests, 1)
        return RateWorkload(
            name=self.name,
            counts=np.bincount(idx, minlength=seconds).astype(np.float64),
            mean_prompt_tokens=float(self.prompt_tokens.sum()) / n,
            mean_output_tokens=float(self.output_tokens.sum()) / n,
        )

    def rows(self) -> Requests:
        """Return the requests as rows of weight 1."""
        return Requests(
            arrivals=np.asarray(self.arrivals, dtype=np.float64),
            prompt_tokens=self.prompt_tokens.astype(np.float64),
            output_tokens=self.output_tokens.astype(np.float64),
            weights=np.ones(self.arrivals.shape[0]),
        )


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

    def as_rates(self) -> RateWorkload:
        """Return this workload (it is per-second counts already)."""
        return self

    def first(self, seconds: float) -> RateWorkload:
        """Return the counts of the first ``seconds`` (whole seconds; the whole workload if shorter)."""
        if seconds >= self.duration:
            return self
        return dataclasses.replace(
            self, name=f"{self.name} first {seconds:g} s", counts=self.counts[: max(1, math.ceil(seconds))]
        )

    def rows(self) -> Requests:
        """Return one row per second: mean-sized requests at the second's middle, weighted by its count."""
        n = self.counts.shape[0]
        return Requests(
            arrivals=np.arange(n, dtype=np.float64) + 0.5,
            prompt_tokens=np.full(n, self.mean_prompt_tokens),
            output_tokens=np.full(n, self.mean_output_tokens),
            weights=np.asarray(self.counts, dtype=np.float64),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TokenSizes:
    """Lognormal per-request token sizes: arithmetic means and the standard deviation of the logs.

    Used where a workload has no token counts of its own (ServeGen rate files, synthetic scenarios).
    """

    mean_prompt: float
    mean_output: float
    sigma_prompt: float
    sigma_output: float

    def __post_init__(self) -> None:
        for field in ("mean_prompt", "mean_output"):
            if not getattr(self, field) >= 1.0:
                raise ValueError(f"TokenSizes.{field} must be at least 1, got {getattr(self, field)!r}")
        for field in ("sigma_prompt", "sigma_output"):
            if not 0.0 <= getattr(self, field) <= 5.0:
                raise ValueError(f"TokenSizes.{field} must be in [0, 5], got {getattr(self, field)!r}")


# Fitted on the Azure LLM 2023 conv trace (Patel et al., ISCA 2024): means 1,155 prompt / 211 output
# tokens (traces README), log standard deviations 0.99 / 0.86 (measured on the same file).
AZURE_CONV_TOKENS = TokenSizes(mean_prompt=1155.0, mean_output=211.0, sigma_prompt=0.99, sigma_output=0.86)


def sample_tokens(sizes: TokenSizes, n: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Return ``(prompt_tokens, output_tokens)``: ``n`` lognormal draws each, rounded, at least 1 token.

    The lognormal's log-mean is ``ln(mean) - sigma²/2`` so the arithmetic mean is ``sizes.mean_*``.
    """
    prompt = rng.lognormal(np.log(sizes.mean_prompt) - sizes.sigma_prompt**2 / 2, sizes.sigma_prompt, n)
    output = rng.lognormal(np.log(sizes.mean_output) - sizes.sigma_output**2 / 2, sizes.sigma_output, n)
    return (
        np.maximum(np.rint(prompt), 1.0).astype(np.int64),
        np.maximum(np.rint(output), 1.0).astype(np.int64),
    )
