"""The daemon's lifecycle: startup -> main loop -> graceful shutdown, and the signals that drive it.

Tasks of the main loop, all stopped by one event:

* consume: poll a batch, decode and aggregate it under the runtime lock, dead-letter the invalid
  events, flush, then commit. Offsets only ever cover aggregated events and events whose dead
  letter the broker acknowledged: a letter that fails stays owed (retried, counted, logged) and
  nothing read is settled until none is owed;
* tick: every ``burst_check_seconds``, plan every owned model whose interval is due or that sees a
  burst, and export the consumer lag;
* checkpoint: every ``checkpoint_interval_seconds``, bring each owned model's ledger up to now and
  save its state;
* leases (with Kubernetes fencing): acquire the assigned partitions' Leases and renew them;
* policy watch: re-read the policy files when their mtime or size changes; a broken edit is logged
  and counted, and the last good policies stay in force;
* decision feed (with the KEDA external scaler): tail the decisions topic, so that KEDA gets every
  model's newest decision from any process.

The first SIGTERM/SIGINT stops consuming, commits and writes final checkpoints, then returns 0;
a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from scaler.adapters import actuator_setup, alerts, fence, prometheus
from scaler.adapters.checkpoint_spool import SpoolingCheckpointStore
from scaler.adapters.http import HttpServer
from scaler.adapters.memory import MAX_BATCH_SECONDS, MemorySink, MemoryStore, ReplaySource, VirtualClock
from scaler.adapters.metrics import DaemonMetrics
from scaler.control.controller import Trigger
from scaler.core import plan
from scaler.core.policy import ModelPolicy
from scaler.core.policy_file import PolicyError, load_policies
from scaler.executor import Executor
from scaler.ports import (
    CheckpointStore,
    Clock,
    DeadLetterError,
    DecisionSink,
    EventSource,
    Planner,
    RawRecord,
)
from scaler.runtime import Runtime, RuntimeOptions, refresh_fallback, settle_collector
from scaler.settings import CheckpointSettings, KedaSettings, Settings

if TYPE_CHECKING:
    from scaler.adapters import kafka as kafka_types
    from scaler.adapters.decision_feed import DecisionFeed
    from scaler.adapters.keda import KedaServer
    from scaler.adapters.lease import LeaseKeeper

log = structlog.get_logger("scaler.app")

MAX_OWED_LETTERS = 10_000  # dead letters not yet acknowledged: at this many, no more is read until some are
LETTER_RETRY_SECONDS = 1.0  # after a failed delivery, owed letters are sent again no sooner than this
_LOGGED_LETTERS = 20  # failed letters logged one by one per attempt (the rest in one line)


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        """Return unix time in seconds."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``."""
        await asyncio.sleep(seconds)


def default_planner() -> Planner:
    """Return the planner the daemon runs, :func:`scaler.core.plan.plan`."""
    return plan.plan


