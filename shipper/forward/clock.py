"""The clock the delivery loop reads and waits by, injected so tests can run it in virtual time.

Two readings, as the loop needs them: `time()` (epoch seconds: when a row is due again, what the queue stores) and
`monotonic()` (how long a send took, how long a partial batch has waited). `wait` is the loop's only way to pass
time, so a test clock that moves only when told also decides when a wait ends.
Not responsible for the shutdown deadline: that is real time (a supervisor's stop timeout does not wait for a test
clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        """Return when `event` is set or `timeout` seconds (by this clock) have passed, whichever comes first."""
        ...


class SystemClock:
    """The real clocks, and asyncio's timer for waits."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
