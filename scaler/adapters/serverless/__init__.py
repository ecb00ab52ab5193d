"""The serverless port of the actuators: each target goes to the adapter of its backend.

The backends are the modules of :mod:`scaler.backends` (one each, listed in
:data:`scaler.backends.BACKENDS`); ``REGISTRY`` maps each backend's name to the factory of its
adapter (a :class:`~scaler.ports.ServerlessPort`; SageMaker's is also a
:class:`~scaler.ports.TrafficWeightsPort`). :class:`ServerlessBackends` hands each target to its
backend's adapter, made on first use with the one :class:`~._aws.AwsApi` all of them share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol, runtime_checkable

import boto3

from scaler.adapters.serverless._aws import AwsApi, Connection
from scaler.backends import BACKENDS
from scaler.backends.base import Api
from scaler.core.policy import ServerlessTarget
from scaler.ports import PermanentError, ServerlessPort, ServerlessState, TrafficWeightsPort

__all__ = ["IAM_ACTIONS", "REGISTRY", "AwsApi", "Connection", "QuotaPort", "ServerlessBackends"]

BackendFactory = Callable[[Api], ServerlessPort]
REGISTRY: Final[Mapping[str, BackendFactory]] = {name: b.adapter for name, b in BACKENDS.items()}
IAM_ACTIONS: Final[tuple[str, ...]] = tuple(a for b in BACKENDS.values() for a in b.iam_actions)


@runtime_checkable
class QuotaPort(Protocol):
    """An adapter that can also set its backend's quota on its own (Lambda's reserved concurrency)."""

    async def set_quota(self, target: ServerlessTarget, *, quota: int, max_concurrency: int) -> None:
        """Set the quota to ``quota`` instances; raise TransientError or PermanentError."""


class ServerlessBackends:
    """The serverless port of the actuators: each call goes to the adapter of the target's backend."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_seconds: float = 5.0,
        session: boto3.session.Session | None = None,
        registry: Mapping[str, BackendFactory] = REGISTRY,
    ) -> None:
        """Create the dispatcher; adapters are made per backend on first use."""
        self.connection = Connection(
            endpoint_url=endpoint_url, region=region, timeout_seconds=timeout_seconds, session=session
        )
        self.api = AwsApi(self.connection)
        self.registry = registry
        self._adapters: dict[str, ServerlessPort] = {}

    def adapter(self, target: ServerlessTarget) -> ServerlessPort:
        """Return the adapter of ``target``'s backend; raise PermanentError for a backend not registered."""
        backend = target.backend
        if backend not in self._adapters:
            factory = self.registry.get(backend)
            if factory is None:
                raise PermanentError(f"{target.key}: no adapter for backend {backend!r}")
            self._adapters[backend] = factory(self.api)
        return self._adapters[backend]

    async def read(self, target: ServerlessTarget, *, max_concurrency: int) -> ServerlessState:
        """Return the provisioned and ready instances of ``target``; raise TransientError or
        PermanentError."""
        return await self.adapter(target).read(target, max_concurrency=max_concurrency)

    async def set_provisioned(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` on ``target`` within ``quota``; raise TransientError or PermanentError."""
        await self.adapter(target).set_provisioned(
            target, instances=instances, quota=quota, max_concurrency=max_concurrency
        )

    async def set_quota(self, target: ServerlessTarget, *, quota: int, max_concurrency: int) -> None:
        """Set ``target``'s quota where its backend has one to set; raise PermanentError where it has not."""
        adapter = self.adapter(target)
        if not isinstance(adapter, QuotaPort):
            raise PermanentError(f"{target.key}: backend {target.backend} has no quota to set")
        await adapter.set_quota(target, quota=quota, max_concurrency=max_concurrency)

    async def read_weights(self, target: ServerlessTarget) -> dict[str, float]:
        """Return the weights of the variants ``target`` names; PermanentError if its backend has none."""
        return await self._weights(target).read_weights(target)

    async def set_weights(
        self,
        target: ServerlessTarget,
        *,
        weights: dict[str, float],
        instances: int | None,
        max_concurrency: int,
    ) -> None:
        """Set ``weights`` (and ``instances``, unless None) in one update; raise on failure."""
        await self._weights(target).set_weights(
            target, weights=weights, instances=instances, max_concurrency=max_concurrency
        )

    def _weights(self, target: ServerlessTarget) -> TrafficWeightsPort:
        adapter = self.adapter(target)
        if not isinstance(adapter, TrafficWeightsPort):
            raise PermanentError(f"{target.key}: backend {target.backend} sets no traffic weights")
        return adapter
