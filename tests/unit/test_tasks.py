"""Stopping a background task for sure (shipper/tasks.py): a cancellation the task swallowed (as Python 3.11's
asyncio.wait_for can) is repeated until the task is done."""

from __future__ import annotations

import asyncio

import pytest

from shipper import tasks


async def test_a_task_that_swallows_a_cancellation_is_stopped_all_the_same() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # as wait_for does when its future completes at the moment it is cancelled
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.stop(task), timeout=5 * tasks.RECANCEL)
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_failed_by_itself_has_its_error_raised_as_awaiting_it_would() -> None:
    async def failing() -> None:
        raise RuntimeError("its own failure")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="its own failure"):
        await tasks.stop(task)
