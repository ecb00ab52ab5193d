"""The vLLM bridge's pure part: exposition text -> replica metric events, as tables and properties."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.adapters.vllm import ScrapeError, not_ready, parse, replica_of
from scaler.core.events import decode_metric

NEW = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama-8b"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-8b"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama-8b"} 0.42
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="llama-8b"} 120.0
"""

OLD = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="mistral-7b"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="mistral-7b"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="mistral-7b"} 0.9
"""


def test_the_current_names_become_one_event_per_model() -> None:
    (event,) = parse(NEW, replica="10.0.0.7:8000", now=1000.0)
    assert (event.model, event.replica, event.ts) == ("llama-8b", "10.0.0.7:8000", 1000.0)
    assert (event.running, event.waiting, event.kv_cache_usage, event.ready) == (7, 3, 0.42, True)


def test_the_older_kv_cache_name_is_the_fallback() -> None:
    (event,) = parse(OLD, replica="r", now=1.0)
    assert (event.model, event.running, event.waiting, event.kv_cache_usage) == ("mistral-7b", 2, 0, 0.9)


def test_requests_of_several_engines_add_up_and_models_stay_apart() -> None:
    text = NEW + NEW.replace('engine="0"', 'engine="1"').split("# HELP vllm:request_success_total")[0] + OLD
    events = {e.model: e for e in parse(text, replica="r", now=1.0)}
    assert sorted(events) == ["llama-8b", "mistral-7b"]
    assert (events["llama-8b"].running, events["llama-8b"].waiting) == (14, 6)
    assert events["llama-8b"].kv_cache_usage == pytest.approx(0.42)  # a mean over engines, not a sum


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<html>hello</html>", "not_exposition"),
        ("garbage", "not_exposition"),
        ('vllm:num_requests_running{model_name="a"} 1\n<html>\n', "not_exposition"),
        ('vllm:num_requests_running{model_name="a"} 1\nprocess_open_fds{pid="1"\n', "not_exposition"),
        ('vllm:num_requests_running{model_name="a"} NaN\n', "bad_value"),
        ('vllm:num_requests_running{model_name="a"} -1\n', "bad_value"),
        ('vllm:num_requests_running{model_name="a"} +Inf\n', "bad_value"),
        (
            'vllm:num_requests_running{model_name="a"} 1\nvllm:kv_cache_usage_perc{model_name="a"} 1.5\n',
            "bad_value",
        ),
        ("vllm:num_requests_running 1\n", "bad_label"),
        ("# TYPE up gauge\nup 1\n", "no_vllm_metrics"),
        ("", "no_vllm_metrics"),
    ],
)
def test_unusable_scrapes_name_their_reason(text: str, reason: str) -> None:
    with pytest.raises(ScrapeError) as caught:
        parse(text, replica="r", now=1.0)
    assert caught.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_valid_events_or_a_scrape_error(text: str) -> None:
    try:
        events = parse(text, replica="r", now=1000.0)
    except ScrapeError:
        return
    for event in events:  # what the bridge publishes, the daemon accepts
        decode_metric(msgspec.json.encode(event), known_models={event.model}, now=1000.0, max_skew=60)


def test_a_failed_scrape_reports_the_replica_not_ready() -> None:
    (event,) = not_ready({"llama-8b"}, replica="r", now=5.0)
    assert (event.ready, event.running, event.waiting, event.kv_cache_usage) == (False, 0, 0, 0.0)


@pytest.mark.parametrize(
    ("url", "replica"),
    [
        ("http://10.0.0.7:8000/metrics", "10.0.0.7:8000"),
        ("https://vllm-0.vllm.svc/metrics", "vllm-0.vllm.svc"),
    ],
)
def test_the_replica_is_the_target_host(url: str, replica: str) -> None:
    assert replica_of(url) == replica


@pytest.mark.parametrize("url", ["10.0.0.7:8000/metrics", "ftp://x/metrics", "http:///metrics"])
def test_a_target_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        replica_of(url)


def test_metrics_the_bridge_does_not_read_are_checked_for_shape_and_named_by_line() -> None:
    other = "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\n"
    other += 'process_open_fds{pid="1"} 12 1700\n\n'
    (event,) = parse(other + NEW, replica="r", now=1.0)
    assert (event.running, event.waiting) == (7, 3)
    with pytest.raises(ScrapeError, match="line 4 is not an exposition line: 'Traceback"):
        parse(other[:-1] + "Traceback (most recent call last):\n" + NEW, replica="r", now=1.0)


def test_vllm_metrics_the_bridge_does_not_read_are_skipped_even_when_odd() -> None:
    histogram = (
        "# TYPE vllm:time_to_first_token_seconds histogram\n"
        'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="llama-8b"} NaN\n'
        'vllm:time_to_first_token_seconds_count{model_name="llama-8b"} -3\n'
    )
    (event,) = parse(histogram + NEW, replica="r", now=1.0)
    assert (event.running, event.waiting) == (7, 3)
