"""Fencing Leases: one ``coordination.k8s.io/v1`` Lease per request-topic partition (Knative's buckets).

The process that the consumer group assigns a partition acquires that partition's Lease
(``<lease_name_prefix>-<partition>``), renews it every ``lease_renew_seconds`` and releases it when
the partition is revoked and at shutdown, so the next owner takes it at once. A Lease held by
another process is taken only after its record stayed unchanged for ``lease_duration_seconds`` by
this process's clock (:func:`scaler.control.fencing.may_take`); the holder stops acting
``lease_margin_seconds`` before that (:func:`scaler.control.fencing.held_with_margin`). Every write
is conditional on the ``resourceVersion`` read: a 409 means someone else won, and a holder whose
renewal meets a 409 has lost the Lease at once.

The holder identity is the host (pod) name plus a random suffix: a restarted pod is a new holder.
The official client is synchronous: every call runs in :func:`asyncio.to_thread`, bounded by
``_request_timeout``. :data:`RBAC_RULES` lists what this module calls (the chart adds it to its Role).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge
from urllib3.exceptions import HTTPError

from scaler.control import fencing
from scaler.core.policy import ModelPolicy
from scaler.settings import ActuatorSettings, KubernetesSettings, LeaseSettings

RBAC_RULES: Final[tuple[dict[str, tuple[str, ...]], ...]] = (
    {"apiGroups": ("coordination.k8s.io",), "resources": ("leases",), "verbs": ("get", "create", "update")},
)
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

log = structlog.get_logger("scaler.lease")


def default_namespace(configured: str | None, policies: Mapping[str, ModelPolicy]) -> str:
    """Return ``configured``, else the pod's own namespace (service account), else the namespace of the
    first Kubernetes target (by model name), else ``default``."""
    if configured:
        return configured
    try:
        found = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError:
        found = ""
    if found:
        return found
    for name in sorted(policies):
        targets = policies[name].targets
        if targets is not None and targets.kubernetes is not None:
            return targets.kubernetes.namespace
    return "default"


def _micro(moment: dt.datetime) -> str:
    """Return ``moment`` as a Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(slots=True)
class _State:
    """What this process knows of one partition's Lease."""

    renewed_at: float | None = None  # monotonic send time of our last successful acquire/renew
    lease: dict[str, Any] | None = None  # the record as we last wrote it (for the next renew)
    seen: tuple[str | None, str | None] | None = None  # (holder, resourceVersion) of another's record
    seen_at: float = 0.0  # when we first saw ``seen``
    waiting_since: float | None = None  # when we started to want it (for the failover figure)


