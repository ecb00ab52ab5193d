"""The daemon's Prometheus metrics, in a registry of their own (served on /metrics by the HTTP adapter).

The per-model metrics (a ``model`` label: one series per model, 10,000s in one process) are
:class:`ModelSeries`: their values live in one dict per metric rather than in a prometheus_client
child object per series (about 0.6 KiB each); the exposition is the same (names, labels, HELP, TYPE,
counters' ``_created``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scaler.control.leadtime import LeadEstimate
from scaler.control.ledger import Unexported
from scaler.core.types import Decision

DECISION_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ModelSeries:
    """A counter or gauge with labels whose series are entries of a dict (a collector of its own).

    ``labels(...)`` returns a handle with ``inc`` (counters and gauges) and ``set`` (gauges), as a
    prometheus_client child does; a series exists from its first ``inc`` or ``set``, not before.
    """

    def __init__(
        self,
        kind: Literal["counter", "gauge"],
        name: str,
        documentation: str,
        labelnames: list[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        """Create the metric and register it in ``registry``; raise ValueError if the name is taken."""
        self.kind = kind
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}  # counters: when each series began
        registry.register(self)

    def labels(self, *values: str, **labels: str) -> SeriesHandle:
        """Return the handle of the series with these label values (by position or by name).

        Raise ValueError when they are not exactly the metric's labels.
        """
        if labels:
            if values or labels.keys() != set(self.labelnames):
                raise ValueError(
                    f"{self.name}: labels {list(self.labelnames)} expected, got {sorted(labels)}"
                )
            key = tuple(str(labels[name]) for name in self.labelnames)
        else:
            if len(values) != len(self.labelnames):
                raise ValueError(
                    f"{self.name}: {len(self.labelnames)} label values expected, got {len(values)}"
                )
            key = tuple(str(value) for value in values)
        return SeriesHandle(self, key)

    def remove(self, *values: str) -> None:
        """Drop the series with these label values; raise KeyError if there is none."""
        key = tuple(str(value) for value in values)
        del self._values[key]
        self._created.pop(key, None)

    def value(self, *values: str) -> float | None:
        """Return the value of the series with these label values, or None if it does not exist."""
        return self._values.get(tuple(str(value) for value in values))

    def _add(self, key: tuple[str, ...], amount: float) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        values = self._values
        if key in values:
            values[key] += amount
            return
        values[key] = float(amount)
        if self.kind == "counter":
            self._created[key] = time.time()

    def _set(self, key: tuple[str, ...], value: float) -> None:
        if self.kind == "counter":
            raise AttributeError(f"{self.name} is a counter: it has no set")
        self._values[key] = float(value)

    def describe(self) -> Iterator[Metric]:
        """Yield the metric without samples (the registry checks names with it)."""
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        """Yield the metric with one sample per series (a counter's ``_created`` beside its total)."""
        family = self._family()
        created = self._created if getattr(prometheus_client.metrics, "_use_created", True) else {}
        for key, value in list(self._values.items()):
            if isinstance(family, CounterMetricFamily):
                family.add_metric(key, value, created=created.get(key))
            else:
                family.add_metric(key, value)
        yield family

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return kind(self.name, self.documentation, labels=self.labelnames)


class SeriesHandle:
    """One series of a :class:`ModelSeries` (made per call; it holds no value of its own)."""

    __slots__ = ("_key", "_metric")

    def __init__(self, metric: ModelSeries, key: tuple[str, ...]) -> None:
        """Point at ``metric``'s series ``key``."""
        self._metric = metric
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (the series starts at 0); raise ValueError if a counter's amount is negative."""
        self._metric._add(self._key, amount)

    def set(self, value: float) -> None:
        """Set a gauge's series to ``value``; raise AttributeError on a counter."""
        self._metric._set(self._key, value)


class DaemonMetrics:
    """Every metric the daemon exports; names carry units and counters end in ``_total``."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry (tests and several daemons in one process never clash)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_consumed = Counter(
            "scaler_events_consumed", "Events read from the log.", ["topic"], registry=r
        )
        self.events_rejected = Counter(
            "scaler_events_rejected", "Events that failed validation, by reason.", ["reason"], registry=r
        )
        self.events_dropped = Counter(
            "scaler_events_dropped",
            "Valid events not aggregated: late, early, for a model this process does not own, or of a "
            "partition revoked after they were read (its next owner reads them; not counted as consumed).",
            ["why"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "scaler_decision_latency_seconds",
            "Time to forecast, plan and publish one model's decision.",
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = ModelSeries(
            "counter", "scaler_decisions", "Decisions made.", ["model", "trigger"], registry=r
        )
        self.decisions_published = ModelSeries(
            "counter",
            "scaler_decisions_published",
            "Decisions the broker acknowledged.",
            ["model"],
            registry=r,
        )
        self.desired_replicas = ModelSeries(
            "gauge", "scaler_desired_replicas", "Kubernetes replicas decided.", ["model"], registry=r
        )
        self.desired_standby = ModelSeries(
            "gauge", "scaler_desired_standby", "Warm standby replicas decided.", ["model"], registry=r
        )
        self.desired_serverless = ModelSeries(
            "gauge",
            "scaler_desired_serverless_instances",
            "Pre-warmed serverless instances decided.",
            ["model"],
            registry=r,
        )
        self.spill_fraction = ModelSeries(
            "gauge",
            "scaler_spill_fraction",
            "Share of new requests routed to serverless (0..1).",
            ["model"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "scaler_consumer_lag_messages",
            "Messages behind the end of the log.",
            ["topic", "partition"],
            registry=r,
        )
        self.owned_models = Gauge("scaler_owned_models", "Models this process acts for.", registry=r)
        self.policy_reload_errors = Counter(
            "scaler_policy_reload_errors", "Policy reloads rejected (last good policy kept).", registry=r
        )
        self.publish_errors = Counter(
            "scaler_publish_errors", "Decisions or dead letters that could not be published.", registry=r
        )
        self.checkpoints_saved = Counter("scaler_checkpoints_saved", "Model checkpoints written.", registry=r)
        self.bursts = ModelSeries(
            "counter",
            "scaler_bursts_detected",
            "Immediate re-plans on a burst above the forecast.",
            ["model"],
            registry=r,
        )
        # -- fencing (scaler.adapters.fence) --
        self.decisions_fenced = Counter(
            "scaler_decisions_fenced",
            "Decisions not published (action=publish) or not applied (action=actuate) because this "
            "process may no longer own the model: not_assigned, generation_changed, session_expired, "
            "lease_not_held.",
            ["action", "reason"],
            registry=r,
        )
        self.leases_held = Gauge(
            "scaler_leases_held", "Partition Leases this process holds (fencing with Kubernetes).", registry=r
        )
        # -- fallback (scaler.core.fallback) --
        self.fallback_active = ModelSeries(
            "gauge",
            "scaler_fallback_active",
            "1 while a model's events are silent and decisions use Prometheus (or hold) instead.",
            ["model"],
            registry=r,
        )

        # -- the shadow ledger (scaler.control.ledger), per process: a restart is a counter reset --
        self.cost_dollars = ModelSeries(
            "counter",
            "scaler_cost_dollars",
            "What the capacity in force cost, as the shadow ledger priced it (policy prices), by kind.",
            ["model", "kind"],
            registry=r,
        )
        self.predicted_cost_dollars = ModelSeries(
            "counter",
            "scaler_predicted_cost_dollars",
            "What each decision predicted its mix would cost over the interval until the next one.",
            ["model"],
            registry=r,
        )
        self.unobserved_seconds = ModelSeries(
            "counter",
            "scaler_ledger_unobserved_seconds",
            "Seconds the shadow ledger priced without a read-back of this kind (serverless_provisioned: "
            "billed as 0 then, unknown, as in dry-run).",
            ["model", "kind"],
            registry=r,
        )
        self.slo_requests = ModelSeries(
            "counter",
            "scaler_slo_requests",
            "Requests judged against the SLO: outcome met/missed/unknown, source measured/estimated/none.",
            ["model", "outcome", "source"],
            registry=r,
        )

        self._lead_quantiles: dict[tuple[str, str], set[str]] = {}  # learned series exported
        self.lead_time = ModelSeries(
            "gauge",
            "scaler_lead_time_seconds",
            "Lead time per kind (replica cold start, serverless warm-up): learned from observed starts, "
            "and as configured in the policy; the planner uses the learned one when present. quantile "
            "is the learned quantile (lead_times.quantile: the coverage lead; lead_times.lifetime_quantile: "
            "the typical lead a replica's lifetime starts at), empty for the configured value.",
            ["model", "kind", "source", "quantile"],
            registry=r,
        )

    def record_ledger(self, *, model: str, accrued: Unexported) -> None:
        """Add what a model's ledger accrued since it was last exported to the ledger counters."""
        for kind, amount in accrued.cost.as_dict().items():
            if amount > 0:
                self.cost_dollars.labels(model=model, kind=kind).inc(amount)
        if accrued.predicted > 0:
            self.predicted_cost_dollars.labels(model=model).inc(accrued.predicted)
        if accrued.serverless_unobserved_seconds > 0:
            self.unobserved_seconds.labels(model=model, kind="serverless_provisioned").inc(
                accrued.serverless_unobserved_seconds
            )
        for outcome, source, count in accrued.slo.labelled():
            if count > 0:
                self.slo_requests.labels(model=model, outcome=outcome, source=source).inc(count)

    def record_lead_times(self, *, model: str, lead_times: tuple[LeadEstimate, ...]) -> None:
        """Export the configured and (when there are) the learned coverage and typical lead times of each
        kind, the learned ones labelled by their quantile."""
        for estimate in lead_times:
            self.lead_time.labels(model=model, kind=estimate.kind, source="configured", quantile="").set(
                estimate.configured
            )
            pairs = {f"{estimate.typical_quantile:g}": estimate.learned_typical}
            pairs[f"{estimate.quantile:g}"] = estimate.learned  # the coverage lead wins a shared label
            known = self._lead_quantiles.setdefault((model, estimate.kind), set())
            for label in known - pairs.keys():  # the policy's quantiles changed
                self.lead_time.remove(model, estimate.kind, "learned", label)
            known.intersection_update(pairs)
            for label, value in pairs.items():
                if value is not None:
                    self.lead_time.labels(
                        model=model, kind=estimate.kind, source="learned", quantile=label
                    ).set(value)
                    known.add(label)
                elif label in known:  # not learned (yet, or any more): no series rather than a made-up value
                    self.lead_time.remove(model, estimate.kind, "learned", label)
                    known.discard(label)

    def record_decision(self, *, model: str, decision: Decision, trigger: str) -> None:
        """Update the per-model gauges and counters for a decision made."""
        self.decisions.labels(model=model, trigger=trigger).inc()
        self.desired_replicas.labels(model=model).set(decision.replicas)
        self.desired_standby.labels(model=model).set(decision.standby)
        self.desired_serverless.labels(model=model).set(decision.serverless_provisioned)
        self.spill_fraction.labels(model=model).set(decision.spill_fraction)

    def forget_model(self, model: str) -> None:
        """Drop the per-model gauges of a model this process no longer owns."""
        gauges = (self.desired_replicas, self.desired_standby, self.desired_serverless, self.spill_fraction)
        for gauge in (*gauges, self.fallback_active):  # fallback gauge too; counters stay, as they count
            try:
                gauge.remove(model)
            except KeyError:
                continue
        for kind in ("replica", "serverless"):
            labels = [("configured", "")]
            labels += [("learned", q) for q in self._lead_quantiles.pop((model, kind), set())]
            for source, quantile in labels:
                try:
                    self.lead_time.remove(model, kind, source, quantile)
                except KeyError:
                    continue

    def exposition(self) -> bytes:
        """Return the registry in the Prometheus text format."""
        return generate_latest(self.registry)
