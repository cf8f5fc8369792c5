"""Bounded disk, end to end: `[spool] max_rows` / `max_bytes` with `when_full = "reject"` or `"drop_oldest"`.

reject: a request that does not fit is answered 503 `spool_full` with Retry-After, nothing of it is spooled and
nothing acknowledged is dropped; once the backlog drains, ingest takes records again. drop_oldest: every request is
taken, the oldest rows not being sent make room, each drop is counted per sink and logged at an interval. After a
backlog drains the spool file gives its space back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from shipper.core.leasing import LEASE_AHEAD
from shipper.spool.reader import SpoolReader, read
from tests.hardening import Gate, Switch, http_sink, item, numbers, post_records
from tests.support import Daemon, FakeRemote, metric, scrape, wait_for, write_config

SLOTS = 4


def records_url(daemon: Daemon) -> str:
    return f"http://{daemon.http}/v1/records"


def queued(tmp_path: Path) -> int:
    return read(tmp_path / "spool.db", SpoolReader.waiting)


def numbers_kept(tmp_path: Path) -> list[int]:
    """The record number of each queued row, in acknowledgement order."""
    return [orjson.loads(row.body)["n"] for row in read(tmp_path / "spool.db", SpoolReader.waiting_rows)]


def spool_size(tmp_path: Path) -> int:
    return sum((tmp_path / name).stat().st_size for name in ("spool.db", "spool.db-wal") if (tmp_path / name).exists())


async def test_reject_answers_503_spool_full_with_retry_after_drops_nothing_and_delivers_everything_acknowledged(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = down = Switch(503)
    config = write_config(tmp_path, http_sink(remote.url), 'max_rows = 20\nwhen_full = "reject"')
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            for n in range(18):
                assert (await post_records(session, url, [item(n)])).status == 202
            # A request that would cross the bound is refused whole, not half-taken.
            answer = await post_records(session, url, [item(n) for n in range(100, 105)])
            assert answer.status == 503, answer.raw
            assert answer.json()["error"] == "spool_full"
            assert int(answer.headers["Retry-After"]) >= 1
            assert queued(tmp_path) == 18
            for n in range(18, 20):
                assert (await post_records(session, url, [item(n)])).status == 202
            refused = await post_records(session, url, [item(200)])
            assert refused.status == 503 and refused.json()["error"] == "spool_full"
            assert queued(tmp_path) == 20

            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_requests_rejected_total", reason="spool_full") == 2
            assert metric(samples, "shipper_records_dropped_total", sink="remote", reason="spool_full") in (None, 0)

            down.on = False
            await wait_for(lambda: sorted(set(numbers(remote))) == list(range(20)), timeout=30)
            # Room again: the bound counts what is queued now, not what was ever queued.
            await wait_for(lambda: queued(tmp_path) == 0, timeout=10)
            assert (await post_records(session, url, [item(300)])).status == 202
        await wait_for(lambda: 300 in numbers(remote), timeout=10)
        assert 100 not in numbers(remote) and 200 not in numbers(remote)
    finally:
        assert await daemon.terminate() == 0


async def fill_until_refused(session: aiohttp.ClientSession, url: str, pad: int, limit: int = 1000) -> list[int]:
    """Post one padded record per request until the spool refuses one as full; returns the acknowledged numbers."""
    acked: list[int] = []
    for n in range(limit):
        answer = await post_records(session, url, [item(n, pad=pad)])
        if answer.status != 202:
            assert answer.status == 503 and answer.json()["error"] == "spool_full", answer.raw
            assert int(answer.headers["Retry-After"]) >= 1
            return acked
        acked.append(n)
    raise AssertionError(f"{limit} records of {pad} bytes went in without the bound refusing any")


async def test_a_max_bytes_bound_holds_records_worth_a_fair_share_of_its_bytes(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """400 kB holds well over 50 records of 2 kB (each costs its bytes plus a little), whatever the WAL's churn."""
    remote.behaviour = Switch(503)
    config = write_config(tmp_path, http_sink(remote.url), 'max_bytes = 400000\nwhen_full = "reject"')
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            acked = await fill_until_refused(session, records_url(daemon), pad=2000)
        assert len(acked) >= 50, (
            f"only {len(acked)} records of 2 kB ({len(acked) * 2} kB) fitted in a 400 kB bound;"
            f" spool.db + WAL on disk = {spool_size(tmp_path)} bytes"
        )
    finally:
        assert await daemon.terminate() == 0


