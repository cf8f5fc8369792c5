"""A virtual clock for in-process tests of the delivery loop: time moves only when the test moves it.

It implements shipper.forward.clock.Clock: `time()` and `monotonic()` read the virtual time, and a `wait` with a
timeout ends when the virtual time passes its deadline (or its event is set), so a 30-second Retry-After costs the
test no real time and a backoff is seen at the exact virtual second it chose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

START = 1_800_000_000.0


class VirtualClock:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self._alarms: list[tuple[float, asyncio.Future[None], asyncio.Event]] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            await asyncio.sleep(0)
            return
        alarm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + (timeout if timeout is not None else float("inf")), alarm, event)
        self._alarms.append(entry)
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({woken, alarm}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            alarm.cancel()
            self._alarms.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, alarm, _ in self._alarms:
            if deadline <= self.now and not alarm.done():
                alarm.set_result(None)

    def jump(self) -> bool:
        """Move to the earliest finite deadline anyone waits for; False when nobody waits on the clock, or when a
        waiter's event is set but it has not run yet: it is about to wake and wait anew, so its old deadline is not
        what it waits for (jumping to it made a 0.5s backoff look like the 1s idle poll it had left)."""
        if any(event.is_set() for _, _, event in self._alarms):
            return False
        deadlines = [deadline for deadline, _, _ in self._alarms if deadline != float("inf")]
        if not deadlines:
            return False
        self.advance(max(0.0, min(deadlines) - self.now))
        return True


async def until(
    predicate: Callable[[], bool], clock: VirtualClock, idle: Callable[[], bool], timeout: float = 5.0
) -> None:
    """Let the loop run in real time and, whenever it is `idle` (no send in flight: time stands still during one, as
    a send takes no virtual time) and waiting on the clock, jump to its next deadline; until `predicate` holds
    (bounded by `timeout` real seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (virtual time {clock.now - START:.2f}s)")
        await asyncio.sleep(0.005)
        if not predicate() and idle():
            clock.jump()
