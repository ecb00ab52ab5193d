"""History from a real Prometheus preloaded with days of synthetic vLLM counters seeds the same forecast
as feeding the same series directly; counts from counter samples (resets, gaps) as a table."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import numpy as np
import pytest
from clocks import FixedClock
from integration_fixtures import decide_now, make_runtime
from prometheus_fixtures import create_blocks, openmetrics_counters, prometheus

from scaler.adapters.prometheus import PrometheusHistory, bucket_counts
from scaler.core.policy import ModelPolicy
from scaler.forecast.models import DemandForecaster

B = 60.0


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([[(0, 10), (60, 15), (120, 15), (180, 20)]], [5, 0, 5]),
        ([[(0, 10), (60, 15)], [(0, 100), (60, 103), (120, 110)]], [8, 7, math.nan]),
        ([[(0, 50), (60, 4), (120, 9)]], [4, 5, math.nan]),  # reset: the new value is the count
        ([[(0, 1), (120, 3), (180, 4)]], [math.nan, math.nan, 1]),  # a gap is missing, never zero
        ([], [math.nan, math.nan, math.nan]),
    ],
)
def test_bucket_counts_difference_each_series_and_keep_gaps_missing(
    series: list[list[tuple[float, float]]], expected: list[float]
) -> None:
    got = bucket_counts(series, start=0.0, bucket_seconds=B, buckets=3)
    np.testing.assert_array_equal(got, np.array(expected, dtype=float))


def synthetic(n: int, *, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-bucket requests, prompt and output tokens of a daily cycle over ``n`` minute buckets."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(n)
    rate = 40.0 + 30.0 * np.sin(2 * np.pi * minutes / 1440.0)
    requests = rng.poisson(rate).astype(float)
    prompt = requests * 180.0 + rng.integers(0, 50, n)
    output = requests * 90.0 + rng.integers(0, 50, n)
    return requests, prompt, output


@pytest.mark.integration
def test_history_from_prometheus_seeds_the_same_forecast_as_the_series_itself(tmp_path: Path) -> None:
    days = 3
    n = days * 1440
    end = math.floor(time.time() / B) * B - 600.0
    start = end - n * B
    requests, prompt, output = synthetic(n)
    gap = slice(2000, 2030)  # half an hour no replica was scraped
    series: dict[str, list[tuple[float, float]]] = {}
    names = {
        "vllm:request_success_total": requests,
        "vllm:prompt_tokens_total": prompt,
        "vllm:generation_tokens_total": output,
    }
    for name, counts in names.items():
        # two replicas share the load; replica 2 restarts (counter reset) at bucket 3000
        share = np.floor(counts / 2)
        for replica, part in (("a", share), ("b", counts - share)):
            values = np.concatenate([[1000.0], 1000.0 + np.cumsum(part)])
            if replica == "b":
                values[3001:] = np.cumsum(part)[3000:] - np.cumsum(part)[2999]
            samples = [
                (start + k * B, float(values[k])) for k in range(n + 1) if not gap.start <= k < gap.stop
            ]
            series[f'{name}{{model_name="llama",instance="{replica}"}}'] = samples
        series[f'{name}{{model_name="other",instance="a"}}'] = [
            (start + k * B, 5.0 * k) for k in range(n + 1)
        ]
    data = tmp_path / "data"
    create_blocks(openmetrics_counters(series), data)
    policy = ModelPolicy.model_validate(
        {
            "name": "llama",
            "forecast": {"bucket_seconds": 60, "history_seconds": n * 60, "horizon_seconds": 1800},
        }
    )
    with prometheus(tmp_path, data_dir=data) as url:
        reader = PrometheusHistory(url=url, max_points=1000)  # 4320 steps: five chunks
        history = asyncio.run(reader.history(policy, now=end + 30.0))
    missing = np.zeros(n, dtype=bool)
    missing[gap.start - 1 : gap.stop] = True  # a bucket needs a sample at both of its ends
    expected = {"requests": requests.copy(), "prompt": prompt.copy(), "output": output.copy()}
    for counts in expected.values():
        counts[missing] = np.nan
    assert history.start == start
    np.testing.assert_array_equal(history.requests, expected["requests"])
    np.testing.assert_array_equal(history.prompt_tokens, expected["prompt"])
    np.testing.assert_array_equal(history.output_tokens, expected["output"])
    assert history.covered == n - int(missing.sum())

    from_prometheus = DemandForecaster.from_policy(policy)
    from_prometheus.seed(
        start=history.start,
        requests=history.requests,
        prompt_tokens=history.prompt_tokens,
        output_tokens=history.output_tokens,
    )
    direct = DemandForecaster.from_policy(policy)
    direct.seed(
        start=start,
        requests=expected["requests"],
        prompt_tokens=expected["prompt"],
        output_tokens=expected["output"],
    )
    a = from_prometheus.forecast(now=end + 30.0)
    b = direct.forecast(now=end + 30.0)
    assert a.valid
    np.testing.assert_allclose(a.rate_mean, b.rate_mean)
    np.testing.assert_allclose(a.rate_quantiles, b.rate_quantiles)
    assert a.mean_prompt_tokens == pytest.approx(b.mean_prompt_tokens)
    # the seeded forecast follows the daily cycle: the next half hour is near the synthetic rate
    minute = n % 1440
    truth = (40.0 + 30.0 * np.sin(2 * np.pi * (minute + np.arange(30)) / 1440.0)) / 60.0
    assert np.mean(np.abs(a.rate_mean[:30] - truth)) < 0.25 * np.mean(truth)


@pytest.mark.integration
def test_an_unreachable_or_refusing_prometheus_is_a_connection_error(tmp_path: Path) -> None:
    policy = ModelPolicy.model_validate({"name": "llama", "forecast": {"history_seconds": 3600}})
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        asyncio.run(PrometheusHistory(url="http://127.0.0.1:9", timeout_seconds=2).history(policy, now=1e9))
    from scaler.adapters.prometheus import HistoryQueries  # noqa: PLC0415

    broken = HistoryQueries(requests="vllm:request_success_total{model_name=")
    with prometheus(tmp_path) as url, pytest.raises(ConnectionError, match="refused"):
        asyncio.run(PrometheusHistory(url=url, queries=broken).history(policy, now=time.time()))


@pytest.mark.integration
def test_the_daemon_seeds_newly_owned_models_without_a_checkpoint(tmp_path: Path) -> None:
    from scaler.adapters.memory import MemorySink, MemoryStore  # noqa: PLC0415
    from scaler.app import Daemon  # noqa: PLC0415
    from scaler.settings import Settings  # noqa: PLC0415

    n = 1440
    now = time.time()  # the daemon's clock stays here: a minute passing mid-test moves no window
    end = math.floor(now / B) * B - 120.0
    start = end - n * B
    requests, prompt, output = synthetic(n, seed=3)
    series = {}
    for name, counts in (
        ("vllm:request_success_total", requests),
        ("vllm:prompt_tokens_total", prompt),
        ("vllm:generation_tokens_total", output),
    ):
        values = np.concatenate([[0.0], np.cumsum(counts)])
        series[f'{name}{{model_name="llama"}}'] = [(start + k * B, float(values[k])) for k in range(n + 1)]
    data = tmp_path / "data"
    create_blocks(openmetrics_counters(series), data)
    policies = {
        name: ModelPolicy.model_validate(
            {"name": name, "forecast": {"bucket_seconds": 60, "history_seconds": n * 60}}
        )
        for name in ("llama", "quiet")
    }
    from scaler.adapters.metrics import DaemonMetrics  # noqa: PLC0415
    from scaler.app import default_planner  # noqa: PLC0415

    metrics = DaemonMetrics()
    runtime = make_runtime(
        policies, sink=(sink := MemorySink()), planner=default_planner(), metrics=metrics
    )
    daemon = Daemon(
        settings=Settings(),
        runtime=runtime,
        source=None,  # type: ignore[arg-type]  # on_assigned only
        sink=sink,
        store=MemoryStore(),
        clock=FixedClock(now),
        metrics=metrics,
        http=None,
    )
    with prometheus(tmp_path, data_dir=data) as url:
        daemon.history = PrometheusHistory(url=url)
        asyncio.run(daemon.on_assigned(frozenset({"llama", "quiet"})))
    assert set(runtime.owned) == {"llama", "quiet"}
    # the day of history up to now; its last two minutes have no samples (missing, not zero)
    assert runtime.owned["llama"].forecaster.observed_buckets == n - 2  # type: ignore[attr-defined]
    assert runtime.owned["quiet"].forecaster.observed_buckets == 0  # type: ignore[attr-defined]
    decision = asyncio.run(decide_now(runtime, "llama", now=now))
    assert decision is not None
    assert not decision.held  # a forecast from history at once: no waiting for buckets to fill
    assert decision.replicas + decision.serverless_provisioned >= 1  # capacity for the forecast load

    daemon.history = PrometheusHistory(url="http://127.0.0.1:9", timeout_seconds=1)
    runtime.revoke(frozenset({"llama"}))
    asyncio.run(daemon.on_assigned(frozenset({"llama"})))  # Prometheus down: the model still starts
    assert runtime.owned["llama"].forecaster.observed_buckets == 0  # type: ignore[attr-defined]
