"""vLLM's Prometheus ``/metrics`` as replica metric events (topic ``llm.metrics``): the bridge's adapter.

Each target is one vLLM server (one replica). A scrape becomes one event per ``model_name`` label:

* ``running``: ``vllm:num_requests_running``; ``waiting``: ``vllm:num_requests_waiting`` (summed over
  the server's engines);
* ``kv_cache_usage``: ``vllm:kv_cache_usage_perc``, else the older ``vllm:gpu_cache_usage_perc``
  (both are fractions 0..1 despite the name; the mean over engines);
* ``ready``: the scrape succeeded; a target that fails after a good scrape is published as not ready
  (with zero load) for the models it served, so the daemon sees the replica go;
* ``replica``: the target's ``host:port`` (a discovered pod: its name);
* ``request_rate``, ``prompt_token_rate``, ``output_token_rate`` and ``rate_seconds``: requests served
  and tokens per second since the target's previous good scrape, from vLLM's counters
  (:mod:`scaler.adapters.vllm_rates`: none on the first scrape, a reset never gives a negative rate).

Why rates on the metric event rather than synthesized request events: the daemon keeps one demand
path, its bucket aggregator, and the controller counts a replica's rates there as the arrivals and
tokens they stand for, only while the model has no request events (see
:mod:`scaler.control.controller`). Synthesizing request events would mean one record per request
with invented ids, prompt sizes and finish events, many times the traffic, and the daemon could not
tell them from real ones to avoid counting a model twice.

A scrape fails, for its own target only, on an HTTP error, a body over ``max_bytes``, a response
slower than ``timeout_seconds``, text that is not Prometheus exposition, a gauge that is NaN, negative
or out of range, or no vLLM gauge at all. Each failure is logged with the target and counted in
``scaler_bridge_scrape_errors_total{target, reason}``; the other targets are scraped all the same.
A malformed counter (NaN, infinite, negative) or rates beyond the event's bounds cost only that
model's rates (reason ``bad_counter``); a counter that went down is counted in
``scaler_bridge_counter_resets_total{target}``.

Targets are a static list and/or those a :class:`Discovery` lists (Kubernetes pods by label selector:
:mod:`scaler.adapters.vllm_discovery`), listed again every ``refresh_seconds``; a listing that fails
is logged and counted in ``scaler_bridge_discovery_errors_total{reason}`` and the last good list is
kept; a target that leaves the list is published not ready once, for the models it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from scaler.adapters.kafka import client_options
from scaler.adapters.vllm_rates import COUNTERS, CounterReader, Rates, Totals, rates
from scaler.core.events import MAX_RATE_SECONDS, MetricEvent
from scaler.ports import Clock
from scaler.settings import KafkaSettings

log = structlog.get_logger("scaler.bridge")

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newest name first
GAUGES = frozenset({RUNNING, WAITING, *KV_CACHE})
_READ = (*sorted(GAUGES), *COUNTERS)  # name prefixes of the lines the bridge reads
MAX_MODEL_CHARS = 256
# a sample (``name{labels} value [timestamp]``), a comment or a blank line; labels are not checked further
_EXPOSITION_LINE = re.compile(r"[ \t]*(#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?[ \t]+\S+([ \t]+\S+)?[ \t]*)?")
MAX_COUNT = 2**31 - 1


class ScrapeError(Exception):
    """A scrape could not be turned into events; ``reason`` is a short label for the error counter."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def replica_of(url: str) -> str:
    """Return the replica name of a target URL: its ``host:port``; raise ValueError if it has none."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"target {url!r} is not an http(s) URL (e.g. http://10.0.0.7:8000/metrics)")
    return parts.netloc


@dataclasses.dataclass(frozen=True, slots=True)
class Scrape:
    """What one good scrape held: an event per model (no rates yet), counter totals, counter problems."""

    events: list[MetricEvent]
    totals: dict[str, Totals]  # model -> its counters (models with all three, well-formed)
    bad_counters: dict[str, str]  # model -> what was wrong with one of its counters


def parse(text: str, *, replica: str, now: float) -> list[MetricEvent]:
    """Return one event per model in the vLLM exposition ``text``; raise ScrapeError if it is unusable."""
    return read_scrape(text, replica=replica, now=now).events


def read_scrape(text: str, *, replica: str, now: float) -> Scrape:
    """Return the events and counters of the vLLM exposition ``text``; raise ScrapeError if it is unusable.

    A malformed counter (NaN, infinite, negative) costs its model's rates only, never its gauges.
    """
    gauges, samples, counters = _read_families(text)
    models = sorted(set(gauges.get(RUNNING, {})) | set(gauges.get(WAITING, {})))
    if not models:
        raise ScrapeError("no_vllm_metrics", f"neither {RUNNING} nor {WAITING} with a model_name label")
    events = []
    for model in models:
        # requests add up over a server's engines (data parallel); KV-cache use is their mean
        kv = next((gauges[n][model] / samples[n, model] for n in KV_CACHE if model in gauges.get(n, {})), 0.0)
        if kv > 1.0:
            raise ScrapeError("bad_value", f"KV cache usage of {model!r} is {kv}, over 1")
        running = gauges.get(RUNNING, {}).get(model, 0.0)
        waiting = gauges.get(WAITING, {}).get(model, 0.0)
        if max(running, waiting) > MAX_COUNT:
            raise ScrapeError("bad_value", f"request counts of {model!r} are out of range")
        events.append(
            MetricEvent(
                model=model,
                ts=now,
                replica=replica,
                waiting=round(waiting),
                running=round(running),
                kv_cache_usage=kv,
                ready=True,
            )
        )
    totals, bad = counters.totals(at=now)
    served = set(models)
    return Scrape(
        events=events,
        totals={m: t for m, t in totals.items() if m in served},
        bad_counters={m: why for m, why in bad.items() if m in served},
    )


def _read_families(
    text: str,
) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], int], CounterReader]:
    """Return the gauges of ``text`` summed per model, their sample counts, and its counters."""
    gauges: dict[str, dict[str, float]] = {}  # metric name -> model -> summed value (over engines)
    samples: dict[tuple[str, str], int] = {}  # (metric name, model) -> samples summed
    counters = CounterReader()
    try:
        for family in text_string_to_metric_families(_relevant(text)):
            if family.name not in GAUGES:
                for sample in family.samples:
                    counters.add(sample.name, sample.labels, sample.value)
                continue
            for sample in family.samples:
                if sample.name != family.name:
                    continue
                model = sample.labels.get("model_name", "")
                if not model or len(model) > MAX_MODEL_CHARS:
                    detail = f"{sample.name}: model_name {model[:64]!r} is empty or too long"
                    raise ScrapeError("bad_label", detail)
                if math.isnan(sample.value) or math.isinf(sample.value) or sample.value < 0:
                    raise ScrapeError("bad_value", f"{sample.name}{{model_name={model!r}}} is {sample.value}")
                per_model = gauges.setdefault(family.name, {})
                per_model[model] = per_model.get(model, 0.0) + sample.value
                samples[family.name, model] = samples.get((family.name, model), 0) + 1
    except ScrapeError:
        raise
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on garbage
        raise ScrapeError("not_exposition", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return gauges, samples, counters


def _relevant(text: str) -> str:
    """Return the lines of ``text`` the bridge reads (the vLLM gauges and counters, with their comments).

    The other lines (vLLM's histograms, the process and Python metrics) are most of a scrape and the
    parser is slow, so they are only checked to have an exposition line's shape; raise ScrapeError
    naming the first line that has not (an HTML page, a truncated body).
    """
    kept = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if name.startswith(_READ):
            kept.append(line)
        elif _EXPOSITION_LINE.fullmatch(line) is None:
            raise ScrapeError("not_exposition", f"line {number} is not an exposition line: {line[:80]!r}")
    return "\n".join(kept) + "\n" if kept else ""


def with_rates(event: MetricEvent, found: Rates) -> MetricEvent:
    """Return ``event`` carrying ``found`` (rates within the event's bounds: :meth:`Rates.in_bounds`)."""
    return msgspec.structs.replace(
        event,
        request_rate=found.requests,
        prompt_token_rate=found.prompt_tokens,
        output_token_rate=found.output_tokens,
        rate_seconds=found.seconds,
    )


def not_ready(models: Iterable[str], *, replica: str, now: float) -> list[MetricEvent]:
    """Return events saying ``replica`` serves nothing of ``models`` now (its scrape failed)."""
    return [
        MetricEvent(model=m, ts=now, replica=replica, waiting=0, running=0, kv_cache_usage=0.0, ready=False)
        for m in sorted(models)
    ]


async def fetch(session: aiohttp.ClientSession, url: str, *, max_bytes: int, timeout_seconds: float) -> str:
    """Return the body of ``url`` as text; raise ScrapeError on an HTTP error, a timeout or a body too big."""
    try:
        async with asyncio.timeout(timeout_seconds):
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise ScrapeError("http_status", f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65_536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise ScrapeError("too_big", f"body over {max_bytes} bytes")
    except TimeoutError:
        raise ScrapeError("timeout", f"no full answer within {timeout_seconds} s") from None
    except aiohttp.ClientError as exc:
        raise ScrapeError("unreachable", str(exc) or type(exc).__name__) from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError("not_exposition", "body is not UTF-8") from None


@dataclasses.dataclass(frozen=True, slots=True)
class BridgeOptions:
    """How the bridge scrapes: every ``interval_seconds``, each answer bounded in time and size; the
    discovered targets are listed again every ``refresh_seconds``."""

    interval_seconds: float = 5.0
    timeout_seconds: float = 2.0
    max_bytes: int = 4 * 1024 * 1024
    refresh_seconds: float = 30.0

    @property
    def max_rate_seconds(self) -> float:
        """Return the longest gap between two scrapes that still yields rates (three intervals)."""
        return min(
            max(3 * self.interval_seconds, self.interval_seconds + self.timeout_seconds), MAX_RATE_SECONDS
        )


class DiscoveryError(Exception):
    """Targets could not be listed; ``reason`` is a short label for the error counter."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class Discovery(Protocol):
    """Finds scrape targets (:class:`scaler.adapters.vllm_discovery.PodDiscovery`)."""

    async def targets(self) -> dict[str, str]:
        """Return the targets now, URL -> replica name; raise DiscoveryError if they cannot be listed."""


@dataclasses.dataclass(slots=True)
class _Target:
    """What the bridge remembers of one target: its replica, its models and counters of the last scrape."""

    replica: str
    served: frozenset[str] = frozenset()
    totals: dict[str, Totals] = dataclasses.field(default_factory=dict)


class VllmBridge:
    """Scrapes vLLM targets and publishes their replica metric events to Kafka, keyed by model.

    The targets are the static ``targets`` and, with a ``discovery``, the ones it lists (refreshed
    every ``options.refresh_seconds``; on an error the last good list is kept). A target that leaves
    the list is published once as not ready for the models it served, then forgotten.
    """

    def __init__(
        self,
        *,
        targets: Sequence[str],
        kafka: KafkaSettings,
        options: BridgeOptions,
        registry: CollectorRegistry | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        """Create a stopped bridge; raise ValueError if a target is not an http(s) URL."""
        self.static = {url: replica_of(url) for url in targets}
        self.kafka = kafka
        self.options = options
        self.discovery = discovery
        self.discovered: dict[str, str] = {}
        self._next_refresh = -math.inf
        self._state: dict[str, _Target] = {}
        self.errors = Counter(
            "scaler_bridge_scrape_errors",
            "Failed scrapes of vLLM targets (bad_counter: a counter only), by target and reason.",
            ["target", "reason"],
            registry=registry,
        )
        self.resets = Counter(
            "scaler_bridge_counter_resets",
            "vLLM counters that went down (a restarted server), by target.",
            ["target"],
            registry=registry,
        )
        self.discovery_errors = Counter(
            "scaler_bridge_discovery_errors",
            "Failed listings of the discovered targets (the last good list is kept), by reason.",
            ["reason"],
            registry=registry,
        )
        self.published = Counter(
            "scaler_bridge_events_published", "Replica metric events published.", registry=registry
        )
        self._producer: AIOKafkaProducer | None = None

    @property
    def targets(self) -> dict[str, str]:
        """Return the targets scraped now, URL -> replica name (static ones win over discovered ones)."""
        return {**self.discovered, **self.static}

    @property
    def served(self) -> dict[str, frozenset[str]]:
        """Return the models each target served at its last good scrape."""
        return {url: state.served for url, state in self._state.items()}

    async def refresh(self, *, now: float) -> None:
        """List the discovered targets if due; on an error, log and count it and keep the last list."""
        if self.discovery is None or now < self._next_refresh:
            return
        self._next_refresh = now + self.options.refresh_seconds
        try:
            found = await self.discovery.targets()
        except DiscoveryError as exc:
            self.discovery_errors.labels(reason=exc.reason).inc()
            log.warning("discovery_failed", reason=exc.reason, detail=exc.detail, kept=len(self.discovered))
            return
        if found != self.discovered:
            log.info("targets_discovered", targets=sorted(found))
        self.discovered = found

    async def scrape_once(self, session: aiohttp.ClientSession, *, now: float) -> list[MetricEvent]:
        """Refresh the discovered targets when due, then scrape every target at once; return their events.

        Targets that left the list come first, as not ready; failed targets are logged and counted.
        """
        await self.refresh(now=now)
        current = self.targets
        events: list[MetricEvent] = []
        for url in [u for u, state in self._state.items() if current.get(u) != state.replica]:
            state = self._state.pop(url)
            log.info("target_gone", target=url, replica=state.replica, models=sorted(state.served))
            events.extend(not_ready(state.served, replica=state.replica, now=now))
        for url, replica in current.items():
            self._state.setdefault(url, _Target(replica=replica))
        results = await asyncio.gather(*(self._scrape(session, url, now=now) for url in current))
        return events + [event for found in results for event in found]

    async def _scrape(self, session: aiohttp.ClientSession, url: str, *, now: float) -> list[MetricEvent]:
        state = self._state[url]
        try:
            text = await fetch(
                session, url, max_bytes=self.options.max_bytes, timeout_seconds=self.options.timeout_seconds
            )
            # parsed off the event loop: a big body must not hold up the other targets' answers
            scrape = await asyncio.to_thread(read_scrape, text, replica=state.replica, now=now)
        except ScrapeError as exc:
            self.errors.labels(target=url, reason=exc.reason).inc()
            log.warning("scrape_failed", target=url, reason=exc.reason, detail=exc.detail)
            return not_ready(state.served, replica=state.replica, now=now)
        for model, detail in scrape.bad_counters.items():
            self.errors.labels(target=url, reason="bad_counter").inc()
            log.warning("scrape_failed", target=url, reason="bad_counter", model=model, detail=detail)
        events = []
        for event in scrape.events:
            totals = scrape.totals.get(event.model)
            found = None
            if totals is not None:
                found = rates(
                    state.totals.get(event.model), totals, max_seconds=self.options.max_rate_seconds
                )
            if found is not None and found.reset:
                self.resets.labels(target=url).inc()
                log.warning("counter_reset", target=url, model=event.model)
            if found is not None and not found.in_bounds():
                self.errors.labels(target=url, reason="bad_counter").inc()
                detail = f"{found.requests:.6g} requests/s, {found.output_tokens:.6g} output tokens/s"
                log.warning(
                    "scrape_failed", target=url, reason="bad_counter", model=event.model, detail=detail
                )
                found = None
            events.append(event if found is None else with_rates(event, found))
        state.served = frozenset(e.model for e in events)
        state.totals = scrape.totals
        return events

    async def start(self) -> None:
        """Connect the producer; raise ConnectionError if Kafka cannot be reached."""
        self._producer = AIOKafkaProducer(**client_options(self.kafka), acks="all", linger_ms=5)
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise ConnectionError(f"cannot start the Kafka producer: {exc}") from exc

    async def publish(self, events: Sequence[MetricEvent]) -> None:
        """Send ``events`` to the metrics topic and wait for the broker; raise ConnectionError on failure."""
        assert self._producer is not None, "start() first"
        topic = self.kafka.metrics_topic
        try:
            futures = [
                await self._producer.send(topic, value=msgspec.json.encode(e), key=e.model.encode())
                for e in events
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise ConnectionError(f"metric events not published: {exc}") from exc
        self.published.inc(len(events))

    async def run(self, *, stopping: asyncio.Event, clock: Clock) -> None:
        """Scrape and publish every interval until ``stopping`` is set; a failed publish is logged."""
        timeout = aiohttp.ClientTimeout(total=None)  # each fetch is bounded by its own timeout
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stopping.is_set():
                started = clock.now()
                events = await self.scrape_once(session, now=started)
                try:
                    await self.publish(events)
                except ConnectionError as exc:
                    log.error("publish_failed", error=str(exc), events=len(events))
                else:
                    log.info("scraped", targets=len(self.targets), events=len(events))
                left = self.options.interval_seconds - (clock.now() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), max(left, 0.0))

    async def stop(self) -> None:
        """Close the producer; never raises."""
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception as exc:  # shutting down: log and go on
                log.warning("producer_stop_failed", error=str(exc))
            self._producer = None


def counts(registry: CollectorRegistry) -> Mapping[tuple[str, str], float]:
    """Return the scrape error counts of ``registry`` by (target, reason)."""
    found: dict[tuple[str, str], float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "scaler_bridge_scrape_errors_total":
                found[(sample.labels["target"], sample.labels["reason"])] = sample.value
    return found
