"""Stopping a background task for sure.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that lands as the awaited future completes (it returns the
result instead; 3.12 rewrote it), and nats-py's fetches, aiohttp and shipper's own waits go through it. One
`cancel()` may so be lost, and a task awaited after it would be awaited for ever: a relay's partition being given up
stayed with neither relay (bench-fleet's stall). So a task is cancelled again until it is done; loops that must end
check a flag of their own too.
Not responsible for what the tasks do.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# How long one cancellation may take to land before it is repeated.
RECANCEL = 0.5


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` (again and again, should a cancellation be swallowed) until it is done. As `await task` after a
    cancel would: its cancellation is not raised, an error it ended with is."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
