"""The actuators' retry loop: what it retries, the backoff it sleeps on the injected clock, what it raises."""

from __future__ import annotations

import asyncio
import random

import pytest

from scaler.adapters.actuator import ActuationError, RetryPolicy, with_retries
from scaler.core import actuation
from scaler.ports import ConflictError, PermanentError, TransientError

RETRY = RetryPolicy(attempts=4, base_seconds=0.5, cap_seconds=3.0, timeout_seconds=0.2)


class Flaky:
    """An operation that fails with ``errors`` in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(
    op: Flaky, *, seed: int = 7, retry: RetryPolicy = RETRY
) -> tuple[str | ActuationError, list[float], list[str]]:
    """Return the result (or the ActuationError), the delays slept on the virtual clock, the retries seen."""
    slept: list[float] = []
    seen: list[str] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)  # virtual: no wall time passes

    async def go() -> str | ActuationError:
        try:
            return await with_retries(
                op,
                what="replicas llm/chat",
                retry=retry,
                rng=random.Random(seed),
                on_retry=seen.append,
                sleep=sleep,
            )
        except ActuationError as exc:
            return exc

    return asyncio.run(go()), slept, seen


def expected_delays(count: int, *, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [
        actuation.backoff_delay(attempt=a, base=RETRY.base_seconds, cap=RETRY.cap_seconds, jitter=j)
        for a, j in ((a, rng.random()) for a in range(1, count + 1))
    ]


def test_transient_errors_are_retried_with_the_equal_jitter_backoff_slept_on_the_clock() -> None:
    op = Flaky(TransientError("429 throttled"), TransientError("503"))
    result, slept, seen = run(op)
    assert result == "ok"
    assert op.calls == 3
    assert slept == expected_delays(2)
    assert seen == ["429 throttled", "503"]


def test_a_permanent_error_is_not_retried_and_says_so() -> None:
    op = Flaky(PermanentError("403 forbidden: deployments.apps/scale"))
    result, slept, seen = run(op)
    assert isinstance(result, ActuationError)
    assert result.permanent
    assert "replicas llm/chat" in str(result)
    assert "403 forbidden" in str(result)
    assert (op.calls, slept, seen) == (1, [], [])


def test_every_attempt_failing_raises_with_the_last_cause_and_counts_every_failure() -> None:
    op = Flaky(*(TransientError(f"500 #{i}") for i in range(10)))
    result, slept, seen = run(op)
    assert isinstance(result, ActuationError)
    assert not result.permanent
    assert str(result) == "replicas llm/chat: failed 4 times, last: 500 #3"
    assert op.calls == RETRY.attempts
    assert slept == expected_delays(RETRY.attempts - 1)  # no sleep after the last attempt
    assert seen == [f"500 #{i}" for i in range(4)]


def test_a_hung_attempt_times_out_and_is_retried() -> None:
    class Hangs(Flaky):
        async def __call__(self) -> str:
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(30)
            return "ok"

    op = Hangs()
    result, slept, seen = run(op)
    assert result == "ok"
    assert op.calls == 2
    assert seen == [f"timed out after {RETRY.timeout_seconds} s"]
    assert len(slept) == 1


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("missing")])
def test_other_exceptions_are_bugs_and_propagate_unretried(error: Exception) -> None:
    op = Flaky(error)
    with pytest.raises(type(error)):
        run(op)
    assert op.calls == 1


@pytest.mark.parametrize(
    ("errors", "calls", "ok"),
    [
        ((TransientError("HTTP 503"),), 1, False),  # one attempt: a dead API must not stall the tick
        ((ConflictError("HTTP 409"),), 2, True),  # a conflict proves the API answers: re-read and retry
        ((ConflictError("409"), ConflictError("409"), ConflictError("409")), 4, True),
        (tuple(ConflictError("409") for _ in range(9)), 4, False),  # but a conflict storm is still bounded
    ],
)
def test_a_conflict_is_retried_even_when_only_one_attempt_is_allowed(
    errors: tuple[BaseException, ...], calls: int, ok: bool
) -> None:
    op = Flaky(*errors)
    result, _slept, _seen = run(op, retry=RetryPolicy(attempts=1, base_seconds=0.5, cap_seconds=3.0))
    assert op.calls == calls
    assert (result == "ok") is ok
