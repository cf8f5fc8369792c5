"""The fleet in process: sinks started, replaced by a reload and stopped against the in-memory queue and a real local
remote, with the virtual clock. A replaced sink finishes its in-flight send (cancelling it would mean sending it
again) and keeps its counters; a stop hands back what is still in flight at the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from shipper.forward.fleet import Fleet
from shipper.ingest.counters import IngestCounters
from shipper.metrics import Metrics, SpoolMonitor
from shipper.queue.memory import MemoryQueue
from shipper.sinks.http import HttpSink
from shipper.sinks.routing import Routing
from tests.inprocess.clock import VirtualClock
from tests.inprocess.test_forwarder import DAY, SINK, config, record
from tests.support import FakeRemote, wait_for


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Fleet, MemoryQueue]]:
    clock = VirtualClock()
    queue = MemoryQueue(clock=clock.time, lease_timeout=DAY)
    deaths: list[asyncio.Task[None]] = []
    fleets: list[Fleet] = []
    monitor = SpoolMonitor(tmp_path / "spool.db", lambda: fleets[0].forwarders)
    metrics = Metrics(IngestCounters(), lambda: fleets[0].forwarders, monitor)
    fleets.append(Fleet(queue, metrics, Routing(frozenset({SINK})), deaths.append, clock=clock))
    yield fleets[0], queue
    await fleets[0].stop_all(time.monotonic() + 1.0)
    await fleets[0].close_all()
    assert not [task for task in deaths if not task.cancelled() and task.exception() is not None]


def gated(remote: FakeRemote) -> asyncio.Event:
    """Hold every request until the returned event is set."""
    gate = asyncio.Event()

    async def hold(request: web.Request, body: bytes) -> None:
        await gate.wait()

    remote.async_behaviour = hold
    return gate


async def test_a_reload_lets_the_old_sink_finish_its_in_flight_send_and_keeps_its_counters(
    remote: FakeRemote, fleet: tuple[Fleet, MemoryQueue]
) -> None:
    fl, queue = fleet
    gate = gated(remote)
    settings = config(remote, concurrency=1)
    await fl.start(SINK, settings, HttpSink(SINK, settings, {}))
    await queue.append([record(1)])
    await wait_for(lambda: remote.in_flight == 1, timeout=5)
    old = fl.running[SINK].forwarder
    replacing = asyncio.create_task(fl.replace(SINK, settings, HttpSink(SINK, settings, {})))
    await wait_for(lambda: fl.running[SINK].forwarder is not old, timeout=5)  # the successor runs; the old drains
    gate.set()
    await asyncio.wait_for(replacing, 5)
    await queue.append([record(2)])
    await wait_for(lambda: not queue.rows, timeout=5)
    assert remote.attempts == 2 and [b["n"] for b in remote.bodies()] == [1, 2]  # nothing sent twice
    assert fl.counters[SINK].delivered == 2  # one counter across the old sink and its successor


async def test_stopping_hands_back_what_is_still_in_flight_at_the_deadline(
    remote: FakeRemote, fleet: tuple[Fleet, MemoryQueue]
) -> None:
    fl, queue = fleet
    gate = gated(remote)
    settings = config(remote, concurrency=3, adaptive_concurrency=False)
    await fl.start(SINK, settings, HttpSink(SINK, settings, {}))
    ids = await queue.append([record(n) for n in range(3)])
    await wait_for(lambda: remote.in_flight == 3, timeout=5)
    try:
        assert await fl.stop_all(time.monotonic() + 0.1) == 3
    finally:
        gate.set()
    assert [queue.rows[i].unanswered for i in ids] == [1, 1, 1]
    assert [row.id for row in (await queue.lease(SINK, 10)).rows] == ids  # due again at once, none left leased
