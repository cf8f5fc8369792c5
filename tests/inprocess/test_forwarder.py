"""The forwarder in process: the in-memory queue (the ordering rule the spool follows), a real HttpSink against a
real local aiohttp remote (FakeRemote), and a virtual clock, so a backoff or a Retry-After is seen at the exact
virtual second it chose and costs no real time. Each test waits for an event or a drained queue, never a sleep."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from shipper.config.sinks import HttpSinkConfig
from shipper.core import order
from shipper.core.leasing import LEASE_AHEAD
from shipper.core.rows import Lease
from shipper.errors import DiskFull
from shipper.forward.forwarder import Forwarder
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.sinks.http import HttpSink
from tests.inprocess.clock import VirtualClock, until
from tests.support import FakeRemote, wait_for

SINK = "remote"
DAY = 86_400.0  # a lease far longer than any test, so virtual jumps never hand a row out twice


def config(remote: FakeRemote, **settings: Any) -> HttpSinkConfig:
    return HttpSinkConfig.model_validate({"type": "http", "base_url": remote.url, "timeout": 5, **settings})


def record(n: int, key: str | None = None, kind: str | None = None, after: str | None = None) -> NewRow:
    body = orjson.dumps({"n": n, "key": key})
    return NewRow(SINK, "POST", "/records", None, body, key, kind=kind, after=after)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def queue(clock: VirtualClock) -> MemoryQueue:
    return MemoryQueue(clock=clock.time, lease_timeout=DAY)


@asynccontextmanager
async def forwarding(queue: MemoryQueue, settings: HttpSinkConfig, clock: VirtualClock) -> AsyncIterator[Forwarder]:
    sink = HttpSink(SINK, settings, {})
    await sink.start()
    forwarder = Forwarder(queue, sink, settings, rng=random.Random(11), clock=clock)
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder
    finally:
        forwarder.stop()
        await asyncio.wait_for(task, 5)
        await forwarder.drain(1.0)
        await sink.close()


def failing(times: int, status: int = 503, headers: dict[str, str] | None = None) -> Any:
    """A behaviour: the first `times` requests get `status`, the rest the default 200."""
    seen = [0]

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        seen[0] += 1
        return web.json_response({"error": "busy"}, status=status, headers=headers) if seen[0] <= times else None

    return behave


def idle(forwarder: Forwarder) -> Callable[[], bool]:
    return lambda: forwarder.in_flight == 0


def stamping(remote: FakeRemote, clock: VirtualClock, times: list[float]) -> None:
    """Record the virtual time of every attempt the remote sees."""

    async def stamp(request: web.Request, body: bytes) -> None:
        times.append(clock.now)

    remote.async_behaviour = stamp


async def test_a_failed_send_is_retried_after_full_jitter_backoff_until_delivered(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    times: list[float] = []
    stamping(remote, clock, times)
    remote.behaviour = failing(2)
    async with forwarding(queue, config(remote, retry_initial_backoff=0.5, retry_max_backoff=30), clock) as fw:
        await queue.append([record(1)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert len(times) == 3 and remote.bodies() == [{"n": 1, "key": None}]
    assert 0 < times[1] - times[0] <= 0.5  # first retry: up to retry_initial_backoff
    assert 0 < times[2] - times[1] <= 1.0  # then doubling
    assert (fw.counters.retried, fw.counters.delivered) == (2, 1)
    assert fw.backoff.state(clock.now) == "up"


async def test_a_retry_after_from_the_remote_sets_when_the_row_and_the_whole_sink_go_again(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    times: list[float] = []
    stamping(remote, clock, times)
    remote.behaviour = failing(1, 429, {"Retry-After": "30"})
    # The configured backoff (<= 0.05 s) is far shorter than the 30 s the remote asks for.
    settings = config(remote, concurrency=1, retry_initial_backoff=0.01, retry_max_backoff=0.05)
    async with forwarding(queue, settings, clock) as fw:
        await queue.append([record(n) for n in range(3)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert [t - times[0] for t in times] == [0.0, 30.0, 30.0, 30.0]  # the sink paused too, not only the row
    assert fw.last_error is not None and fw.last_error.startswith("HTTP 429")


async def test_an_outage_opens_the_breaker_probes_one_request_at_a_time_then_recovers(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    seen: list[tuple[int, str]] = []  # (requests in flight at the remote, breaker state) at each arrival
    forwarder: list[Forwarder] = []

    async def watch(request: web.Request, body: bytes) -> None:
        seen.append((remote.in_flight, forwarder[0].backoff.state(clock.now)))
        await asyncio.sleep(0.01)  # keep the first round in flight together

    remote.async_behaviour = watch
    remote.behaviour = failing(4 + 4)  # the first round of 4 counts once, then 4 probes fail: 5 failures
    settings = config(remote, concurrency=4, breaker_threshold=3, adaptive_concurrency=False)
    async with forwarding(queue, settings, clock) as fw:
        forwarder.append(fw)
        await queue.append([record(n) for n in range(8)])
        await until(lambda: not queue.rows, clock, idle(fw))
        assert fw.backoff.state(clock.now) == "up" and fw.concurrency_limit == 4
    probes = seen[4:8]
    assert all(in_flight == 1 for in_flight, _ in probes), seen  # one at a time while failing
    assert [state for _, state in probes] == ["probing", "probing", "open", "open"], seen
    assert sorted(body["n"] for body in remote.bodies()) == list(range(8))


async def test_a_refused_sink_key_holds_the_rows_at_the_slow_auth_pace_until_the_remote_takes_them(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    times: list[float] = []
    states: list[str] = []
    forwarder: list[Forwarder] = []

    async def watch(request: web.Request, body: bytes) -> None:
        times.append(clock.now)
        states.append(forwarder[0].backoff.state(clock.now))

    remote.async_behaviour = watch
    remote.behaviour = failing(2, 401)
    async with forwarding(queue, config(remote, retry_initial_backoff=0.01, retry_max_backoff=0.05), clock) as fw:
        forwarder.append(fw)
        await queue.append([record(1)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert states == ["up", "auth_failed", "auth_failed"]
    assert 5.0 <= times[1] - times[0] <= 10.0  # a key is fixed by a person: never the configured 0.05 s
    assert 10.0 <= times[2] - times[1] <= 20.0
    assert (fw.counters.auth_failures, fw.counters.retried, fw.counters.dead_lettered) == (2, 2, 0)


async def test_a_row_gives_up_after_max_attempts_into_the_dead_letters_naming_the_rule(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    remote.behaviour = failing(1000)
    async with forwarding(queue, config(remote, max_attempts=3), clock) as fw:
        (row_id,) = await queue.append([record(1)])
        await until(lambda: row_id in queue.dead, clock, idle(fw))
    dead = queue.dead[row_id]
    assert dead.reason.startswith("gave up (max_attempts=3, max_age=None): HTTP 503")
    assert (dead.status, remote.attempts, fw.counters.retried, fw.counters.dead_lettered) == (503, 3, 2, 1)


async def test_a_row_gives_up_once_older_than_max_age(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    times: list[float] = []
    stamping(remote, clock, times)
    remote.behaviour = failing(1000)
    async with forwarding(queue, config(remote, max_age=60, retry_max_backoff=8), clock) as fw:
        (row_id,) = await queue.append([record(1)])
        created = clock.now
        await until(lambda: row_id in queue.dead, clock, idle(fw))
    assert queue.dead[row_id].reason.startswith("gave up (max_attempts=None, max_age=60.0): HTTP 503")
    assert len(times) >= 3 and times[-2] - created < 60 <= times[-1] - created  # retried before 60 s, not after


async def test_a_413_splits_the_batch_and_later_batches_stay_at_half_its_size(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    lines: list[tuple[int, int]] = []  # (lines in the request, status answered)

    def too_large(request: web.Request, body: bytes) -> web.Response | None:
        count = body.count(b"\n")
        lines.append((count, 413 if count > 2 else 200))
        return web.Response(status=413) if count > 2 else None

    remote.behaviour = too_large
    settings = config(remote, batch=True, batch_max_records=8, batch_timeout=0)
    async with forwarding(queue, settings, clock) as fw:
        await queue.append([record(n) for n in range(8)])
        await until(lambda: not queue.rows, clock, idle(fw))
        first_round = len(lines)
        await queue.append([record(n) for n in range(8, 16)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert lines[:first_round][:3] == [(8, 413), (4, 413), (2, 200)]
    # No batch too large again: at most half the refused one, in records and in bytes.
    assert lines[first_round:] and all(count <= 2 and status == 200 for count, status in lines[first_round:])
    assert sorted(body["n"] for body in remote.bodies()) == list(range(16))
    assert fw.counters.dead_lettered == 0


async def test_a_batch_refused_for_one_bad_row_is_split_until_only_that_row_is_dead_lettered(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    def poisoned(request: web.Request, body: bytes) -> web.Response | None:
        return web.Response(status=400, text="bad record 3") if b'"n":3' in body else None

    remote.behaviour = poisoned
    async with forwarding(queue, config(remote, batch=True, batch_max_records=4, batch_timeout=0), clock) as fw:
        ids = await queue.append([record(n) for n in range(4)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert list(queue.dead) == [ids[3]]
    assert queue.dead[ids[3]].reason == "rejected by the remote: HTTP 400: bad record 3"
    assert sorted(body["n"] for body in remote.bodies()) == [0, 1, 2]
    assert (fw.counters.delivered, fw.counters.dead_lettered) == (3, 1)


def bundle(numbers: range) -> NewRow:
    """A bundle as sinks/bundling.py makes it: loose records' bodies joined by newlines, in one row."""
    body = b"\n".join(orjson.dumps({"n": n, "key": None}) for n in numbers)
    return NewRow(SINK, "POST", "/records", None, body, None, records=len(numbers))


