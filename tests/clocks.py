"""Clocks the tests set by hand (:class:`scaler.ports.Clock`), so no test depends on the wall clock."""

from __future__ import annotations

import asyncio


class ManualClock:
    """A clock the test moves by hand; sleeping moves it too (virtual time)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class FixedClock(ManualClock):
    """A clock that stays where the test put it; sleeping waits that long on the event loop (a daemon's
    pauses sleep on its clock, so a pause must take time)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
