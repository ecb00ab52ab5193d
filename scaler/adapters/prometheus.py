"""Prometheus (prometheus-api-client, through asyncio.to_thread): a model's past, to seed forecasts, and
its current load, the fallback signal when its events stop.

Counters (vLLM's ``vllm:request_success_total``, ``vllm:prompt_tokens_total`` and
``vllm:generation_tokens_total`` by default) are read raw with range queries stepped at the bucket
size, each series differenced on its own (a drop is a counter reset: the new value is the count),
and summed across series. A bucket no series covers is NaN (missing), never zero. Ranges longer than
``max_points`` steps are fetched in chunks (Prometheus refuses more than 11,000 points per series).

Connection options (:class:`Connection`: headers, bearer token or basic auth, TLS CA, client
certificate, retries) come from the ``prometheus_*`` settings. The client is synchronous, so every
query runs in a worker thread; a query that fails in any way is a ConnectionError naming it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import requests
import structlog
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from scaler.core.fallback import FallbackSignal
from scaler.core.policy import ModelPolicy
from scaler.core.types import FloatArray
from scaler.settings import PrometheusSettings

log = structlog.get_logger("scaler.prometheus")
MAX_POINTS: Final = 10_000
Samples = list[tuple[float, float]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """How to reach Prometheus: extra headers, auth, TLS and retries of each request."""

    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    bearer_token: str | None = None  # sent as Authorization: Bearer (never logged)
    basic_auth: tuple[str, str] | None = None  # (user, password)
    ca_file: str | None = None  # CA bundle to verify Prometheus' certificate (None: the system's)
    verify_tls: bool = True
    client_cert: tuple[str, str] | None = None  # (certificate file, key file) for mutual TLS
    retries: int = 0  # per request, on connection errors and 408/429/5xx, with backoff


class PrometheusClient:
    """prometheus-api-client behind an async interface: each query runs in a worker thread."""

    def __init__(self, *, url: str, timeout_seconds: float, connection: Connection | None = None) -> None:
        """Create a client of the Prometheus at ``url``; nothing is sent until a query."""
        conn = connection or Connection()
        self.url = url.rstrip("/")
        session = requests.Session()
        session.verify = conn.ca_file if conn.ca_file is not None and conn.verify_tls else conn.verify_tls
        session.cert = conn.client_cert
        headers = dict(conn.headers)
        if conn.bearer_token is not None:
            headers["Authorization"] = f"Bearer {conn.bearer_token}"
        retry = Retry(
            total=conn.retries, backoff_factor=0.5, status_forcelist=(408, 429, 500, 502, 503, 504)
        )
        self._api = PrometheusConnect(
            url=self.url,
            headers=headers or None,
            auth=conn.basic_auth,
            retry=retry,
            session=session,
            timeout=timeout_seconds,
        )

    async def range(self, query: str, *, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Return the series of a range query; raise ConnectionError naming the query on any failure."""
        when = (datetime.datetime.fromtimestamp(t, datetime.UTC) for t in (start, end))
        # the client rounds start and end to whole seconds: the exact bucket bounds go as params
        params = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        return await self._call(
            f"query_range {query!r}", self._api.custom_query_range, query, *when, f"{step:g}", params
        )

    async def instant(self, query: str, *, at: float) -> list[dict[str, Any]]:
        """Return the result of an instant query at ``at``; raise ConnectionError naming it on any failure."""
        return await self._call(f"query {query!r}", self._api.custom_query, query, {"time": f"{at:.3f}"})

    async def _call(self, what: str, fn: Any, *args: Any) -> list[dict[str, Any]]:
        where = f"prometheus {self.url} {what}"
        try:
            result = await asyncio.to_thread(fn, *args)
        except PrometheusApiClientException as exc:
            raise ConnectionError(f"{where}: refused: {str(exc)[:300]}") from None
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:  # incl. bad JSON
            raise ConnectionError(f"{where}: {type(exc).__name__}: {str(exc)[:300]}") from None
        if not isinstance(result, list):
            raise ConnectionError(f"{where}: expected a list of series, got {result!r:.120}")
        return result


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
        connection: Connection | None = None,
    ) -> None:
        """Create a reader of the Prometheus at ``url`` (e.g. ``http://prometheus:9090``)."""
        self.url = url.rstrip("/")
        self.queries = queries or HistoryQueries()
        self.client = PrometheusClient(url=url, timeout_seconds=timeout_seconds, connection=connection)
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
        for selector in self.queries.render(policy.name):
            # a value only where a sample lies within the bucket (the window excludes its start,
            # as ranges in Prometheus 2 include both ends): a gap stays missing (NaN), never 0
            query = f"({selector}) and count_over_time({selector}[{round(b * 1000) - 1}ms])"
            series = await self._range(query, start=start, end=end, step=b)
            arrays.append(bucket_counts(series, start=start, bucket_seconds=b, buckets=buckets))
        found = History(start=start, requests=arrays[0], prompt_tokens=arrays[1], output_tokens=arrays[2])
        log.info("history_read", model=policy.name, buckets=buckets, covered=found.covered, start=start)
        return found

    async def _range(self, query: str, *, start: float, end: float, step: float) -> list[Samples]:
        """Return the samples of every series of ``query`` at ``start, start+step, ..., end`` (chunked)."""
        by_series: dict[tuple[tuple[str, str], ...], Samples] = {}
        chunk = step * (self.max_points - 1)
        lo = start
        while lo <= end:
            hi = min(end, lo + chunk)
            for item in await self.client.range(query, start=lo, end=hi, step=step):
                labels = tuple(sorted(item.get("metric", {}).items()))
                try:
                    values = [(float(t), float(v)) for t, v in item.get("values", [])]
                except (TypeError, ValueError):
                    raise ConnectionError(
                        f"prometheus {self.url} query_range {query!r}: expected a matrix result (a counter "
                        f"selector), got {item!r:.120}"
                    ) from None
                by_series.setdefault(labels, []).extend(values)
            lo = hi + step
        return list(by_series.values())


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
            log.warning("history_unavailable", model=model, error=str(exc) or "timed out")
            continue
        if history.covered:
            found[model] = history
        else:
            log.info("history_empty", model=model)
    return found