def policy_signature(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """Return (path, mtime_ns, size) of each policy file ((path, -1, -1) when it cannot be read)."""
    found = []
    for path in paths:
        try:
            st = path.stat()
            found.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            found.append((str(path), -1, -1))
    return tuple(found)


class Daemon:
    """Wires a runtime to its source, sink, checkpoint store, clock and HTTP server, and runs them."""

    def __init__(
        self,
        *,
        settings: Settings,
        runtime: Runtime,
        source: EventSource,
        sink: DecisionSink,
        store: CheckpointStore,
        clock: Clock,
        metrics: DaemonMetrics,
        http: HttpServer | None,
        reload_policies: Callable[[], dict[str, ModelPolicy]] | None = None,
    ) -> None:
        """Create a daemon; nothing runs until :meth:`run`."""
        self.settings = settings
        self.runtime = runtime
        self.source = source
        self.sink = sink
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.http = http
        self.reload_policies = reload_policies or (lambda: load_policies(settings.policy_files))
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.assigned = False
        self._signals = 0
        self._policy_sig = policy_signature(settings.policy_files)
        # dead letters not yet acknowledged, by their record's (topic, partition, offset): while any is
        # owed, nothing read is settled (so no commit covers it); the one task delivering them holds the lock
        self._owed: dict[tuple[str, int, int], tuple[RawRecord, str, str]] = {}
        self._delivering = asyncio.Lock()
        self._retry_at = 0.0  # monotonic: owed letters are not sent again before (after a failure)
        self._read_counted = True  # every record polled so far was ingested
        self.history: prometheus.PrometheusHistory | None = None  # seeds new models' forecasters
        self.signals: prometheus.PrometheusSignal | None = None  # fallback when a model's events stop
        self.keda: KedaServer | None = None  # KEDA external scaler (gRPC), when keda_listen is set
        self.feed: DecisionFeed | None = None  # the decisions topic, tailed for the KEDA scaler
        self.leases: LeaseKeeper | None = None  # fencing Leases, when on (scaler.adapters.lease)

    # -- readiness and ownership callbacks ------------------------------------------------------

    def not_ready(self) -> str | None:
        """Return why the daemon is not ready, or None when it is."""
        if self.stopping.is_set():
            return "shutting down"
        if not self.runtime.policies:
            return "no policies loaded"
        if not self.assigned:
            return "waiting for the consumer group assignment"
        if not self.source.connected():
            return "the event log is unreachable"
        return None

    async def on_assigned(self, models: frozenset[str]) -> None:
        """Load the checkpoints of newly owned models and start acting for them."""
        checkpoints = await self.store.load(models) if models else {}
        histories = await self._histories(models - checkpoints.keys() - self.runtime.owned.keys())
        async with self.lock:
            self.runtime.assign(models, checkpoints=checkpoints, now=self.clock.now())
            for model, found in histories.items():  # new models without a checkpoint: seed from Prometheus
                self.runtime.seed(
                    model,
                    start=found.start,
                    requests=found.requests,
                    prompt_tokens=found.prompt_tokens,
                    output_tokens=found.output_tokens,
                )
        self.assigned = True
        log.info("models_assigned", models=sorted(models), resumed=sorted(checkpoints))

    async def _histories(self, models: frozenset[str]) -> dict[str, prometheus.History]:
        """Return Prometheus history of ``models`` (none without a reader); never raises."""
        if self.history is None or not models:
            return {}
        return await prometheus.read_histories(
            self.history,
            self.runtime.policies,
            models=models,
            now=self.clock.now(),
            timeout_seconds=self.settings.prometheus_timeout_seconds,
        )

    async def on_revoked(self, models: frozenset[str]) -> None:
        """Stop acting for ``models`` before they move: final checkpoints, flush and commit."""
        async with self.lock:
            final = self.runtime.revoke(models, now=self.clock.now())
        await self.runtime.executor.release(models)
        await self._save(final)
        await self._flush_and_commit()
        log.info("models_revoked", models=sorted(models))

    # -- tasks ------------------------------------------------------------------------------------

    async def _save(self, checkpoints: dict[str, bytes]) -> None:
        if not checkpoints:
            return
        try:
            await self.store.save(checkpoints)
            self.metrics.checkpoints_saved.inc(len(checkpoints))
        except ConnectionError as exc:
            log.error("checkpoint_not_saved", error=str(exc), models=len(checkpoints))

    async def _flush_and_commit(self, *, retry_now: bool = False) -> None:
        """Deliver the owed dead letters, settle what was read once none is owed, commit; never raises."""
        self._forget_moved()
        await self._deliver_letters(retry_now=retry_now)
        if not self._owed and self._read_counted:
            self.source.settle()  # counted, or dead-lettered and acknowledged: a commit may cover them now
        try:
            await self.source.commit()
        except (ConnectionError, TimeoutError) as exc:
            log.warning("commit_skipped", error=str(exc) or type(exc).__name__)

    async def _deliver_letters(self, *, retry_now: bool = False) -> None:
        """Send every dead letter owed and wait for the broker: those acknowledged are owed no more.

        A letter not queued or not delivered stays owed: it is sent again on a later call (no sooner
        than LETTER_RETRY_SECONDS after a failure, unless ``retry_now``), counted in
        ``scaler_publish_errors_total`` and logged with its record's topic, partition and offset.
        Returns at once while another task delivers them; raises nothing but CancelledError.
        """
        if self._delivering.locked():
            return
        loop = asyncio.get_running_loop()
        if self._owed and not retry_now and loop.time() < self._retry_at:
            return
        async with self._delivering:
            queued: list[tuple[str, int, int]] = []
            failed: dict[tuple[str, int, int], str] = {}
            for origin, (record, reason, detail) in list(self._owed.items()):
                try:
                    await self.sink.dead_letter(record=record, reason=reason, detail=detail)
                except ConnectionError as exc:
                    failed[origin] = str(exc)
                    break  # the next ones would wait as long: they stay owed, sent next time
                queued.append(origin)
            try:
                await self.sink.flush()
            except DeadLetterError as exc:
                failed.update(dict.fromkeys(exc.origins.intersection(queued), str(exc)))
            except ConnectionError as exc:  # which ones failed is unknown: all are sent again
                failed.update(dict.fromkeys(queued, str(exc)))
            for origin in queued:
                if origin not in failed:
                    self._owed.pop(origin, None)
            if failed:
                self._retry_at = loop.time() + LETTER_RETRY_SECONDS
                self.metrics.publish_errors.inc(len(failed))
                self._log_undelivered(failed)

    def _log_undelivered(self, failed: Mapping[tuple[str, int, int], str]) -> None:
        for (topic, partition, offset), error in list(failed.items())[:_LOGGED_LETTERS]:
            log.error(
                "dead_letter_not_delivered",
                topic=topic,
                partition=partition,
                offset=offset,
                error=error,
                effect="kept: sent again, and no commit covers its record until the broker acknowledges it",
            )
        if len(failed) > _LOGGED_LETTERS:
            log.error("dead_letters_not_delivered", more=len(failed) - _LOGGED_LETTERS, owed=len(self._owed))

    def _forget_moved(self) -> None:
        """Forget the letters owed for records of partitions revoked since the last poll (no I/O).

        Those records were never settled, so never committed: their partition's next owner reads
        them again and dead-letters them itself.
        """
        if not self._owed:
            return
        records = [record for record, _, _ in self._owed.values()]
        kept = {(r.topic, r.partition, r.offset) for r in self.source.still_assigned(records)}
        for topic, partition, offset in [origin for origin in self._owed if origin not in kept]:
            del self._owed[(topic, partition, offset)]
            log.warning("dead_letter_left_to_next_owner", topic=topic, partition=partition, offset=offset)

    async def _consume(self) -> None:
        # what start-up made (modules, policies, controllers) lives as long as the process: out of the
        # collector's way, a full collection walks only what ingest made (measured: -30 % CPU per event);
        # full collections rarer: each walks every model's state (scaler.runtime.settle_collector)
        settle_collector()
        while not self.stopping.is_set():
            if len(self._owed) >= MAX_OWED_LETTERS:  # the dead letters keep failing: read no more for now
                await self._flush_and_commit()
                await self._pause(LETTER_RETRY_SECONDS)
                continue
            records = await self.source.poll(wait_seconds=0.2)
            if not records:
                if self._owed:
                    await self._flush_and_commit()  # send the owed letters again
                continue
            self._read_counted = False
            async with self.lock:
                kept = self.source.still_assigned(records)  # a rebalance may have moved some meanwhile
                if len(kept) < len(records):
                    self.metrics.events_dropped.labels(why="revoked").inc(len(records) - len(kept))
                now = self.clock.now()
                rejected = self.runtime.ingest(kept, now=now)
                self._read_counted = True
                for record, error in rejected:  # owed until the broker acknowledges them
                    self._owed[(record.topic, record.partition, record.offset)] = (
                        record,
                        error.reason,
                        error.detail,
                    )
                self._decide(self.runtime.due(now=now, fed=True))  # a burst is decided as soon as it is read
            await self._flush_and_commit()
            await asyncio.sleep(0)  # a source that always has a batch ready must not starve the other tasks

    async def _tick(self) -> None:
        while not self.stopping.is_set():
            async with self.lock:  # deciding never awaits: the executor publishes and acts
                self._decide(self.runtime.due(now=self.clock.now()))
            for (topic, partition), lag in self.source.lag().items():
                self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
            await self._pause(self.settings.burst_check_seconds)

    def _decide(self, due: list[tuple[str, Trigger]]) -> None:
        """Decide every due model now; one model's failure never stops the others."""
        now = self.clock.now()
        for model, trigger in due:
            try:
                self.runtime.decide(model, trigger=trigger, now=now)
            except Exception:
                log.exception("decision_failed", model=model, trigger=trigger)

    async def _checkpoint(self) -> None:
        while not self.stopping.is_set():
            await self._pause(self.settings.checkpoint_interval_seconds)
            async with self.lock:
                self.runtime.account(now=self.clock.now())  # the ledger's cost up to now, then saved
                checkpoints = self.runtime.checkpoints()
            await self._save(checkpoints)

    async def _fallback(self) -> None:
        """Read Prometheus for models whose events stopped (nothing without ``prometheus_url``)."""
        while not self.stopping.is_set():  # a task that ended would stop the daemon: idle without a reader
            if self.signals is not None:
                await refresh_fallback(self.signals, self.runtime, now=self.clock.now())
            await self._pause(self.settings.prometheus_fallback_poll_seconds)

    async def _leases(self) -> None:
        """Acquire and renew the assigned partitions' Leases (idle without Leases)."""
        if self.leases is None:
            await self.stopping.wait()
            return
        await self.leases.run(self.stopping)

    async def _decision_feed(self) -> None:
        """Tail the decisions topic for the KEDA scaler (idle without it)."""
        if self.feed is None:
            await self.stopping.wait()
            return
        await self.feed.run(self.stopping)

    async def _watch_policies(self) -> None:
        while not self.stopping.is_set():
            await self._pause(self.settings.policy_poll_seconds)
            await self.check_policies()

    async def check_policies(self) -> bool:
        """Reload the policy files if they changed; return True if new policies are now in force."""
        signature = policy_signature(self.settings.policy_files)
        if signature == self._policy_sig:
            return False
        self._policy_sig = signature
        try:
            policies = await asyncio.to_thread(self.reload_policies)  # off the loop: a slow read stalls none
        except PolicyError as exc:
            self.metrics.policy_reload_errors.inc()
            log.error(
                "policy_reload_rejected", problems=[str(p) for p in exc.problems], kept="last good policies"
            )
            return False
        async with self.lock:
            dropped = self.runtime.set_policies(policies, now=self.clock.now())
        await self.runtime.executor.release(dropped)
        new = self.source.refresh_owned() - self.runtime.owned.keys()
        if new:
            await self.on_assigned(new)
        log.info("policies_reloaded", models=len(policies))
        return True

    async def _pause(self, seconds: float) -> None:
        """Return after ``seconds`` of the daemon's clock (virtual in the sandbox) or once stopping is set."""
        pause = asyncio.ensure_future(self.clock.sleep(seconds))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((pause, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            stop.cancel()
            await asyncio.gather(pause, stop, return_exceptions=True)

    # -- lifecycle --------------------------------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        """Handle a signal: the first stops gracefully, a second exits at once."""
        self._signals += 1
        if self._signals > 1:
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self.stopping.set()

    async def run(self, *, install_signals: bool = True) -> int:
        """Start everything, run until stopped, shut down gracefully; return the exit code."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.request_stop, signum)
        try:
            if self.http is not None:
                await self.http.start()
                log.info("http_listening", address=f"{self.http.host}:{self.http.port}")
            if self.keda is not None:  # -- KEDA external scaler: serves from the start --
                await self.keda.start()
            await self.sink_start()
            await self.source.start(on_assigned=self.on_assigned, on_revoked=self.on_revoked)
        except (ConnectionError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            await self._close()
            return 1
        log.info("started", models=len(self.runtime.policies), dry_run=self.settings.dry_run)
        tasks = [
            asyncio.create_task(coro(), name=coro.__name__)
            for coro in (
                self._consume,
                self._tick,
                self._checkpoint,
                self._watch_policies,
                self._fallback,
                self._leases,
                self._decision_feed,
            )
        ]
        stopper = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
                code = 1
        self.stopping.set()
        try:
            await asyncio.wait_for(self._shutdown(tasks), self.settings.shutdown_timeout_seconds)
        except TimeoutError:
            log.error("shutdown_timed_out", seconds=self.settings.shutdown_timeout_seconds)
            code = code or 1
        log.info("stopped", code=code)
        return code

    async def sink_start(self) -> None:
        """Start the sink (connect the producer); raise ConnectionError if it cannot."""
        await self.sink.start()

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop the tasks, save the final checkpoints first, then flush, commit and close.

        Every step that talks to the broker gets a share of what is left of ``shutdown_timeout_seconds``:
        with the broker down, the final checkpoints are spooled (``checkpoint_dir``) and the daemon
        still exits in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout_seconds
        _, pending = await asyncio.wait(tasks, timeout=1.0)  # let the consumer finish its batch
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self.lock:  # stop acting for every model before leaving the group
            final = self.runtime.revoke(frozenset(self.runtime.owned), now=self.clock.now())
        await self._save(final)  # before anything else that may wait on a dead broker
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("executor_close", self.runtime.executor.close),
            ("leases_close", self._close_leases),  # nothing acts any more: the next owners take over at once
            ("flush_and_commit", self._final_commit),
            ("source_stop", self.source.stop),
            ("sink_stop", self.sink.stop),
            ("servers_stop", self._stop_servers),
        ]
        current = asyncio.current_task()
        for index, (name, step) in enumerate(steps):
            share = max((deadline - loop.time()) / (len(steps) - index) - 0.05, 0.05)
            try:
                await asyncio.wait_for(step(), share)
            except TimeoutError:
                log.warning("shutdown_step_skipped", step=name, seconds=round(share, 2))
            except asyncio.CancelledError:
                if current is not None and current.cancelling():
                    raise  # the shutdown itself is cancelled (timed out): stop here
                log.warning("shutdown_step_failed", step=name, error="CancelledError")  # a client's own
            except Exception as exc:  # one step failing must not keep the others from running
                log.warning("shutdown_step_failed", step=name, error=repr(exc))

    async def _final_commit(self) -> None:
        """Deliver the owed dead letters once more (no waiting out the retry pause), then commit."""
        await self._flush_and_commit(retry_now=True)

    async def _close(self) -> None:
        await self.source.stop()
        await self.sink.stop()
        await self._stop_servers()

    async def _close_leases(self) -> None:
        if self.leases is not None:
            await self.leases.close()

    async def _stop_servers(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.keda is not None:  # -- KEDA external scaler --
            await self.keda.stop()


def build_kafka_daemon(
    *, settings: Settings, policies: dict[str, ModelPolicy], planner: Planner | None = None
) -> Daemon:
    """Return a daemon on Kafka as ``settings`` say; ``planner`` defaults to the real planner."""
    from scaler.adapters import decision_feed, kafka, lease  # noqa: PLC0415  # aiokafka: not in the sandbox
    from scaler.forecast.models import DemandForecaster  # noqa: PLC0415  # compiles numba kernels

    metrics = DaemonMetrics()
    sink = kafka.KafkaDecisionSink(kafka=settings.kafka)
    clock = SystemClock()
    # actuation: None unless settings.actuate; raises ValueError if the Kubernetes config cannot load
    actuators = actuator_setup.build_actuators(
        actuator=settings.actuator,
        kubernetes=settings.kubernetes,
        aws=settings.aws,
        actuate=settings.actuate,
        dry_run=settings.dry_run,
        policies=policies,
        registry=metrics.registry,
    )
    # fencing: the group's facts always; a Lease per partition when actuating Kubernetes (or asked)
    identity = fence.default_identity()
    source = kafka.KafkaEventSource(kafka=settings.kafka, models=lambda: list(runtime.policies))
    leases = lease.keeper_from_settings(
        settings.lease,
        settings.kubernetes,
        settings.actuator,
        policies,
        actuate=settings.actuate,
        identity=identity,
        held_gauge=metrics.leases_held,
    )  # raises ValueError if the Kubernetes config cannot load
    gate = fence.Fence(
        group=source,
        leases=leases,
        session_timeout=settings.kafka_session_timeout_ms / 1000,
        session_margin=settings.kafka_heartbeat_interval_ms / 1000,
        identity=identity,
        metrics=metrics,
    )
    source.partition_listener = leases
    sink.headers = gate.headers
    keda = _keda_server(  # -- KEDA external scaler: an observer of the executor, when keda_listen is set --
        settings.keda,
        intervals=lambda: {m: p.behavior.interval_seconds for m, p in runtime.policies.items()},
        owned=lambda: [m for m in runtime.owned if gate.reason(m) is None],  # fenced: from the topic
        metrics=metrics,
    )
    runtime = Runtime(
        policies=policies,
        executor=Executor(
            sink=sink,
            actuators=actuators,
            metrics=metrics,
            clock=clock,
            observers=[keda.scaler] if keda is not None else [],
            gate=gate,
        ),
        planner=planner or default_planner(),
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        options=runtime_options(settings),
    )
    daemon = Daemon(
        settings=settings,
        runtime=runtime,
        source=source,
        sink=sink,
        store=_checkpoint_store(
            settings.checkpoint, kafka.KafkaCheckpointStore(kafka=settings.kafka, sink=sink), metrics
        ),
        clock=clock,
        metrics=metrics,
        http=None,
    )
    daemon.http = HttpServer(
        host=settings.http.host, port=settings.http.port, metrics=metrics, ready=daemon.not_ready
    )
    daemon.keda = keda
    if keda is not None:  # other processes' decisions, for the models this one does not own
        daemon.feed = decision_feed.DecisionFeed(
            kafka=settings.kafka, on_decision=keda.scaler.heard, registry=metrics.registry
        )
    daemon.leases = leases
    daemon.history = prometheus.reader_from_settings(settings.prometheus)  # None: no URL, no seeding
    daemon.signals = prometheus.signal_from_settings(settings.prometheus)  # None: no fallback signal
    # Alertmanager webhook: POST /alerts feeds the runtime's override book
    alerts.install_receiver(
        alerts=settings.alerts,
        app=daemon.http.app,
        book=runtime.overrides,
        clock=daemon.clock.now,
        registry=metrics.registry,
    )
    return daemon


def _checkpoint_store(
    checkpoint: CheckpointSettings, topic: kafka_types.KafkaCheckpointStore, metrics: DaemonMetrics
) -> CheckpointStore:
    """Return the state topic's store, behind a local spool when ``checkpoint_dir`` is set.

    Raises ValueError if the directory cannot be created or written.
    """
    if checkpoint.dir is None:
        return topic
    return SpoolingCheckpointStore(
        primary=topic,
        directory=checkpoint.dir,
        timeout_seconds=checkpoint.save_timeout_seconds,
        registry=metrics.registry,
    )


def _keda_server(
    settings: KedaSettings,
    *,
    intervals: Callable[[], Mapping[str, float]],
    owned: Callable[[], Collection[str]],
    metrics: DaemonMetrics,
) -> KedaServer | None:
    """Return the KEDA external scaler ``settings.listen`` asks for (None: off)."""
    if settings.listen is None:
        return None
    from scaler.adapters import keda  # noqa: PLC0415  # grpc only when KEDA is on

    host, _, port = settings.listen.rpartition(":")
    tls = None
    if settings.tls_certfile is not None and settings.tls_keyfile is not None:
        tls = keda.Tls(
            certfile=settings.tls_certfile,
            keyfile=settings.tls_keyfile,
            client_cafile=settings.tls_client_cafile,
        )
    scaler = keda.KedaScaler(intervals=intervals, owned=owned, registry=metrics.registry)
    return keda.KedaServer(scaler=scaler, host=host.strip("[]"), port=int(port), tls=tls)


def runtime_options(settings: Settings) -> RuntimeOptions:
    """Return the loop's options from the settings."""
    return RuntimeOptions(
        requests_topic=settings.kafka_requests_topic,
        max_skew_seconds=settings.max_skew_seconds,
        burst_window_seconds=settings.burst_window_seconds,
        dry_run=settings.dry_run,
    )


def build_sandbox_daemon(
    *,
    settings: Settings,
    policies: dict[str, ModelPolicy],
    speed: float,
    base_rate: float,
    planner: Planner | None = None,
) -> tuple[Daemon, ReplaySource, MemorySink]:
    """Return a daemon on in-memory ports replaying a synthetic workload ``speed`` times faster than real.

    Its decisions are always carried out on the simulator (:mod:`scaler.adapters.sim`: nothing real is
    touched) through the production safety layer, so readiness comes back as from a cluster; policies
    without targets get simulated ones. ``settings.dry_run`` still only logs the changes.
    """
    from scaler.forecast.models import DemandForecaster  # noqa: PLC0415  # compiles numba kernels

    for policy in list(policies.values())[:1]:  # compile the kernels before virtual time starts to run
        warm = DemandForecaster.from_policy(policy)
        for k in range(4):
            warm.observe(
                bucket_start=k * policy.forecast.bucket_seconds, requests=1, prompt_tokens=1, output_tokens=1
            )
        warm.forecast(now=4.0 * policy.forecast.bucket_seconds)
    # the daemon's pauses are virtual time: keep burst/tick checks at least 2 ms of wall time apart
    settings = settings.model_copy(
        update={"burst_check_seconds": max(0.002 * speed, settings.burst_check_seconds)}
    )
    clock = VirtualClock(speed=speed)
    metrics = DaemonMetrics()
    sink = MemorySink()
    from scaler.adapters import sim  # noqa: PLC0415  # the simulator's capacity behind the actuator ports

    policies, actuators = sim.sandbox_actuators(
        actuator=settings.actuator,
        dry_run=settings.dry_run,
        policies=policies,
        clock=clock,
        registry=metrics.registry,
    )
    runtime = Runtime(
        policies=policies,
        executor=Executor(sink=sink, actuators=actuators, metrics=metrics, clock=clock),
        planner=planner or default_planner(),
        new_forecaster=DemandForecaster.from_policy,
        load_forecaster=DemandForecaster.from_bytes,
        metrics=metrics,
        # the replay delivers each virtual second once it has ended: a longer window sees bursts;
        # one batch carries up to MAX_BATCH_SECONDS of virtual time, so its events may be that old
        options=dataclasses.replace(
            runtime_options(settings),
            burst_window_seconds=max(settings.burst_window_seconds, 4),
            max_skew_seconds=max(settings.max_skew_seconds, 2.0 * MAX_BATCH_SECONDS),
        ),
    )
    source = ReplaySource(
        models=dict.fromkeys(policies, base_rate), clock=clock, topic=settings.kafka_requests_topic
    )
    daemon = Daemon(
        settings=settings,
        runtime=runtime,
        source=source,
        sink=sink,
        store=MemoryStore(),
        clock=clock,
        metrics=metrics,
        http=None,
    )
    daemon.http = HttpServer(
        host=settings.http.host, port=settings.http.port, metrics=metrics, ready=daemon.not_ready
    )
    return daemon, source, sink


async def run_for(daemon: Daemon, *, virtual_seconds: float, install_signals: bool = True) -> int:
    """Run ``daemon`` until its clock advanced ``virtual_seconds`` or a signal stopped it; return its code."""
    start = daemon.clock.now()

    async def stop_later() -> None:
        left = virtual_seconds - (daemon.clock.now() - start)
        while left > 0:
            await daemon.clock.sleep(min(left, 60.0))
            left = virtual_seconds - (daemon.clock.now() - start)
        daemon.stopping.set()

    stopper = asyncio.create_task(stop_later())
    try:
        return await daemon.run(install_signals=install_signals)
    finally:
        stopper.cancel()
