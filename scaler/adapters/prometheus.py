"""Prometheus (HTTP API, aiohttp): per-bucket request and token counts of a model's past, to seed forecasts.

Counters (vLLM's ``vllm:request_success_total``, ``vllm:prompt_tokens_total`` and
``vllm:generation_tokens_total`` by default) are read raw with range queries stepped at the bucket
size, each series differenced on its own (a drop is a counter reset: the new value is the count),
and summed across series. A bucket no series covers is NaN (missing), never zero. Ranges longer than
``max_points`` steps are fetched in chunks (Prometheus refuses more than 11,000 points per series).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import aiohttp
import numpy as np
import structlog

from scaler.core.fallback import FallbackSignal
from scaler.core.policy import ModelPolicy
from scaler.core.types import FloatArray
from scaler.settings import Settings

log = structlog.get_logger("scaler.prometheus")
MAX_POINTS: Final = 10_000
Samples = list[tuple[float, float]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HistoryQueries:
    """PromQL selectors of the three counters; ``{model}`` is replaced by the model's name."""

    requests: str = 'vllm:request_success_total{model_name="{model}"}'
    prompt_tokens: str = 'vllm:prompt_tokens_total{model_name="{model}"}'
    output_tokens: str = 'vllm:generation_tokens_total{model_name="{model}"}'

    def render(self, model: str) -> tuple[str, str, str]:
        """Return the three selectors for ``model``."""
        quoted = model.replace("\\", "\\\\").replace('"', '\\"')
        r, p, o = (
            q.replace("{model}", quoted) for q in (self.requests, self.prompt_tokens, self.output_tokens)
        )
        return r, p, o


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """Per-bucket counts from ``start`` (a bucket boundary); NaN where nothing was recorded."""

    start: float
    requests: FloatArray
    prompt_tokens: FloatArray
    output_tokens: FloatArray

    @property
    def covered(self) -> int:
        """Return how many buckets have a request count."""
        return int(np.count_nonzero(~np.isnan(self.requests)))


def bucket_counts(
    series: Sequence[Samples], *, start: float, bucket_seconds: float, buckets: int
) -> FloatArray:
    """Return per-bucket increases of counter ``series`` sampled at ``start + k*bucket_seconds``.

    Bucket ``k`` covers ``[start + k*b, start + (k+1)*b)`` and needs samples at both ends of some series;
    each series is differenced on its own (a drop is a reset) and the series are summed. NaN = no data.
    """
    total = np.full(buckets, np.nan)
    for samples in series:
        values = np.full(buckets + 1, np.nan)
        for t, v in samples:
            k = round((t - start) / bucket_seconds)
            if 0 <= k <= buckets and math.isfinite(v) and v >= 0:
                values[k] = v
        diff = values[1:] - values[:-1]
        reset = diff < 0
        diff[reset] = values[1:][reset]
        have = ~np.isnan(diff)
        total[have] = np.where(np.isnan(total[have]), 0.0, total[have]) + diff[have]
    return total


