"""vLLM counters -> request and token rates: both name forms, per-reason sums, resets, as tables and
properties."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.adapters.vllm import read_scrape, with_rates
from scaler.adapters.vllm_rates import Rates, Totals, rates
from scaler.core.events import decode_metric

GAUGES = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama-8b"} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-8b"} 3.0
"""

COUNTERS_V1 = """\
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="llama-8b"} 100.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="llama-8b"} 20.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="llama-8b"} 1.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="llama-8b"} 1.75e+09
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="llama-8b"} 50000.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="llama-8b"} 9000.0
"""

UNTYPED_WITHOUT_SUFFIX = """\
vllm:request_success{finished_reason="stop",model_name="llama-8b"} 121
vllm:prompt_tokens{model_name="llama-8b"} 50000
vllm:generation_tokens{model_name="llama-8b"} 9000
"""


@pytest.mark.parametrize("counters", [COUNTERS_V1, UNTYPED_WITHOUT_SUFFIX], ids=["total", "bare"])
def test_the_counters_of_either_name_form_are_read_and_request_reasons_summed(counters: str) -> None:
    scrape = read_scrape(GAUGES + counters, replica="r", now=10.0)
    assert scrape.totals == {
        "llama-8b": Totals(at=10.0, requests=121, prompt_tokens=50000, output_tokens=9000)
    }
    assert scrape.bad_counters == {}


def test_engines_add_up_and_the_total_form_wins_over_a_bare_duplicate() -> None:
    second_engine = COUNTERS_V1.replace('engine="0"', 'engine="1"')
    scrape = read_scrape(GAUGES + COUNTERS_V1 + second_engine + UNTYPED_WITHOUT_SUFFIX, replica="r", now=1.0)
    assert scrape.totals["llama-8b"] == Totals(
        at=1.0, requests=242, prompt_tokens=100000, output_tokens=18000
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("9000.0", "NaN"), "nan"),
        (("9000.0", "-5"), "-5"),
        (("50000.0", "+Inf"), "inf"),
    ],
)
def test_a_malformed_counter_costs_its_model_the_rates_never_the_gauges(
    change: tuple[str, str], why: str
) -> None:
    scrape = read_scrape(GAUGES + COUNTERS_V1.replace(*change), replica="r", now=1.0)
    assert scrape.totals == {}
    assert why in scrape.bad_counters["llama-8b"]
    (event,) = scrape.events
    assert (event.running, event.waiting, event.ready) == (7, 3, True)


def test_a_model_missing_a_counter_has_no_totals_and_no_problem() -> None:
    text = GAUGES + COUNTERS_V1.split("# TYPE vllm:generation_tokens_total", maxsplit=1)[0]
    scrape = read_scrape(text, replica="r", now=1.0)
    assert (scrape.totals, scrape.bad_counters) == ({}, {})


def _t(at: float, requests: float, prompt: float = 0.0, output: float = 0.0) -> Totals:
    return Totals(at=at, requests=requests, prompt_tokens=prompt, output_tokens=output)


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, _t(5, 100), None),  # the first scrape yields no rate
        (_t(0, 100, 1000, 200), _t(5, 110, 6000, 700), Rates(5, 2.0, 1000.0, 100.0, reset=False)),
        (_t(0, 100), _t(5, 100), Rates(5, 0.0, 0.0, 0.0, reset=False)),  # idle
        (_t(0, 500, 9000, 900), _t(5, 10, 100, 50), Rates(5, 2.0, 20.0, 10.0, reset=True)),  # restarted pod
        (_t(0, 500, 9000, 900), _t(5, 510, 100, 950), Rates(5, 2.0, 20.0, 10.0, reset=True)),  # one counter
        (_t(5, 100), _t(5, 200), None),  # no time passed
        (_t(0, 0, 0, 0), _t(1e-300, 0, 0, 4), None),  # under a millisecond: no rate (never infinite)
        (_t(6, 100), _t(5, 200), None),  # the clock went back
        (_t(0, 100), _t(16, 200), None),  # a gap over max_seconds (15)
    ],
)
def test_rates_between_two_scrapes(previous: Totals | None, current: Totals, expected: Rates | None) -> None:
    assert rates(previous, current, max_seconds=15.0) == expected


_value = st.floats(0.0, 1e12)
_totals = st.builds(
    Totals, at=st.floats(0.0, 1e4), requests=_value, prompt_tokens=_value, output_tokens=_value
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), _totals), _totals)
def test_rates_are_never_negative_and_a_decrease_is_a_reset(previous: Totals | None, current: Totals) -> None:
    found = rates(previous, current, max_seconds=60.0)
    if found is None:
        return
    assert previous is not None
    values = (found.requests, found.prompt_tokens, found.output_tokens)
    assert all(v >= 0 and math.isfinite(v) for v in values)
    went_down = (
        current.requests < previous.requests
        or current.prompt_tokens < previous.prompt_tokens
        or current.output_tokens < previous.output_tokens
    )
    assert found.reset == went_down
    assert 0 < found.seconds <= 60.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.5, 30.0), st.integers(0, 10_000), st.booleans()), min_size=2, max_size=30)
)
def test_a_counter_timeline_with_restarts_never_credits_more_than_was_served(
    steps: list[tuple[float, int, bool]],
) -> None:
    """A server serves ``n`` requests per step; ``restart`` zeroes its counter first (a new pod).

    A restart shows only if the counter went down; then nothing is lost (like Prometheus' rate()).
    """
    at, counter = 0.0, 0
    previous: Totals | None = _t(at, counter)
    served = credited = 0.0
    hidden = False  # a restart the counter did not show (it climbed back above its old value)
    for wait, n, restart in steps:
        at += wait
        old = counter
        counter = (0 if restart else counter) + n
        hidden = hidden or (restart and counter >= old and old > 0)
        current = _t(at, counter, 10 * counter, counter)
        found = rates(previous, current, max_seconds=60.0)
        assert found is not None
        assert min(found.requests, found.prompt_tokens, found.output_tokens) >= 0
        served += n
        credited += found.requests * found.seconds
        previous = current
    assert credited <= served * (1 + 1e-9)
    if not hidden:
        assert credited == pytest.approx(served)


def test_an_event_with_rates_is_what_the_daemon_accepts() -> None:
    (event,) = read_scrape(GAUGES + COUNTERS_V1, replica="r", now=1000.0).events
    event = with_rates(event, Rates(5.0, 2.0, 1000.0, 100.0, reset=False))
    decoded = decode_metric(msgspec.json.encode(event), known_models={"llama-8b"}, now=1000.0, max_skew=60)
    assert (decoded.request_rate, decoded.prompt_token_rate, decoded.output_token_rate) == (
        2.0,
        1000.0,
        100.0,
    )
    assert decoded.rate_seconds == 5.0
