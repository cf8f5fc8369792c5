"""A real full disk under the spool: a 2 MiB tmpfs filled by another file while the daemon runs.

A write that hits ENOSPC fails the waiting requests with 507 `insufficient_storage` and Retry-After; the daemon
stays up and keeps answering; nothing it acknowledged is lost and nothing it refused is ever sent; when space
returns (the filler file is deleted) ingest resumes by itself.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from tests.hardening import Gate, Switch, can_mount, fill, http_sink, item, numbers, post_records, send, tmpfs
from tests.support import Daemon, FakeRemote, wait_for, write_config

pytestmark = pytest.mark.skipif(not can_mount(), reason="needs mount/umount to make a small tmpfs")


def spool_on(tmp_path: Path, disk: Path, sinks: str, extra: str = "") -> Path:
    config = write_config(tmp_path, sinks, extra)
    config.write_text(config.read_text().replace(str(tmp_path / "spool.db"), str(disk / "spool.db")))
    return config


def leases_left(spool: Path) -> list[tuple[int, float | None]]:
    """(record number, seconds its lease still runs, None if it has none) for each queued row."""
    with SpoolReader.open(spool) as reader:
        leases, rows, now = reader.leases(), reader.waiting_rows(), time.time()
    return [(orjson.loads(row.body)["n"], leases[row.id] - now if row.id in leases else None) for row in rows]


async def fill_until_507(session: aiohttp.ClientSession, url: str, first: int) -> tuple[list[int], list[int]]:
    """Post one 1 kB record per request until the disk has refused five (a smaller write may still squeeze into
    space a failed one left in the WAL, so refusals and acknowledgements may interleave at the edge)."""
    acked: list[int] = []
    refused: list[int] = []
    for n in range(first, first + 5000):
        answer = await post_records(session, url, [item(n, pad=1000)])
        if answer.status == 202:
            acked.append(n)
            continue
        assert answer.status == 507, answer.raw
        body = answer.json()
        assert body["error"] == "insufficient_storage", body
        assert int(answer.headers["Retry-After"]) >= 1
        refused.append(n)
        if len(refused) == 5:
            return acked, refused
    raise AssertionError("5000 records went into a full 2 MiB filesystem")


async def test_a_full_disk_answers_507_keeps_serving_loses_nothing_and_resumes_when_space_returns(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = down = Switch(503)  # everything stays in the spool while the disk fills
    with tmpfs(tmp_path / "disk", "2m") as disk:
        config = spool_on(tmp_path, disk, http_sink(remote.url))
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://{daemon.http}/v1/records"
                before = [n for n in range(20) if (await post_records(session, url, [item(n, pad=1000)])).status == 202]
                assert before == list(range(20))
                filler = disk / "filler"
                fill(filler, leave=256 * 1024)
                acked, refused = await fill_until_507(session, url, first=1000)
                acked = before + acked

                # Still up, still answering, and honest about it.
                assert daemon.proc is not None and daemon.proc.returncode is None
                assert (await send(session, "GET", f"http://{daemon.http}/healthz")).status == 200

                filler.unlink()
                deadline = time.monotonic() + 20
                n = 2000
                while True:
                    answer = await post_records(session, url, [item(n, pad=1000)])
                    if answer.status == 202:
                        acked.append(n)
                        break
                    assert answer.status == 507, answer.raw
                    refused.append(n)
                    assert time.monotonic() < deadline, "ingest did not resume after space came back"
                    n += 1
                assert (await send(session, "GET", f"http://{daemon.http}/readyz")).status == 200
                for n in range(3000, 3010):
                    assert (await post_records(session, url, [item(n)])).status == 202
                    acked.append(n)

                down.on = False
                await wait_for(lambda: set(numbers(remote)) >= set(acked), timeout=30)
                spool = disk / "spool.db"
                await wait_for(lambda: read(spool, SpoolReader.waiting) == 0, timeout=10)
            assert not set(numbers(remote)) & set(refused), "a record answered 507 was sent anyway"
            assert "spool commit failed" in daemon.logs()
        finally:
            await daemon.ensure_stopped()
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.logs()


async def test_with_the_remote_up_a_full_disk_still_loses_no_acknowledged_record(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """Deliveries go on while the disk is full; their settlements fail too, so rows may come again (at least once)."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        config = spool_on(tmp_path, disk, http_sink(remote.url), "lease_timeout = 3")
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://{daemon.http}/v1/records"
                filler = disk / "filler"
                fill(filler, leave=256 * 1024)
                acked, refused = await fill_until_507(session, url, first=0)
                assert acked, "the 256 kB left free took no record"
                filler.unlink()
                await wait_for(lambda: set(numbers(remote)) >= set(acked), timeout=30)
                extra = list(range(9000, 9050))
                for start in range(0, 50, 10):
                    answer = await post_records(session, url, [item(n) for n in extra[start : start + 10]])
                    assert answer.status == 202, answer.raw
            await wait_for(lambda: set(numbers(remote)) >= set(acked) | set(extra), timeout=30)
            await wait_for(lambda: read(disk / "spool.db", SpoolReader.waiting) == 0, timeout=15)
            assert not set(numbers(remote)) & set(refused)
        finally:
            await daemon.ensure_stopped()