class LeaseKeeper:
    """Acquires, renews and releases the Leases of the partitions this process is assigned."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        prefix: str,
        identity: str,
        duration: float,
        renew_every: float,
        margin: float,
        request_timeout: float,
        held_gauge: Gauge | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a keeper holding nothing; :meth:`run` does the work."""
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.prefix = prefix
        self.identity = identity
        self.duration = duration
        self.renew_every = renew_every
        self.margin = margin
        self.timeout = request_timeout
        self.held_gauge = held_gauge
        self.monotonic = monotonic
        self._wanted: frozenset[int] = frozenset()
        self._states: dict[int, _State] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._wake = asyncio.Event()

    def name(self, partition: int) -> str:
        """Return the Lease name of ``partition``."""
        return f"{self.prefix}-{partition}"

    def renewed_at(self, partition: int) -> float | None:
        """Return the monotonic send time of our last successful write of ``partition``'s Lease, or None."""
        state = self._states.get(partition)
        return state.renewed_at if state is not None else None

    def holds(self, partition: int, *, now: float) -> bool:
        """Return True while ``partition``'s Lease is ours with margin at monotonic ``now``."""
        return fencing.held_with_margin(
            renewed_at=self.renewed_at(partition), duration=self.duration, margin=self.margin, now=now
        )

    # -- the group's callbacks (scaler.ports.PartitionListener) ----------------------------------

    async def assigned(self, partitions: frozenset[int]) -> None:
        """Want ``partitions``' Leases; the :meth:`run` loop acquires them (this never waits on the API)."""
        now = self.monotonic()
        self._wanted = frozenset(partitions)
        for partition in self._wanted:
            state = self._states.setdefault(partition, _State())
            if state.renewed_at is None and state.waiting_since is None:
                state.waiting_since = now
        self._wake.set()

    async def revoked(self, partitions: frozenset[int]) -> None:
        """Release ``partitions``' Leases we hold (bounded by the request timeout); never raises."""
        self._wanted = self._wanted - partitions
        await self._release(partitions)

    async def close(self) -> None:
        """Release every Lease we hold (at shutdown); never raises."""
        self._wanted = frozenset()
        await self._release(frozenset(self._states))

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Acquire wanted Leases and renew held ones until ``stopping`` is set; never raises."""
        tick = max(0.05, min(1.0, self.renew_every / 2))
        while not stopping.is_set():
            self._wake.clear()
            await self.step()
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
            await asyncio.wait(waits, timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    async def step(self) -> None:
        """Renew every wanted Lease that is due and try to acquire the others, once; never raises."""
        await asyncio.gather(*(self._keep(p) for p in sorted(self._wanted)), return_exceptions=True)
        self._gauge()

    def _gauge(self) -> None:
        if self.held_gauge is not None:
            now = self.monotonic()
            self.held_gauge.set(sum(1 for p in self._states if self.holds(p, now=now)))

    def _lock(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())

    async def _keep(self, partition: int) -> None:
        """Renew ``partition``'s Lease if due, or try to acquire it; log failures, never raise."""
        async with self._lock(partition):
            if partition not in self._wanted:  # revoked while we waited for the lock
                return
            state = self._states.setdefault(partition, _State())
            now = self.monotonic()
            if state.renewed_at is not None and not fencing.renew_due(
                renewed_at=state.renewed_at, every=self.renew_every, now=now
            ):
                return
            try:
                await asyncio.to_thread(self._acquire_or_renew, partition, state)
            except (ApiException, HTTPError, OSError) as exc:
                log.warning("lease_call_failed", lease=self.name(partition), error=_brief(exc))

    async def _release(self, partitions: Iterable[int]) -> None:
        async def one(partition: int) -> None:
            async with self._lock(partition):
                state = self._states.pop(partition, None)
                if state is None or state.renewed_at is None or state.lease is None:
                    return
                state.renewed_at = None  # fenced from this instant, whatever the API answers
                try:
                    await asyncio.to_thread(self._write_release, partition, state.lease)
                except (ApiException, HTTPError, OSError) as exc:
                    log.warning("lease_release_failed", lease=self.name(partition), error=_brief(exc))

        await asyncio.gather(*(one(p) for p in sorted(partitions)), return_exceptions=True)
        self._gauge()

    # -- blocking calls (in a thread) --------------------------------------------------------------

    def _acquire_or_renew(self, partition: int, state: _State) -> None:
        name = self.name(partition)
        if state.renewed_at is not None and state.lease is not None:  # renew at the version we wrote
            sent = self.monotonic()
            try:
                self._store(state, self._replace(name, self._body(state.lease, acquire=False)), sent=sent)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                state.renewed_at = None  # someone else wrote it: lost, fenced at once
                state.lease = None
                log.warning("lease_lost", lease=name, holder=self.identity)
            return
        try:
            found = self.api.read_namespaced_lease(name, self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._create(partition, state)
            return
        record = found.to_dict()
        spec = record.get("spec") or {}
        holder = spec.get("holder_identity")
        version = (record.get("metadata") or {}).get("resource_version")
        now = self.monotonic()
        if state.seen != (holder, version):
            state.seen, state.seen_at = (holder, version), now
        duration = float(spec.get("lease_duration_seconds") or self.duration)
        if not fencing.may_take(
            holder=holder, me=self.identity, observed_at=state.seen_at, duration=duration, now=now
        ):
            return
        current = {
            "metadata": {"name": name, "namespace": self.namespace, "resourceVersion": version},
            "spec": {"leaseTransitions": int(spec.get("lease_transitions") or 0) + (1 if holder else 0)},
        }
        sent = self.monotonic()
        try:
            written = self._replace(name, self._body(current, acquire=True))
        except ApiException as exc:
            if exc.status != 409:
                raise
            return  # someone else won: observe the new record next round
        self._store(state, written, sent=sent, took_from=holder)

    def _create(self, partition: int, state: _State) -> None:
        name = self.name(partition)
        body = self._body({"metadata": {"name": name, "namespace": self.namespace}, "spec": {}}, acquire=True)
        sent = self.monotonic()
        try:
            written = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return  # created by another process first: read it next round
        self._store(state, written, sent=sent, took_from=None)

    def _store(self, state: _State, written: Any, *, sent: float, took_from: str | None = "") -> None:
        """Keep what we wrote; the Lease is ours from ``sent`` on."""
        record = written.to_dict()
        metadata = record.get("metadata") or {}
        spec = record.get("spec") or {}
        state.lease = {
            "metadata": {
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "resourceVersion": metadata.get("resource_version"),
            },
            "spec": {
                "leaseTransitions": int(spec.get("lease_transitions") or 0),
                "acquireTime": _micro(spec["acquire_time"]) if spec.get("acquire_time") else None,
            },
        }
        first = state.renewed_at is None
        state.renewed_at = sent
        state.seen = None
        if first:
            waited = sent - state.waiting_since if state.waiting_since is not None else None
            state.waiting_since = None
            log.info(
                "lease_acquired",
                lease=metadata.get("name"),
                holder=self.identity,
                took_from=took_from or None,
                waited_seconds=round(waited, 3) if waited is not None else None,
            )

    def _body(self, base: dict[str, Any], *, acquire: bool) -> client.V1Lease:
        """Return the Lease ``base`` (our last record) with this process as holder, renewed now."""
        now = dt.datetime.now(dt.UTC)
        spec = base.get("spec") or {}
        acquired = spec.get("acquireTime")
        return _lease(
            base["metadata"],
            client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=math.ceil(self.duration),
                lease_transitions=int(spec.get("leaseTransitions") or 0),
                acquire_time=now if acquire or not acquired else dt.datetime.fromisoformat(acquired),
                renew_time=now,
            ),
        )

    def _replace(self, name: str, body: client.V1Lease) -> Any:
        return self.api.replace_namespaced_lease(name, self.namespace, body, _request_timeout=self.timeout)

    def _write_release(self, partition: int, lease: dict[str, Any]) -> None:
        """Clear the holder at the version we wrote (a 409: someone else has it already)."""
        body = _lease(
            lease["metadata"],
            client.V1LeaseSpec(
                lease_duration_seconds=math.ceil(self.duration),
                lease_transitions=int(lease["spec"].get("leaseTransitions") or 0),
                renew_time=dt.datetime.now(dt.UTC),
            ),
        )
        try:
            self._replace(self.name(partition), body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return
        log.info("lease_released", lease=self.name(partition), holder=self.identity)


def _lease(metadata: dict[str, Any], spec: client.V1LeaseSpec) -> client.V1Lease:
    """Return a Lease object of ``metadata`` (name, namespace, resourceVersion) and ``spec``."""
    return client.V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=client.V1ObjectMeta(
            name=metadata.get("name"),
            namespace=metadata.get("namespace"),
            resource_version=metadata.get("resourceVersion"),
        ),
        spec=spec,
    )


