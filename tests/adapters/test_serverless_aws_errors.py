"""The one AWS error classifier every serverless backend calls through (scaler.adapters.serverless._aws)."""

from __future__ import annotations

import asyncio
import re

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from scaler.adapters.serverless import _aws
from scaler.ports import PermanentError, TransientError


def _client_error(code: str, status: int) -> ClientError:
    body = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(body, "PutProvisionedConcurrencyConfig")  # type: ignore[arg-type]


def _raising(exc: Exception) -> object:
    def work() -> object:
        raise exc

    return work


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (_client_error("ThrottlingException", 400), TransientError, "ThrottlingException (HTTP 400)"),
        (_client_error("ResourceConflictException", 409), TransientError, "ResourceConflictException"),
        (_client_error("Anything", 503), TransientError, "Anything (HTTP 503)"),
        (_client_error("SlowDown", 429), TransientError, "SlowDown (HTTP 429)"),
        (_client_error("AccessDeniedException", 403), PermanentError, "AccessDeniedException (HTTP 403)"),
        (_client_error("ResourceNotFoundException", 404), PermanentError, "ResourceNotFoundException"),
        (EndpointConnectionError(endpoint_url="http://x"), TransientError, "EndpointConnectionError"),
    ],
)
def test_botocore_errors_become_transient_or_permanent_named_by_what(
    exc: Exception, kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind, match="^" + re.escape(f"read lambda:f:live: {message}")) as caught:
        asyncio.run(_aws.call(_raising(exc), what="read lambda:f:live"))  # type: ignore[arg-type]
    assert caught.value.__cause__ is None  # no botocore body carried along


def test_a_result_and_the_backends_own_errors_pass_through() -> None:
    assert asyncio.run(_aws.call(lambda: 7, what="read")) == 7
    own = PermanentError("no variant 'burst' on the endpoint")
    with pytest.raises(PermanentError) as caught:
        asyncio.run(_aws.call(_raising(own), what="read"))  # type: ignore[arg-type]
    assert caught.value is own
