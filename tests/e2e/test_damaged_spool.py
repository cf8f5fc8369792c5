"""A damaged spool at start, end to end: moved aside with a timestamp, logged, counted, a fresh one serves; then
`shipper spool salvage FILE` puts every readable row of the old file back in the queue while the daemon runs.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.spool.reader import SpoolReader, read
from tests.hardening import http_sink, item, numbers, post_records
from tests.support import Daemon, FakeRemote, metric, run_cli_async, scrape, wait_for, write_config

pytestmark = pytest.mark.supervised


def damaged_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("spool.db.damaged-*"))


async def test_a_spool_that_is_not_a_database_is_moved_aside_logged_counted_and_a_fresh_one_serves(
    tmp_path: Path, remote: FakeRemote
) -> None:
    junk = b"not an SQLite file; a disk that lied about a write" * 200
    (tmp_path / "spool.db").write_bytes(junk)
    config = write_config(tmp_path, http_sink(remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        moved = [p for p in damaged_files(tmp_path) if not p.name.endswith(("-wal", "-shm"))]
        assert len(moved) == 1
        assert moved[0].read_bytes() == junk
        errors = [entry for entry in daemon.json_logs() if entry["level"] == "error"]
        assert any("damaged" in e["msg"] and "shipper spool salvage" in e["msg"] for e in errors), errors
        async with aiohttp.ClientSession() as session:
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_spool_recoveries_total") == 1
            answer = await post_records(session, f"http://{daemon.http}/v1/records", [item(n) for n in range(5)])
            assert answer.status == 202, answer.raw
        await wait_for(lambda: sorted(numbers(remote)) == list(range(5)), timeout=10)
    finally:
        assert await daemon.terminate() == 0

    # The fresh spool is healthy: a restart moves nothing else aside.
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        assert len([p for p in damaged_files(tmp_path) if not p.name.endswith(("-wal", "-shm"))]) == 1
        async with aiohttp.ClientSession() as session:
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_spool_recoveries_total") == 0
    finally:
        assert await daemon.terminate() == 0


def damage_middle_leaf(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        leaves = sorted(p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'rows' AND pagetype='leaf'"))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    data = bytearray(path.read_bytes())
    start = (leaves[len(leaves) // 2] - 1) * page_size
    data[start : start + page_size] = random.Random(3).randbytes(page_size)
    path.write_bytes(bytes(data))


def readable_numbers(db: Path, scratch: Path) -> set[int]:
    """The record numbers a perfect salvage could read: each id looked up alone, on a copy (db + WAL)."""
    scratch.mkdir()
    for suffix in ("", "-wal"):
        if db.with_name(db.name + suffix).exists():
            shutil.copyfile(db.with_name(db.name + suffix), scratch / f"copy.db{suffix}")
    conn = sqlite3.connect(scratch / "copy.db")
    found = set()
    try:
        for i in range(1, 2000):
            try:
                hit = conn.execute("SELECT body FROM rows WHERE id = ?", (i,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if hit is not None:
                found.add(orjson.loads(hit[0])["n"])
    finally:
        conn.close()
    return found


async def test_salvage_requeues_every_readable_row_of_a_damaged_spool_and_its_wal_while_the_daemon_runs(
    tmp_path: Path, remote: FakeRemote
) -> None:
    def refuse(request: web.Request, body: bytes) -> web.Response:
        status = 400 if b'"poison"' in body else 503
        return web.json_response({"error": "test"}, status=status)

    remote.behaviour = refuse
    config = write_config(tmp_path, http_sink(remote.url))
    url = f"http://{Daemon.from_config(config).http}/v1/records"
    daemon = Daemon.from_config(config)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        assert (await post_records(session, url, [item(999, poison=True)])).status == 202
        for start in range(0, 400, 100):
            assert (
                await post_records(session, url, [item(n, pad=200) for n in range(start, start + 100)])
            ).status == 202
    spool = tmp_path / "spool.db"
    await wait_for(lambda: read(spool, SpoolReader.dead_count) == 1, timeout=10)
    assert await daemon.terminate() == 0  # a clean stop: the rows are in the database file now

    daemon = Daemon.from_config(config)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        answer = await post_records(session, url, [item(n, pad=200) for n in range(400, 450)])
        assert answer.status == 202
    await daemon.kill9()  # these last rows live only in the WAL
    assert (tmp_path / "spool.db-wal").stat().st_size > 0

    damage_middle_leaf(tmp_path / "spool.db")
    readable = readable_numbers(tmp_path / "spool.db", tmp_path / "probe")
    assert set(range(400, 450)) <= readable and 350 < len(readable) < 450

    remote.behaviour = None
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        (damaged,) = [p for p in damaged_files(tmp_path) if not p.name.endswith(("-wal", "-shm"))]
        code, out, err = await run_cli_async("spool", "salvage", str(damaged), "--config", str(config))
        assert code == 0, err
        assert "re-queued" in out and str(damaged) in out
        try:
            await wait_for(lambda: set(numbers(remote)) >= readable, timeout=30)
        except AssertionError:
            lost = sorted(readable - set(numbers(remote)))
            raise AssertionError(
                f"{len(lost)} readable record(s) never came back: {lost}; salvage said {out}"
            ) from None
        assert set(numbers(remote)) == readable, "salvage sent records that were not in the damaged file"
        assert "requeued: 256" in err, f"no progress was printed: {err}"
        code, out, err = await run_cli_async("dlq", "list", "--json", "--config", str(config))
        assert code == 0, err
        assert [entry["status"] for entry in orjson.loads(out)] == [400]
    finally:
        assert await daemon.terminate() == 0


async def test_acknowledged_rows_in_the_wal_of_a_spool_with_a_damaged_header_are_kept_beside_it(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """The database file's first page is gone, but its WAL holds committed rows that exist nowhere else: moving the
    spool aside must keep that WAL, byte for byte, next to the damaged file."""
    remote.behaviour = lambda request, body: web.json_response({"error": "down"}, status=503)
    config = write_config(tmp_path, http_sink(remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    assert await daemon.terminate() == 0  # an empty spool, checkpointed: the file's first page is final
    daemon = Daemon.from_config(config)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        url = f"http://{daemon.http}/v1/records"
        # Small enough to fit the table's existing page: the WAL gets no new copy of the first page.
        assert (await post_records(session, url, [item(n) for n in range(20)])).status == 202
    await daemon.kill9()
    wal = (tmp_path / "spool.db-wal").read_bytes()
    assert len(wal) > 32
    db = bytearray((tmp_path / "spool.db").read_bytes())
    db[:100] = b"\xee" * 100
    (tmp_path / "spool.db").write_bytes(bytes(db))

    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        (moved,) = [p for p in damaged_files(tmp_path) if not p.name.endswith(("-wal", "-shm"))]
        kept = moved.with_name(moved.name + "-wal")
        assert kept.exists(), f"the WAL holding 20 acknowledged rows is gone: {sorted(os.listdir(tmp_path))}"
        assert kept.read_bytes() == wal
    finally:
        assert await daemon.terminate() == 0


async def test_salvage_of_a_file_with_nothing_readable_fails_saying_so(tmp_path: Path, remote: FakeRemote) -> None:
    """A file SQLite cannot read at all must not be reported as salvaged (an operator would then delete it)."""
    junk = tmp_path / "spool.db.damaged-20250101T000000"
    junk.write_bytes(b"\xee" * 64 * 1024)
    config = write_config(tmp_path, http_sink(remote.url))
    code, out, err = await run_cli_async("spool", "salvage", str(junk), "--config", str(config))
    assert code != 0, f"exit 0 for an unreadable file: {out}"
    assert str(junk) in err


async def test_a_spool_from_a_newer_shipper_is_refused_naming_both_versions_and_left_as_it_is(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """A rollback deploy must not start an empty queue beside the newer shipper's undelivered rows."""
    config = write_config(tmp_path, http_sink(remote.url))
    remote.behaviour = lambda request, body: web.json_response({}, status=503)  # keep the row queued
    daemon = Daemon.from_config(config)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        assert (await post_records(session, f"http://{daemon.http}/v1/records", [item(1)])).status == 202
    assert await daemon.terminate() == 0
    spool = tmp_path / "spool.db"
    conn = sqlite3.connect(spool)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = spool.read_bytes()

    code, _, err = await run_cli_async("run", "--config", str(config))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shipper: "), err
    assert "99" in err and "newer" in err and str(spool) in err
    assert damaged_files(tmp_path) == []
    assert spool.read_bytes() == before
    assert read(spool, SpoolReader.waiting) == 1