def reader_from_settings(prometheus: PrometheusSettings) -> PrometheusHistory | None:
    """Return the history reader the settings ask for (None when ``prometheus_url`` is not set)."""
    if prometheus.url is None:
        return None
    queries = HistoryQueries(
        requests=prometheus.requests_selector,
        prompt_tokens=prometheus.prompt_tokens_selector,
        output_tokens=prometheus.output_tokens_selector,
    )
    return PrometheusHistory(
        url=prometheus.url,
        queries=queries,
        timeout_seconds=prometheus.timeout_seconds,
        connection=connection_from_settings(prometheus),
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
        self,
        *,
        url: str,
        queries: SignalQueries | None = None,
        timeout_seconds: float = 10.0,
        connection: Connection | None = None,
    ) -> None:
        """Create a reader of the Prometheus at ``url``."""
        self.url = url.rstrip("/")
        self.queries = queries or SignalQueries()
        self.client = PrometheusClient(url=url, timeout_seconds=timeout_seconds, connection=connection)

    async def signal(self, model: str, *, now: float) -> FallbackSignal:
        """Return what Prometheus says of ``model`` now (None fields: no such series).

        Raises ConnectionError when Prometheus cannot be reached or refuses a query.
        """
        quoted = model.replace("\\", "\\\\").replace('"', '\\"')
        q = self.queries
        values: list[float | None] = []
        for template in (q.request_rate, q.running, q.waiting, q.ready_replicas):
            values.append(await self._instant(template.replace("{model}", quoted), now=now))
        rate, running, waiting, ready = values
        return FallbackSignal(
            at=now,
            request_rate=rate,
            replicas_ready=None if ready is None else round(ready),
            running=running,
            waiting=waiting,
        )

    async def _instant(self, query: str, *, now: float) -> float | None:
        result = await self.client.instant(query, at=now)
        if not result:
            return None
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ConnectionError(
                f"prometheus {self.url} query {query!r}: expected a vector, got {result[0]!r:.120}"
            ) from None
        return value if math.isfinite(value) else None


def signal_from_settings(prometheus: PrometheusSettings) -> PrometheusSignal | None:
    """Return the fallback signal reader the settings ask for (None when ``prometheus_url`` is not set)."""
    if prometheus.url is None:
        return None
    queries = SignalQueries(
        request_rate=prometheus.request_rate_query,
        running=prometheus.running_query,
        waiting=prometheus.waiting_query,
        ready_replicas=prometheus.ready_replicas_query,
    )
    return PrometheusSignal(
        url=prometheus.url,
        queries=queries,
        timeout_seconds=prometheus.timeout_seconds,
        connection=connection_from_settings(prometheus),
    )


def connection_from_settings(prometheus: PrometheusSettings) -> Connection:
    """Return the connection options of the ``prometheus_*`` settings; raise ValueError on a bad one."""
    headers: dict[str, str] = {}
    for header in prometheus.headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"prometheus_headers: {name.strip()[:40]!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    token = prometheus.bearer_token.get_secret_value() if prometheus.bearer_token else None
    if token is None and prometheus.bearer_token_file is not None:
        try:
            token = prometheus.bearer_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"prometheus_bearer_token_file: cannot read {prometheus.bearer_token_file}: "
                f"{exc.strerror}"
            ) from None
    password = prometheus.password
    basic = None
    if prometheus.username is not None:
        basic = (prometheus.username, password.get_secret_value() if password else "")
    cert = None
    if prometheus.certfile is not None and prometheus.keyfile is not None:
        cert = (str(prometheus.certfile), str(prometheus.keyfile))
    return Connection(
        headers=headers,
        bearer_token=token,
        basic_auth=basic,
        ca_file=str(prometheus.ca_file) if prometheus.ca_file else None,
        verify_tls=prometheus.tls_verify,
        client_cert=cert,
        retries=prometheus.retries,
    )