class PrometheusHistory:
    """Reads a model's past from Prometheus' HTTP API."""

    def __init__(
        self,
        *,
        url: str,
        queries: HistoryQueries | None = None,
        timeout_seconds: float = 30.0,
        max_points: int = MAX_POINTS,
    ) -> None:
        """Create a reader of the Prometheus at ``url`` (e.g. ``http://prometheus:9090``)."""
        self.url = url.rstrip("/")
        self.queries = queries or HistoryQueries()
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.max_points = max_points

    async def history(self, policy: ModelPolicy, *, now: float) -> History:
        """Return the counts of ``policy.forecast.history_seconds`` of complete buckets before ``now``.

        Raises ConnectionError when Prometheus cannot be reached or refuses a query (the message says
        which query and why).
        """
        b = float(policy.forecast.bucket_seconds)
        end = math.floor(now / b) * b
        buckets = max(1, int(policy.forecast.history_seconds // b))
        start = end - buckets * b
        arrays = []
        async with aiohttp.ClientSession(timeout=self.timeout) as http:
            for selector in self.queries.render(policy.name):
                # a value only where a sample lies within the bucket (the window excludes its start,
                # as ranges in Prometheus 2 include both ends): a gap stays missing (NaN), never 0
                query = f"({selector}) and count_over_time({selector}[{round(b * 1000) - 1}ms])"
                series = await self._range(http, query, start=start, end=end, step=b)
                arrays.append(bucket_counts(series, start=start, bucket_seconds=b, buckets=buckets))
        found = History(start=start, requests=arrays[0], prompt_tokens=arrays[1], output_tokens=arrays[2])
        log.info("history_read", model=policy.name, buckets=buckets, covered=found.covered, start=start)
        return found

    async def _range(
        self, http: aiohttp.ClientSession, query: str, *, start: float, end: float, step: float
    ) -> list[Samples]:
        """Return the samples of every series of ``query`` at ``start, start+step, ..., end`` (chunked)."""
        by_series: dict[tuple[tuple[str, str], ...], Samples] = {}
        chunk = step * (self.max_points - 1)
        lo = start
        while lo <= end:
            hi = min(end, lo + chunk)
            params = {"query": query, "start": f"{lo:.3f}", "end": f"{hi:.3f}", "step": f"{step:g}"}
            for labels, values in await self._get(http, params):
                by_series.setdefault(labels, []).extend(values)
            lo = hi + step
        return list(by_series.values())

    async def _get(
        self, http: aiohttp.ClientSession, params: dict[str, str]
    ) -> list[tuple[tuple[tuple[str, str], ...], Samples]]:
        where = f"prometheus {self.url} query_range {params['query']!r}"
        try:
            async with http.get(f"{self.url}/api/v1/query_range", params=params) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConnectionError(f"{where}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise ConnectionError(f"{where}: refused: {str(error)[:200]}")
        data = body.get("data", {})
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise ConnectionError(
                f"{where}: expected a matrix result (a counter selector), got {data!r:.120}"
            )
        out = []
        for item in data.get("result", []):
            labels = tuple(sorted(item.get("metric", {}).items()))
            values = [(float(t), float(v)) for t, v in item.get("values", [])]
            out.append((labels, values))
        return out


async def read_histories(
    reader: PrometheusHistory,
    policies: Mapping[str, ModelPolicy],
    *,
    models: Iterable[str],
    now: float,
    timeout_seconds: float,
) -> dict[str, History]:
    """Return the history of each of ``models`` that Prometheus has data for, within ``timeout_seconds``.

    Never raises: a model whose history cannot be read is logged and starts from its events alone.
    """
    found: dict[str, History] = {}
    for model in sorted(models):
        policy = policies.get(model)
        if policy is None:
            continue
        try:
            history = await asyncio.wait_for(reader.history(policy, now=now), timeout_seconds)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("history_unavailable", model=model, policy=model, error=str(exc) or "timed out")
            continue
        if history.covered:
            found[model] = history
        else:
            log.info("history_empty", model=model, policy=model)
    return found


def reader_from_settings(settings: Settings) -> PrometheusHistory | None:
    """Return the history reader the settings ask for (None when ``prometheus_url`` is not set)."""
    if settings.prometheus_url is None:
        return None
    queries = HistoryQueries(
        requests=settings.prometheus_requests_selector,
        prompt_tokens=settings.prometheus_prompt_tokens_selector,
        output_tokens=settings.prometheus_output_tokens_selector,
    )
    return PrometheusHistory(
        url=settings.prometheus_url, queries=queries, timeout_seconds=settings.prometheus_timeout_seconds
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SignalQueries:
    """Instant PromQL queries of a model's current load and readiness; ``{model}`` is its name."""

    request_rate: str = 'sum(rate(vllm:request_success_total{model_name="{model}"}[1m]))'
    running: str = 'sum(vllm:num_requests_running{model_name="{model}"})'
    waiting: str = 'sum(vllm:num_requests_waiting{model_name="{model}"})'
    ready_replicas: str = 'count(vllm:num_requests_running{model_name="{model}"})'


class PrometheusSignal:
    """Reads the fallback signal (request rate, running/waiting requests, ready replicas) of a model."""

    def __init__(
        self, *, url: str, queries: SignalQueries | None = None, timeout_seconds: float = 10.0
    ) -> None:
        """Create a reader of the Prometheus at ``url``."""
        self.url = url.rstrip("/")
        self.queries = queries or SignalQueries()
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def signal(self, model: str, *, now: float) -> FallbackSignal:
        """Return what Prometheus says of ``model`` now (None fields: no such series).

        Raises ConnectionError when Prometheus cannot be reached or refuses a query.
        """
        quoted = model.replace("\\", "\\\\").replace('"', '\\"')
        q = self.queries
        values: list[float | None] = []
        async with aiohttp.ClientSession(timeout=self.timeout) as http:
            for template in (q.request_rate, q.running, q.waiting, q.ready_replicas):
                values.append(await self._instant(http, template.replace("{model}", quoted), now=now))
        rate, running, waiting, ready = values
        return FallbackSignal(
            at=now,
            request_rate=rate,
            replicas_ready=None if ready is None else round(ready),
            running=running,
            waiting=waiting,
        )

    async def _instant(self, http: aiohttp.ClientSession, query: str, *, now: float) -> float | None:
        where = f"prometheus {self.url} query {query!r}"
        try:
            params = {"query": query, "time": f"{now:.3f}"}
            async with http.get(f"{self.url}/api/v1/query", params=params) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConnectionError(f"{where}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise ConnectionError(f"{where}: refused: {str(error)[:200]}")
        result = body.get("data", {}).get("result", [])
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None


def signal_from_settings(settings: Settings) -> PrometheusSignal | None:
    """Return the fallback signal reader the settings ask for (None when ``prometheus_url`` is not set)."""
    if settings.prometheus_url is None:
        return None
    queries = SignalQueries(
        request_rate=settings.prometheus_request_rate_query,
        running=settings.prometheus_running_query,
        waiting=settings.prometheus_waiting_query,
        ready_replicas=settings.prometheus_ready_replicas_query,
    )
    return PrometheusSignal(
        url=settings.prometheus_url, queries=queries, timeout_seconds=settings.prometheus_timeout_seconds
    )