async def test_a_max_bytes_bound_takes_records_again_once_the_backlog_has_drained(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = down = Switch(503)
    config = write_config(tmp_path, http_sink(remote.url), 'max_bytes = 400000\nwhen_full = "reject"')
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            acked = await fill_until_refused(session, url, pad=2000)
            assert acked
            down.on = False
            await wait_for(lambda: set(numbers(remote)) >= set(acked), timeout=30)
            await wait_for(lambda: queued(tmp_path) == 0, timeout=10)

            # The queue is empty: new records must be taken again (allowing some seconds for upkeep).
            deadline = time.monotonic() + 15
            while True:
                answer = await post_records(session, url, [item(5000, pad=2000)])
                if answer.status == 202:
                    break
                assert answer.status == 503, answer.raw
                assert time.monotonic() < deadline, (
                    f"an empty spool still refuses records as {answer.json()['error']}:"
                    f" spool.db + WAL on disk = {spool_size(tmp_path)} bytes"
                )
                await asyncio.sleep(0.5)
        await wait_for(lambda: 5000 in numbers(remote), timeout=10)
    finally:
        assert await daemon.terminate() == 0


async def test_drop_oldest_takes_every_request_drops_the_oldest_unleased_rows_and_counts_each_drop(
    tmp_path: Path, remote: FakeRemote
) -> None:
    # One send at a time, held by the remote: row 0 stays leased for the whole experiment.
    gate = Gate()
    remote.async_behaviour = gate
    config = write_config(tmp_path, http_sink(remote.url, concurrency=1), 'max_rows = 10\nwhen_full = "drop_oldest"')
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            assert (await post_records(session, url, [item(0)])).status == 202
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            for n in range(1, 25):
                answer = await post_records(session, url, [item(n)])
                assert answer.status == 202, answer.raw
            kept = numbers_kept(tmp_path)
            # The leased row is never dropped; the newest fill the rest of the bound.
            assert kept == [0, *range(16, 25)]

            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_records_dropped_total", sink="remote", reason="spool_full") == 15
            assert metric(samples, "shipper_records_received_total", sink="remote") == 25
            drop_lines = [line for line in daemon.log_lines() if "dropped the oldest" in line]
            # Fifteen drops in well under 30 s: one log line, not one per drop.
            assert len(drop_lines) == 1, drop_lines
            assert "remote" in drop_lines[0]

            gate.open()
            await wait_for(lambda: sorted(numbers(remote)) == [0, *range(16, 25)], timeout=30)
            await wait_for(lambda: queued(tmp_path) == 0, timeout=10)
    finally:
        assert await daemon.terminate() == 0


async def test_drop_oldest_on_a_byte_bound_keeps_the_spool_near_the_bound_and_the_newest_records(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = down = Switch(503)
    config = write_config(
        tmp_path, http_sink(remote.url, concurrency=SLOTS), 'max_bytes = 300000\nwhen_full = "drop_oldest"'
    )
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            for n in range(400):
                answer = await post_records(session, url, [item(n, pad=2000)])
                assert answer.status == 202, answer.raw
            kept = numbers_kept(tmp_path)
            assert kept[-1] == 399 and 0 not in kept
            # The newest run of records, within the bound but not emptied. Rows leased for a probe, and the rows the
            # probe leased ahead, are never dropped: at most LEASE_AHEAD per slot may survive out of turn.
            run = len(kept) - 1
            while run > 0 and kept[run - 1] == kept[run] - 1:
                run -= 1
            stragglers = kept[:run]
            assert len(stragglers) <= SLOTS * LEASE_AHEAD, kept
            assert len(kept) - run >= 50, kept
            assert 50 <= len(kept) < 150, len(kept)
            _, samples = await scrape(session, f"http://{daemon.http}")
            dropped = metric(samples, "shipper_records_dropped_total", sink="remote", reason="spool_full")
            assert dropped == 400 - len(kept)
            down.on = False
            await wait_for(lambda: set(numbers(remote)) == set(kept), timeout=30)
    finally:
        assert await daemon.terminate() == 0


async def test_the_spool_file_gives_its_space_back_after_a_backlog_drains(tmp_path: Path, remote: FakeRemote) -> None:
    remote.behaviour = down = Switch(503)
    config = write_config(tmp_path, http_sink(remote.url, concurrency=8))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            for start in range(0, 2000, 100):
                answer = await post_records(session, url, [item(n, pad=4000) for n in range(start, start + 100)])
                assert answer.status == 202, answer.raw
        db = tmp_path / "spool.db"
        high_water = db.stat().st_size
        assert high_water > 6_000_000, high_water
        down.on = False
        await wait_for(lambda: len(set(numbers(remote))) == 2000, timeout=60)
        await wait_for(lambda: queued(tmp_path) == 0, timeout=10)
        # Incremental vacuum runs every few seconds in the writer; the database file shrinks within ~20 s.
        try:
            await wait_for(lambda: db.stat().st_size < high_water // 4, timeout=30, interval=0.5)
        except AssertionError:
            raise AssertionError(
                f"spool.db stayed at {db.stat().st_size} bytes (high water {high_water}) after the backlog drained"
            ) from None
    finally:
        assert await daemon.terminate() == 0


async def test_drop_oldest_never_drops_rows_for_a_request_it_refuses_anyway(tmp_path: Path, remote: FakeRemote) -> None:
    """A request larger than the whole bound cannot be taken; refusing it must not cost the rows already queued."""
    remote.behaviour = down = Switch(503)
    config = write_config(tmp_path, http_sink(remote.url), 'max_rows = 10\nwhen_full = "drop_oldest"')
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = records_url(daemon)
            for n in range(8):
                assert (await post_records(session, url, [item(n)])).status == 202
            answer = await post_records(session, url, [item(n) for n in range(100, 105)] * 3)  # 15 > max_rows
            assert (answer.status, answer.json()["error"]) == (413, "larger_than_spool"), answer.raw
            assert "Retry-After" not in answer.headers  # it will never fit as it is: split it, do not retry it
            # Refused whole, and the eight acknowledged rows are all still queued (none counted as dropped).
            kept = numbers_kept(tmp_path)
            assert kept == list(range(8)), f"refused a request and dropped acknowledged rows anyway: kept {kept}"
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_records_dropped_total", sink="remote", reason="spool_full") in (None, 0)
            down.on = False
            await wait_for(lambda: sorted(set(numbers(remote))) == list(range(8)), timeout=20)
    finally:
        assert await daemon.terminate() == 0
