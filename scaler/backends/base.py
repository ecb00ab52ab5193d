"""What a serverless backend module declares, and what it is handed to reach its API.

A backend module (one per value of a policy's ``targets.serverless.backend``) holds four things:
its target schema (a :class:`ServerlessBase` subclass, with its :class:`~scaler.core.profile.BackendProfile`
as ``PROFILE``), its adapter (a :class:`ServerlessPort` built from an :class:`Api`), the IAM actions that
adapter calls, and a :class:`Backend` tying them together. :mod:`scaler.backends` lists the modules.

The module stays pure: it imports no SDK and does no I/O itself. Every call goes through the
:class:`Api` it is given (:mod:`scaler.adapters.serverless` gives the boto3 one), so a backend is
read, typed and tested like the rest of the core, and the wire lives in one adapter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import Field

from scaler.core.errors import PermanentError
from scaler.core.profile import BackendProfile
from scaler.core.strict import Strict

AWS_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,139}$"
AWS_REGION_RE = r"^[a-z]{2}(-[a-z]+)+-\d$"


class ServerlessBase(Strict):
    """Fields every serverless target has; each backend's model adds ``backend`` and its own."""

    PROFILE: ClassVar[BackendProfile]  # how the backend starts, stays warm, is limited and billed

    backend: str  # each backend's model narrows it to its name, a Literal: the union's discriminator
    region: str | None = Field(
        default=None, pattern=AWS_REGION_RE, description="AWS region, if not the default."
    )

    @property
    def key(self) -> str:
        """Return ``backend/<resource>``: how logs, metrics and the pacer name this target."""
        raise NotImplementedError

    @property
    def weighted(self) -> tuple[str, str] | None:
        """Return (primary, burst) variants whose traffic weights this target governs, or None."""
        return None

    @property
    def tokens_per_minute_quota(self) -> int | None:
        """Return the tokens-per-minute quota of a per-token backend; None for backends with instances."""
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class ServerlessState:
    """Pre-warmed serverless instances as read back: those provisioned (requested), and of them the ones
    ready to serve (a Lambda alias's available provisioned concurrency, a SageMaker variant's current
    instances). ``ready`` below ``provisioned`` is a warm-up in progress: the lead-time learner times it."""

    provisioned: int
    ready: int


class ServerlessPort(Protocol):
    """Pre-warmed serverless instances of the target a policy names (one adapter per backend)."""

    async def read(self, target: ServerlessBase, *, max_concurrency: int) -> ServerlessState:
        """Return the provisioned instances and how many are ready; raise TransientError or PermanentError."""

    async def set_provisioned(
        self, target: ServerlessBase, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` (within ``quota``); raise TransientError or PermanentError."""


@runtime_checkable
class TrafficWeightsPort(ServerlessPort, Protocol):
    """A serverless port that also sets the traffic weights of the SageMaker variants a policy names."""

    async def read_weights(self, target: ServerlessBase) -> dict[str, float]:
        """Return the DesiredWeight of each named variant; raise TransientError or PermanentError."""

    async def set_weights(
        self,
        target: ServerlessBase,
        *,
        weights: dict[str, float],
        instances: int | None,
        max_concurrency: int,
    ) -> None:
        """Set ``weights`` (and ``instances``, unless None) in one update; raise on failure."""


_T = TypeVar("_T")


class Api(Protocol):
    """How a backend reaches its cloud: SDK clients, and a call that runs blocking work off the loop."""

    error: type[Exception]  # what the clients raise for an API error reply (botocore's ClientError)

    def client(self, service: str, region: str | None) -> Any:
        """Return the (cached) client of ``service`` in ``region`` (None: the default region)."""

    async def call(self, work: Callable[[], _T], *, what: str) -> _T:
        """Return what ``work`` returns, run in a thread; raise TransientError or PermanentError named
        ``what`` for an API error (a PermanentError ``work`` raises itself passes through)."""

    def error_code(self, exc: Exception) -> str:
        """Return the error code of an API error reply ('' if it has none)."""

    def error_message(self, exc: Exception) -> str:
        """Return the error message of an API error reply ('' if it has none)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    """One serverless backend: its target schema (and so its profile), its adapter, its IAM actions."""

    target: type[ServerlessBase]
    adapter: Callable[[Api], ServerlessPort]
    iam_actions: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Return the backend's name: the value of ``targets.serverless.backend`` that selects it."""
        return self.profile.name

    @property
    def profile(self) -> BackendProfile:
        """Return how the backend behaves (what the planner plans with and the simulator plays)."""
        return self.target.PROFILE


_Target = TypeVar("_Target", bound=ServerlessBase)


def narrow(target: ServerlessBase, kind: type[_Target]) -> _Target:
    """Return ``target`` as the backend's own target type; raise PermanentError for another backend's."""
    if not isinstance(target, kind):
        raise PermanentError(f"{target.key}: not a {kind.PROFILE.name} target")
    return target


def units_from_instances(*, instances: int, max_concurrency: int) -> int:
    """Return the backend's concurrency units for ``instances`` serverless instances (0 for fewer than 0).

    A unit (a Lambda execution environment, a unit of SageMaker Serverless concurrency) serves one
    request at a time, so one instance (the capacity of one replica, ``replica.max_concurrency``
    concurrent sequences) is that many units. :func:`instances_from_units` goes back.
    """
    return max(instances, 0) * max_concurrency


def instances_from_units(*, units: int, max_concurrency: int) -> int:
    """Return the whole serverless instances that ``units`` concurrent executions make (rounded down)."""
    return max(units, 0) // max_concurrency
