"""Compressed request bodies: decoded at the edge, inflated never past max_body_bytes, each failure its own answer.

A gzip bomb is refused with 413 after inflating at most `max_body_bytes + 1` bytes (whatever its ratio); a body
that does not decode is 400 `invalid_encoding`; a coding shipper does not know is 415 `unsupported_encoding`.
Nothing from a refused request is spooled, and good compressed bodies are taken like plain ones.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from tests.hardening import Answer, http_sink, item, send
from tests.support import Daemon, FakeRemote, ndjson, wait_for, write_config

LIMIT = 64 * 1024


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    remote = FakeRemote()
    await remote.start()
    config = write_config(tmp_path, http_sink(remote.url), ingest_extra=f"max_body_bytes = {LIMIT}")
    running = Daemon.from_config(config)
    try:
        await running.start()
        yield running
    finally:
        await running.ensure_stopped()
        await remote.stop()


async def post(daemon: Daemon, body: bytes, encoding: str) -> Answer:
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": encoding}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        return await send(session, "POST", f"http://{daemon.http}/v1/records", body, headers)


def spooled(daemon: Daemon) -> int:
    return read(daemon.config.parent / "spool.db", SpoolReader.waiting)


RECORDS = ndjson([item(1), item(2)])
GOOD = {
    "gzip": gzip.compress(RECORDS),
    "x-gzip": gzip.compress(RECORDS),
    "deflate": zlib.compress(RECORDS),
    "identity": RECORDS,
    "gzip, identity": gzip.compress(RECORDS),
}


@pytest.mark.parametrize("encoding", sorted(GOOD))
async def test_a_compressed_body_is_taken_like_a_plain_one(daemon: Daemon, encoding: str) -> None:
    answer = await post(daemon, GOOD[encoding], encoding)
    assert answer.status == 202, answer
    assert answer.json()["accepted"] == 2


async def test_raw_deflate_as_some_clients_send_it_is_taken_too(daemon: Daemon) -> None:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    answer = await post(daemon, squeeze.compress(RECORDS) + squeeze.flush(), "deflate")
    assert answer.status == 202, answer


BAD = [
    pytest.param(b"\x1f\x8b\x08\x00garbage-not-gzip", "gzip", 400, "invalid_encoding", id="gzip-garbage"),
    pytest.param(gzip.compress(RECORDS)[:-12], "gzip", 400, "invalid_encoding", id="gzip-truncated"),
    pytest.param(b"plain text, no deflate", "deflate", 400, "invalid_encoding", id="deflate-garbage"),
    pytest.param(gzip.compress(RECORDS) + b"tail", "gzip", 400, "invalid_encoding", id="gzip-trailing-data"),
    pytest.param(RECORDS, "br", 415, "unsupported_encoding", id="unknown-coding"),
    pytest.param(gzip.compress(b"\n" * (50 * 1024 * 1024)), "gzip", 413, "body_too_large", id="gzip-bomb"),
    pytest.param(gzip.compress(gzip.compress(b" " * (LIMIT + 1))), "gzip, gzip", 413, "body_too_large", id="nested"),
]


@pytest.mark.parametrize(("body", "encoding", "status", "error"), BAD)
async def test_a_body_that_cannot_be_decoded_within_bounds_is_refused_naming_why(
    daemon: Daemon, body: bytes, encoding: str, status: int, error: str
) -> None:
    answer = await post(daemon, body, encoding)
    assert answer.status == status, answer
    assert answer.json()["error"] == error
    assert answer.json().get("field", "Content-Encoding") == "Content-Encoding"
    assert spooled(daemon) == 0
    # The daemon serves on.
    assert (await post(daemon, GOOD["gzip"], "gzip")).status == 202


async def test_many_bombs_at_once_are_all_refused_and_the_daemon_serves_on(daemon: Daemon) -> None:
    bomb = gzip.compress(b"\n" * (50 * 1024 * 1024))
    answers = await asyncio.gather(*(post(daemon, bomb, "gzip") for _ in range(8)))
    assert [a.status for a in answers] == [413] * 8
    good = await post(daemon, GOOD["gzip"], "gzip")
    assert good.status == 202
    await wait_for(lambda: spooled(daemon) == 0, timeout=20)  # delivered: the sink still runs
    assert orjson.loads(good.raw)["accepted"] == 2