async def test_bundles_go_whole_in_batches_counted_as_their_records(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    settings = config(remote, batch=True, batch_max_records=10, batch_timeout=0)
    async with forwarding(queue, settings, clock) as fw:
        ids = await queue.append([bundle(range(4)), bundle(range(4, 8)), record(8)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert ids == list(range(1, 10))  # one id per record, in order
    assert [body["n"] for body in remote.bodies()] == list(range(9))
    assert len(remote.received) == 1  # two bundles and a row in one NDJSON batch
    assert fw.counters.delivered == 9


async def test_a_bundle_refused_whole_goes_back_as_its_records_and_only_the_bad_one_is_dead_lettered(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    def poisoned(request: web.Request, body: bytes) -> web.Response | None:
        return web.Response(status=400, text="bad record 2") if b'"n":2' in body else None

    remote.behaviour = poisoned
    async with forwarding(queue, config(remote, batch=True, batch_max_records=4, batch_timeout=0), clock) as fw:
        ids = await queue.append([bundle(range(4))])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert list(queue.dead) == [ids[2]]  # the bad record alone, under its own id
    assert queue.dead[ids[2]].row.body == b'{"n":2,"key":null}'
    assert sorted(body["n"] for body in remote.bodies()) == [0, 1, 3]
    assert (fw.counters.delivered, fw.counters.dead_lettered) == (3, 1)


async def test_a_413_for_a_bundle_splits_it_and_later_bundles_are_split_to_the_smaller_batch(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    lines: list[int] = []

    def too_large(request: web.Request, body: bytes) -> web.Response | None:
        lines.append(body.count(b"\n"))
        return web.Response(status=413) if lines[-1] > 2 else None

    remote.behaviour = too_large
    async with forwarding(queue, config(remote, batch=True, batch_max_records=8, batch_timeout=0), clock) as fw:
        await queue.append([bundle(range(8))])
        await until(lambda: not queue.rows, clock, idle(fw))
        first_round = len(lines)
        await queue.append([bundle(range(8, 16))])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert lines[0] == 8 and max(lines[first_round:]) <= 2  # the next bundle never went out whole
    assert sorted(body["n"] for body in remote.bodies()) == list(range(16))
    assert (fw.counters.delivered, fw.counters.dead_lettered) == (16, 0)


async def test_a_replaying_sink_given_a_bundle_sends_each_record_as_its_own_request(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    """A reload may turn a batching sink into a replaying one while bundles wait: the lease splits them."""
    async with forwarding(queue, config(remote), clock) as fw:
        ids = await queue.append([bundle(range(3))])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert ids == [1, 2, 3]
    assert sorted(body["n"] for body in remote.bodies()) == [0, 1, 2]
    assert len(remote.received) == 3 and fw.counters.delivered == 3


async def test_rows_of_one_key_go_one_at_a_time_in_order_while_keys_flow_in_parallel(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    jitter = random.Random(5)
    active: set[str] = set()
    overlaps: list[str] = []
    most = [0]

    async def slow(request: web.Request, body: bytes) -> None:
        key = orjson.loads(body)["key"]
        if key in active:
            overlaps.append(key)
        active.add(key)
        most[0] = max(most[0], len(active))
        await asyncio.sleep(jitter.uniform(0, 0.004))
        active.discard(key)

    remote.async_behaviour = slow
    keys = ["a", "b", "c", "d"]
    async with forwarding(queue, config(remote, concurrency=8, adaptive_concurrency=False), clock) as fw:
        await queue.append([record(n, keys[n % 4]) for n in range(40)])
        await until(lambda: not queue.rows, clock, idle(fw))
    assert not overlaps
    assert most[0] > 1  # keys did go in parallel
    for key in keys:
        assert [b["n"] for b in remote.bodies() if b["key"] == key] == [n for n in range(40) if keys[n % 4] == key]


async def test_a_dead_lettered_create_takes_its_dependants_with_it_unsent(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    def refuse_create(request: web.Request, body: bytes) -> web.Response | None:
        return web.Response(status=422, text="no") if orjson.loads(body)["n"] == 1 else None

    remote.behaviour = refuse_create
    async with forwarding(queue, config(remote), clock) as fw:
        ids = await queue.append(
            [record(1, "k", "create"), record(2, "k", "update"), record(3, "j", "create", after="k"), record(4, "x")]
        )
        await until(lambda: not queue.rows, clock, idle(fw))
    create, update, follower, unrelated = ids
    assert queue.dead[create].reason == "rejected by the remote: HTTP 422: no"
    assert queue.dead[update].reason == queue.dead[follower].reason == order.reason(create, "k")
    assert unrelated not in queue.dead
    assert [b["n"] for b in remote.bodies()] == [4]
    assert fw.counters.dead_lettered == 1  # the forwarder's own; the queue cascades the rest


async def test_rows_leased_ahead_are_handed_back_when_a_send_fails(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    remote.behaviour = failing(1000)
    async with forwarding(queue, config(remote, concurrency=1), clock) as fw:
        ids = await queue.append([record(n) for n in range(LEASE_AHEAD + 1)])
        await wait_for(lambda: fw.counters.retried == 1, timeout=5)
        # The sink now pauses on the virtual clock; what it had leased ahead is free for anyone to lease.
        again = await queue.lease(SINK, 100)
    assert [row.id for row in again.rows] == ids[1:]


class LeaseCounting(MemoryQueue):
    """The in-memory queue, counting the leases it hands out."""

    leases = 0

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62, bundles: bool = False) -> Lease:
        self.leases += 1
        return await super().lease(sink, limit, max_bytes, bundles)


async def test_replay_leases_the_next_rows_while_the_last_round_is_still_being_sent(
    remote: FakeRemote, clock: VirtualClock
) -> None:
    """A lease waits its turn behind ingest's commit: taken only once the rows leased ahead ran out, every slot would
    idle for it. With 2 slots, 8 rows are leased ahead; once fewer than 2 are left to send, the next lease is taken
    while both slots are still busy."""
    queue = LeaseCounting(clock=clock.time, lease_timeout=DAY)
    answers = asyncio.Semaphore(0)

    async def answer_when_told(request: web.Request, body: bytes) -> None:
        await answers.acquire()

    remote.async_behaviour = answer_when_told
    async with forwarding(queue, config(remote, concurrency=2, adaptive_concurrency=False), clock) as fw:
        await queue.append([record(n) for n in range(20)])
        await wait_for(lambda: remote.in_flight == 2, timeout=5)
        assert queue.leases == 1  # 2 * LEASE_AHEAD rows
        for _ in range(2 * LEASE_AHEAD - 3):
            answers.release()
        await wait_for(lambda: remote.attempts == 2 * LEASE_AHEAD - 1 and remote.in_flight == 2, timeout=5)
        await wait_for(lambda: queue.leases == 2, timeout=5)  # one row left to send, both slots busy: leased
        for _ in range(20):
            answers.release()
        await wait_for(lambda: fw.counters.delivered == 20, timeout=5)
    assert sorted(orjson.loads(r.body)["n"] for r in remote.received) == list(range(20))


async def test_drain_hands_back_in_flight_and_leased_ahead_rows_as_unanswered_attempts(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock
) -> None:
    gate = asyncio.Event()

    async def hang(request: web.Request, body: bytes) -> None:
        await gate.wait()

    remote.async_behaviour = hang
    settings = config(remote, concurrency=2, adaptive_concurrency=False)
    sink = HttpSink(SINK, settings, {})
    await sink.start()
    fw = Forwarder(queue, sink, settings, rng=random.Random(1), clock=clock)
    task = asyncio.create_task(fw.run())
    try:
        ids = await queue.append([record(n) for n in range(10)])
        await wait_for(lambda: remote.in_flight == 2, timeout=5)
        fw.stop()
        await asyncio.wait_for(task, 5)
        assert await fw.drain(0.05) == 2
    finally:
        gate.set()
        await sink.close()
    cut = [queue.rows[i] for i in ids[:2]]
    assert [(row.attempts, row.unanswered) for row in cut] == [(1, 1), (1, 1)]
    again = await queue.lease(SINK, 100)
    assert [row.id for row in again.rows] == ids  # nothing left leased: all due at once


async def test_an_outcome_is_kept_until_the_queue_takes_it_and_never_sent_twice(
    remote: FakeRemote, queue: MemoryQueue, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue.refuse_settle = DiskFull("no space left on the device")
    async with forwarding(queue, config(remote), clock) as fw:
        await queue.append([record(1)])
        await wait_for(lambda: "cannot record an outcome yet" in caplog.text, timeout=5)
        clock.advance(5.0)  # the loop tries again on its clock
        queue.refuse_settle = None
        await until(lambda: not queue.rows, clock, idle(fw))
    assert remote.attempts == 1 and fw.counters.delivered == 1