async def test_rows_whose_outcome_could_not_be_written_on_a_full_disk_go_out_soon_after_space_returns(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """A send that ends while the disk is full cannot record its retry; the row must not sit leased for the
    default lease_timeout (300 s) once the disk has room again."""
    gate = Gate()
    remote.async_behaviour = gate
    remote.behaviour = down = Switch(503)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        config = spool_on(tmp_path, disk, http_sink(remote.url, concurrency=4))
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://{daemon.http}/v1/records"
                acked = [n for n in range(8) if (await post_records(session, url, [item(n)])).status == 202]
                assert acked == list(range(8))
                await wait_for(lambda: remote.in_flight >= 1, timeout=10)
                filler = disk / "filler"
                fill(filler)
                gate.open()  # the held sends now come back 503, and their retries cannot be written
                await wait_for(lambda: remote.in_flight == 0, timeout=10)
                await asyncio.sleep(1.0)  # the disk stays full while the forwarder tries to record the outcome
                filler.unlink()
                down.on = False
                started = time.monotonic()
                try:
                    await wait_for(lambda: set(numbers(remote)) >= set(acked), timeout=30)
                except AssertionError:
                    missing = sorted(set(acked) - set(numbers(remote)))
                    raise AssertionError(
                        f"records {missing} were not delivered {time.monotonic() - started:.0f}s after space"
                        f" returned; in the spool (n, seconds of lease left): {leases_left(disk / 'spool.db')}"
                    ) from None
        finally:
            await daemon.ensure_stopped()


async def test_readiness_turns_503_while_ingest_answers_507_and_back_once_space_returns(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """Ready means a record sent now would be taken: not while the disk refuses appends."""
    remote.behaviour = Switch(503)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        config = spool_on(tmp_path, disk, http_sink(remote.url))
        config.write_text(config.read_text().replace("[ingest]\n", "[ingest]\nmax_body_bytes = 65536\n"))
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://{daemon.http}/v1/records"
                ready = f"http://{daemon.http}/readyz"
                assert (await send(session, "GET", ready)).status == 200
                filler = disk / "filler"
                fill(filler, leave=128 * 1024)
                await fill_until_507(session, url, first=0)
                answer = await send(session, "GET", ready)
                assert answer.status == 503 and answer.json()["error"] == "insufficient_storage", answer.raw
                filler.unlink()  # room for a request of max_body_bytes again: ready before any append proves it
                assert (await send(session, "GET", ready)).status == 200
                assert (await post_records(session, url, [item(9000)])).status == 202
        finally:
            await daemon.ensure_stopped()
