"""The spool writer never leaves a caller without an answer.

One op whose content the writer cannot take fails alone: the other requests of its group commit as usual. Should
the writer loop itself ever fail, every waiting and later call is answered with SpoolError at once, the owner is
told (the daemon stops so its supervisor restarts it), and close() returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import orjson
import pytest

from shipper.config import load_config
from shipper.daemon import Daemon
from shipper.errors import SpoolError
from shipper.records import NewRow
from shipper.spool import Spool
from tests.hardening import Gate, http_sink, item, post_records, send
from tests.support import FakeRemote, wait_for, write_config

BOUND = 10.0  # seconds: an answer that takes longer than this is a hang


def row(n: int, credential: str | None = None) -> NewRow:
    body = orjson.dumps({"n": n})
    return NewRow(sink="remote", method="POST", path="/in", query=None, body=body, key=None, credential=credential)


async def test_an_op_the_writer_cannot_take_fails_alone_and_its_group_commits(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.db")
    try:
        # Queued together, so the writer takes them as one group; the middle one holds a value SQLite cannot store.
        results = await asyncio.wait_for(
            asyncio.gather(
                spool.append([row(1)]),
                spool.append([row(2, credential="k\udce9y")]),
                spool.append([row(3)]),
                return_exceptions=True,
            ),
            BOUND,
        )
        assert isinstance(results[1], SpoolError)
        assert all(isinstance(ids, list) and len(ids) == 1 for ids in (results[0], results[2]))
        lease = await spool.lease("remote", 10)
        assert [orjson.loads(r.body)["n"] for r in lease.rows] == [1, 3]
        assert spool.failure is None
        assert await asyncio.wait_for(spool.append([row(4)]), BOUND)
    finally:
        await asyncio.wait_for(spool.close(), BOUND)


async def test_a_dead_writer_answers_every_caller_tells_its_owner_and_closes(tmp_path: Path) -> None:
    died: list[BaseException] = []
    spool = await Spool.open(tmp_path / "spool.db", on_death=died.append)

    def broken_watcher(count: int) -> None:
        raise RuntimeError("a bug in a wake-up")

    spool.watch("remote", broken_watcher)
    # The group that kills the writer, and calls queued behind it, all get an answer.
    results = await asyncio.wait_for(
        asyncio.gather(*(spool.append([row(n)]) for n in range(5)), return_exceptions=True), BOUND
    )
    assert len(results) == 5
    assert len(died) == 1 and isinstance(died[0], RuntimeError)
    assert spool.failure is died[0]
    for call in (spool.append([row(9)]), spool.lease("remote", 10), spool.ping()):
        with pytest.raises(SpoolError, match="writer died"):
            await asyncio.wait_for(call, BOUND)
    await asyncio.wait_for(spool.close(), BOUND)


async def test_the_daemon_turns_unhealthy_and_exits_non_zero_when_its_spool_writer_dies(tmp_path: Path) -> None:
    """In process, so the test can break the writer from inside. A send held open by the remote keeps the drain
    going, so liveness can be read between the death and the exit: 503, then the daemon stops with 1."""
    gate = Gate()
    remote = FakeRemote(async_behaviour=gate)
    await remote.start()
    config_path = write_config(tmp_path, http_sink(remote.url), drain_timeout=BOUND)
    daemon = Daemon(load_config(config_path), config_path)
    running = asyncio.create_task(daemon.run())
    base = f"http://{daemon.config.ingest.http}"
    try:
        async with aiohttp.ClientSession() as session:
            await _until_serving(session, base, running)
            assert (await post_records(session, f"{base}/v1/records", [item(1)])).status == 202
            await wait_for(lambda: remote.in_flight == 1, timeout=BOUND)

            def broken_watcher(count: int) -> None:
                raise RuntimeError("a bug in a wake-up")

            daemon.spool.watch("remote", broken_watcher)
            # Committed before the wake-up failed, so acknowledged; the writer is dead from here on.
            assert (await post_records(session, f"{base}/v1/records", [item(2)])).status == 202
            health = await send(session, "GET", f"{base}/healthz")
            assert health.status == 503 and health.json()["error"] == "spool_failed"
            refused = await post_records(session, f"{base}/v1/records", [item(3)])
            assert refused.status == 503
            gate.open()
            assert await asyncio.wait_for(running, BOUND) == 1
    finally:
        gate.open()
        if not running.done():
            daemon.request_stop()
            await asyncio.wait_for(running, BOUND)
        await remote.stop()


async def _until_serving(session: aiohttp.ClientSession, base: str, running: asyncio.Task[int]) -> None:
    async with asyncio.timeout(BOUND):
        while True:
            assert not running.done(), running
            with contextlib.suppress(aiohttp.ClientError):
                if (await send(session, "GET", f"{base}/healthz")).status == 200:
                    return
            await asyncio.sleep(0.02)
