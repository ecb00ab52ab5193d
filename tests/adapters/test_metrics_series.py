"""The per-model metrics kept as dict entries: the same /metrics text prometheus_client's own counters
and gauges give, a series only once it is touched, and a forgotten model's gauges gone."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from scaler.adapters.metrics import DaemonMetrics, ModelSeries
from scaler.core.types import Decision


def _exposition(registry: CollectorRegistry) -> str:
    """Return the registry's text with the ``_created`` timestamps blanked (they are wall-clock times)."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_series_expose_exactly_what_prometheus_client_children_expose() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_requests", "Requests by model.", ["model", "kind"], registry=theirs)
    gauge = Gauge("x_replicas", "Replicas by model.", ["model"], registry=theirs)
    our_counter = ModelSeries("counter", "x_requests", "Requests by model.", ["model", "kind"], registry=ours)
    our_gauge = ModelSeries("gauge", "x_replicas", "Replicas by model.", ["model"], registry=ours)
    for registry_counter, registry_gauge in ((counter, gauge), (our_counter, our_gauge)):
        registry_counter.labels(model="a", kind="replica").inc(2.5)
        registry_counter.labels("b", "standby").inc()
        registry_counter.labels(model="a", kind="replica").inc(0.5)
        registry_gauge.labels(model="a").set(3)
        registry_gauge.labels(model="b").set(0.125)
        registry_gauge.labels(model="b").inc(-1)
        registry_gauge.remove("a")
    assert _exposition(ours) == _exposition(theirs)
    assert 'x_requests_total{kind="replica",model="a"} 3.0' in _exposition(ours)
    assert ours.get_sample_value("x_replicas", {"model": "b"}) == -0.875


def test_a_series_appears_on_metrics_once_touched_and_a_forgotten_model_loses_its_gauges() -> None:
    metrics = DaemonMetrics()
    assert (
        metrics.registry.get_sample_value("scaler_decisions_total", {"model": "m", "trigger": "tick"}) is None
    )
    assert "scaler_desired_replicas{" not in metrics.exposition().decode()
    assert (
        "# TYPE scaler_desired_replicas gauge" in metrics.exposition().decode()
    )  # the family is there, empty
    decision = Decision(
        at=0.0,
        replicas=3,
        standby=1,
        serverless_provisioned=2,
        spill_fraction=0.25,
        reason="r",
        bound_by="none",
        quantile=0.5,
        cost_per_hour={},
    )
    metrics.record_decision(model="m", decision=decision, trigger="tick")
    metrics.record_decision(model="m", decision=decision, trigger="tick")
    text = metrics.exposition().decode()
    assert 'scaler_decisions_total{model="m",trigger="tick"} 2.0' in text
    assert 'scaler_decisions_created{model="m",trigger="tick"}' in text
    assert 'scaler_desired_replicas{model="m"} 3.0' in text
    assert 'scaler_spill_fraction{model="m"} 0.25' in text
    metrics.forget_model("m")
    text = metrics.exposition().decode()
    assert "scaler_desired_replicas{" not in text
    assert 'scaler_decisions_total{model="m",trigger="tick"} 2.0' in text  # counters stay: they count


def test_series_refuse_what_prometheus_client_refuses() -> None:
    metrics = DaemonMetrics()
    with pytest.raises(ValueError, match="non-negative"):
        metrics.decisions.labels(model="m", trigger="tick").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        metrics.decisions.labels(model="m")
    with pytest.raises(KeyError):
        metrics.desired_replicas.remove("never-set")
    with pytest.raises(ValueError, match="Duplicated"):
        ModelSeries("gauge", "scaler_desired_replicas", "again", ["model"], registry=metrics.registry)
