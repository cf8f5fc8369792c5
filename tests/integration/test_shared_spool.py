"""One spool, several processes: what one writer does is right for the others.

An ingest process appends while a delivery process leases and settles (here two attached spools, each with its own
database thread, as two processes have). The row bound holds whoever deletes; a lease names its holder, so a dead
holder's leases come back at once (a real process killed with -9) and a hung holder's late settlement cannot move a
row another process took over; a joiner never migrates a file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from shipper.core.rows import Retry
from shipper.errors import SpoolError, SpoolFull
from shipper.records import NewRow
from shipper.spool import Spool
from shipper.spool import claim as claim_module
from shipper.spool import turns as turns_module
from shipper.spool.bounds import Bounds
from shipper.spool.claim import Claim
from shipper.spool.owners import alive, owners_dir
from shipper.spool.turns import Turns
from shipper.spool.wakes import WakeListener, Waker, address

pytestmark = pytest.mark.timeout(60)


def row(n: int, key: str | None = None) -> NewRow:
    return NewRow(sink="remote", method="POST", path="/in", query=None, body=orjson.dumps({"n": n}), key=key)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def claim(path: Path) -> Iterator[Claim]:
    taken = Claim.take(path, "fsync")
    yield taken
    taken.release()


@pytest.fixture
async def pair(path: Path, claim: Claim) -> AsyncIterator[tuple[Spool, Spool]]:
    bounds = Bounds(max_rows=10)
    ingest = await Spool.attach(path, "fsync", bounds=bounds, role="ingest")
    delivery = await Spool.attach(path, "fsync", lease_timeout=0.5, role="delivery")
    yield ingest, delivery
    await delivery.close()
    await ingest.close()


async def test_the_row_bound_sees_rows_another_process_delivered(pair: tuple[Spool, Spool]) -> None:
    ingest, delivery = pair
    await ingest.append([row(n) for n in range(10)])
    with pytest.raises(SpoolFull):
        await ingest.append([row(10)])
    lease = await delivery.lease("remote", 4)
    await delivery.settle(delivered=[r.id for r in lease.rows])
    # Room for exactly the four rows the other process delivered.
    await ingest.append([row(n) for n in range(10, 14)])
    with pytest.raises(SpoolFull):
        await ingest.append([row(14)])


async def test_a_late_retry_from_a_holder_whose_lease_was_taken_over_changes_nothing(pair: tuple[Spool, Spool]) -> None:
    ingest, first = pair
    second = await Spool.attach(ingest.path, "fsync", lease_timeout=60.0, role="delivery")
    try:
        (created,) = await ingest.append([row(0, key="trace-1")])
        assert [r.id for r in (await first.lease("remote", 1)).rows] == [created]
        await asyncio.sleep(0.6)  # past the first holder's 0.5 s lease: it hung
        assert [r.id for r in (await second.lease("remote", 1)).rows] == [created]
        # The first wakes up and asks for a retry in an hour: the row stays with the second, still leased.
        await first.settle(retry=[Retry(created, time.time() + 3600, "late")])
        assert (await first.lease("remote", 1)).rows == []
        await second.settle(delivered=[created])
        assert (await first.lease("remote", 1)).rows == []
    finally:
        await second.close()


HOLDER = """
import asyncio, sys
from pathlib import Path
from shipper.spool import Spool