def _brief(exc: Exception) -> str:
    """Return a one-line description of a client error (no response bodies)."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:300]


def describe_rules() -> list[dict[str, Any]]:
    """Return :data:`RBAC_RULES` as plain lists (a Role's ``rules``)."""
    return [{key: list(values) for key, values in rule.items()} for rule in RBAC_RULES]


def wanted(
    lease: LeaseSettings,
    kubernetes: KubernetesSettings,
    policies: Mapping[str, ModelPolicy],
    *,
    actuate: bool,
) -> bool:
    """Return True if ``lease.fencing`` asks for Leases: ``on``, or ``auto`` while actuating with a
    Kubernetes client (a Kubernetes target in a policy, or a Kubernetes connection setting)."""
    if lease.fencing != "auto":
        return lease.fencing == "on"
    if not actuate:
        return False
    return (
        any(p.targets is not None and p.targets.kubernetes is not None for p in policies.values())
        or kubernetes.host is not None
        or kubernetes.kubeconfig is not None
        or kubernetes.context is not None
        or kubernetes.in_cluster
    )


def keeper_from_settings(
    lease: LeaseSettings,
    kubernetes: KubernetesSettings,
    actuator: ActuatorSettings,
    policies: Mapping[str, ModelPolicy],
    *,
    actuate: bool,
    identity: str,
    held_gauge: Gauge | None = None,
) -> LeaseKeeper | None:
    """Return the lease keeper ``lease`` asks for (None: Leases off; see :func:`wanted`).

    Raises ValueError naming the source when the Kubernetes configuration cannot be loaded.
    """
    if not wanted(lease, kubernetes, policies, actuate=actuate):
        return None
    from scaler.adapters.kubernetes import api_client_for  # noqa: PLC0415  # same connection settings

    api = api_client_for(kubernetes)
    keeper = LeaseKeeper(
        api,
        namespace=default_namespace(lease.namespace, policies),
        prefix=lease.name_prefix,
        identity=identity,
        duration=lease.duration_seconds,
        renew_every=lease.renew_seconds,
        margin=lease.margin_seconds,
        request_timeout=min(actuator.timeout_seconds, lease.renew_seconds),
        held_gauge=held_gauge,
    )
    log.info(
        "leases",
        namespace=keeper.namespace,
        prefix=keeper.prefix,
        holder=identity,
        duration_seconds=keeper.duration,
        renew_seconds=keeper.renew_every,
        margin_seconds=keeper.margin,
    )
    return keeper
