"""The AWS wire of every serverless backend: connection settings, cached boto3 clients, error classes.

:class:`AwsApi` is the :class:`scaler.backends.base.Api` the backend modules are given.
Credentials come from the standard boto3 chain; ``endpoint_url`` and ``region`` are settings.
boto3 is synchronous: the backends run every call through :meth:`AwsApi.call`, which runs it in
:func:`asyncio.to_thread` and turns botocore's errors into TransientError or PermanentError
(:func:`classify`, the one place that decides which is which). botocore's own retries are off:
:mod:`scaler.adapters.actuator` retries with backoff and counts every retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler.core.errors import PermanentError, TransientError

_TRANSIENT_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ResourceConflictException",  # Lambda: an update is in progress
        "ServiceException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
    }
)


_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """How a backend adapter reaches its API: endpoint, default region, timeout, boto3 session."""

    endpoint_url: str | None = None
    region: str | None = None
    timeout_seconds: float = 5.0
    session: boto3.session.Session | None = None


class AwsApi:
    """boto3 clients per (service, region), made on first use, with botocore's retries off; and the
    threaded, classified call (the :class:`scaler.backends.base.Api` of the AWS backends)."""

    error = ClientError

    def __init__(self, connection: Connection) -> None:
        """Create the cache for ``connection``; no client is made yet."""
        self.connection = connection
        self.session = connection.session or boto3.session.Session()
        self.config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connection.timeout_seconds,
            read_timeout=connection.timeout_seconds,
        )
        self._clients: dict[tuple[str, str | None], Any] = {}

    def client(self, service: str, region: str | None) -> Any:
        """Return the (cached) boto3 client of ``service`` in ``region`` (or the default region)."""
        key = (service, region or self.connection.region)
        if key not in self._clients:
            self._clients[key] = self.session.client(
                service, region_name=key[1], endpoint_url=self.connection.endpoint_url, config=self.config
            )
        return self._clients[key]

    async def call(self, work: Callable[[], _T], *, what: str) -> _T:
        """Return what ``work`` returns; see :func:`call`."""
        return await call(work, what=what)

    def error_code(self, exc: Exception) -> str:
        """Return the error code of a boto ClientError ('' for anything else)."""
        return error_code(exc) if isinstance(exc, ClientError) else ""

    def error_message(self, exc: Exception) -> str:
        """Return the error message of a boto ClientError ('' for anything else)."""
        return error_message(exc) if isinstance(exc, ClientError) else ""


def classify(exc: Exception, *, what: str) -> Exception:
    """Return the TransientError or PermanentError for a boto error (code and status only, no bodies)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = f"{what}: {code} (HTTP {status})"
        transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
        return TransientError(message) if transient else PermanentError(message)
    return TransientError(f"{what}: {type(exc).__name__}")


def error_code(exc: ClientError) -> str:
    """Return the error code of a boto ClientError ('' if it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    """Return the error message of a boto ClientError ('' if it has none)."""
    return str(exc.response.get("Error", {}).get("Message", ""))


async def call(work: Callable[[], _T], *, what: str) -> _T:
    """Return what the blocking boto3 ``work`` returns, run in a thread.

    Raises the TransientError or PermanentError :func:`classify` makes of a botocore error, named
    ``what``; other exceptions (a PermanentError the work raises itself) pass through unchanged.
    """

    def run() -> _T:
        try:
            return work()
        except (ClientError, BotoCoreError) as exc:
            raise classify(exc, what=what) from None

    return await asyncio.to_thread(run)