async def main() -> None:
    spool = await Spool.attach(Path(sys.argv[1]), "fsync", lease_timeout=3600.0, role="delivery")
    lease = await spool.lease("remote", 100)
    print(spool.owner, *[r.id for r in lease.rows], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_leases_of_a_holder_killed_with_sigkill_come_back_at_once(path: Path, claim: Claim) -> None:
    ingest = await Spool.attach(path, "fsync", role="ingest")
    try:
        ids = await ingest.append([row(n, key=f"k{n % 2}") for n in range(4)])
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, str(path), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert holder.stdout is not None
            owner, *leased = (await holder.stdout.readline()).decode().split()
            assert [int(i) for i in leased] == ids[:2]  # one per key: the first of each
            assert alive(path, owner)
            assert claim.reclaim(path, "fsync") == 0  # a live holder keeps its leases
        finally:
            holder.send_signal(signal.SIGKILL)
            await holder.wait()
        assert not alive(path, owner)
        assert claim.reclaim(path, "fsync") == 2
        delivery = await Spool.attach(path, "fsync", role="delivery")
        try:
            lease = await delivery.lease("remote", 100)
            assert [r.id for r in lease.rows] == ids[:2]
            # Each counts as an attempt the remote may have taken: delivering it now may be a repeat.
            assert [(r.attempts, r.unanswered) for r in lease.rows] == [(2, 1), (2, 1)]
        finally:
            await delivery.close()
        # The dead holder's presence file is gone; the live ingest process's stays.
        assert [name.split("-")[0] for name in os.listdir(owners_dir(path))] == ["ingest"]
    finally:
        await ingest.close()


async def test_a_joiner_refuses_a_spool_of_an_older_schema_instead_of_migrating_it(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(SpoolError, match="older than this shipper's"):
        await Spool.attach(path, "fsync", role="delivery")
    assert os.listdir(owners_dir(path)) == []  # its presence went with it


async def test_an_append_in_one_process_wakes_the_watchers_of_another(pair: tuple[Spool, Spool]) -> None:
    ingest, delivery = pair
    heard: asyncio.Queue[int] = asyncio.Queue()
    delivery.watch("remote", heard.put_nowait)
    listener = WakeListener(delivery.owner, delivery.announce)
    waker = Waker(ingest.path)
    ingest.on_added(waker.added)
    try:
        await ingest.append([row(0), row(1)])
        await ingest.append([row(2)])
        counts = [await asyncio.wait_for(heard.get(), 5)]
        while sum(counts) < 3:
            counts.append(await asyncio.wait_for(heard.get(), 5))
        assert sum(counts) == 3
        # Noise on the socket (anyone on the host may send to it) is dropped; the listener keeps listening.
        noise = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        noise.sendto(b"[1, 2", address(delivery.owner))
        noise.sendto(b"[]", address(delivery.owner))
        noise.close()
        await ingest.append([row(3)])
        assert await asyncio.wait_for(heard.get(), 5) == 1
    finally:
        waker.close()
        listener.close()


def test_roles_alone_share_the_claim_and_a_whole_shipper_is_refused(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Claim.share(path, "fsync")  # claims the file (creates and migrates it), then holds it shared
    second = Claim.share(path, "fsync")
    with pytest.raises(SpoolError, match="already using the spool"):
        Claim.take(path, "fsync")
    first.release()
    second.release()
    whole = Claim.take(path, "fsync")
    monkeypatch.setattr(claim_module, "SHARE_WAIT", 0.2)
    try:
        with pytest.raises(SpoolError, match="a role alone cannot join it"):
            Claim.share(path, "fsync")
    finally:
        whole.release()


async def test_any_process_gives_back_the_leases_of_a_dead_one_and_wakes_its_forwarders(
    path: Path, claim: Claim
) -> None:
    delivery = await Spool.attach(path, "fsync", role="delivery")
    heard: asyncio.Queue[int] = asyncio.Queue()
    delivery.watch("remote", heard.put_nowait)
    try:
        ids = await delivery.append([row(0), row(1)])
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, str(path), stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        await holder.stdout.readline()
        assert await delivery.give_back_dead() == 0  # alive: its leases stay
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        assert await delivery.give_back_dead() == 2
        assert await asyncio.wait_for(heard.get(), 5) == 2
        assert [r.id for r in (await delivery.lease("remote", 10)).rows] == ids
    finally:
        await delivery.close()


def test_a_writer_waits_for_its_turn_no_longer_than_the_busy_timeout(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped while holding the turn must not stop the others for good: past the wait, a writer goes on
    and meets SQLite's own lock (busy timeout) instead."""
    monkeypatch.setattr(turns_module, "WAIT", 0.2)
    holder, waiter = Turns(path), Turns(path)
    try:
        holder.take()
        started = time.monotonic()
        waiter.take()
        assert 0.2 <= time.monotonic() - started < 2
        holder.give()
        waiter.give()
        waiter.take()  # free now: at once
        waiter.give()
    finally:
        holder.close()
        waiter.close()
