"""A forecaster that knows the future: the workload's true per-bucket demand, for the "perfect forecast" row.

The same controller fed this instead of the Holt-Winters forecaster splits the gap to the oracle
in two: what better forecasts could still win (Spillway's cost minus perfect-forecast Spillway's)
and what the controller leaves on the table with every bucket's load known in advance (perfect-
forecast Spillway minus the oracle). Each bucket's demand is a point mass at its true mean rate;
the arrivals inside a bucket keep their own noise. Pure; time is an argument.
"""

from __future__ import annotations

import math

import numpy as np

from scaler.core.policy import ModelPolicy
from scaler.core.types import DemandForecast, FloatArray
from scaler.sim.spillway import bucket_counts
from scaler.sim.workload import RateWorkload, Workload

LEVELS = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995])


class PerfectForecaster:
    """Forecasts exactly the demand the workload will bring (a controller ``Forecaster``)."""

    def __init__(
        self,
        *,
        requests: FloatArray,
        prompt_tokens: FloatArray,
        output_tokens: FloatArray,
        bucket_seconds: int,
        horizon_buckets: int,
        start: float,
    ) -> None:
        """Create the forecaster from per-bucket totals starting at unix time ``start``."""
        self.bucket_seconds = int(bucket_seconds)
        self._requests = requests
        self._prompt = prompt_tokens
        self._output = output_tokens
        self._horizon = max(1, int(horizon_buckets))
        self._start = float(start)
        total = max(float(requests.sum()), 1.0)
        self._mean_prompt = float(prompt_tokens.sum()) / total
        self._mean_output = float(output_tokens.sum()) / total

    @classmethod
    def from_workload(
        cls, workload: Workload | RateWorkload, *, policy: ModelPolicy, start_unix: int = 0
    ) -> PerfectForecaster:
        """Return the perfect forecaster of ``workload`` at ``policy``'s bucket size and horizon."""
        bucket = policy.forecast.bucket_seconds
        reqs, prompt, output = bucket_counts(workload, bucket_seconds=bucket)
        horizon = math.ceil(policy.forecast.horizon_seconds / bucket)
        return cls(
            requests=reqs,
            prompt_tokens=prompt,
            output_tokens=output,
            bucket_seconds=bucket,
            horizon_buckets=horizon,
            start=float(start_unix),
        )

    def observe(
        self, *, bucket_start: float, requests: float, prompt_tokens: float, output_tokens: float
    ) -> None:
        """Ignore what was observed: the future is already known."""

    def seed(
        self, *, start: float, requests: FloatArray, prompt_tokens: FloatArray, output_tokens: FloatArray
    ) -> None:
        """Ignore history: the future is already known."""

    def to_bytes(self) -> bytes:
        """Return nothing worth keeping (the simulator never checkpoints this forecaster)."""
        return b""

    def forecast(self, *, now: float) -> DemandForecast:
        """Return the true mean rate of every bucket from the one holding ``now``, as point masses."""
        first = max(0, math.floor((now - self._start) / self.bucket_seconds))
        last = first + self._horizon
        rates = np.zeros(self._horizon)
        window = self._requests[first:last]
        rates[: window.shape[0]] = window / self.bucket_seconds
        count = float(window.sum())
        prompt = float(self._prompt[first:last].sum()) / count if count > 0 else self._mean_prompt
        output = float(self._output[first:last].sum()) / count if count > 0 else self._mean_output
        return DemandForecast(
            start=self._start + first * self.bucket_seconds,
            bucket_seconds=float(self.bucket_seconds),
            levels=LEVELS,
            rate_mean=rates,
            rate_quantiles=np.tile(rates, (LEVELS.shape[0], 1)),
            mean_prompt_tokens=prompt,
            mean_output_tokens=output,
        )
