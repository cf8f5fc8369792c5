"""The row count the spool file keeps (schema 7) stays true when rows enter the queue from outside the daemon: a
`dlq replay` and a salvage put rows back, and a bounded spool opened afterwards counts them against its bound."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shipper.core.rows import DeadLetter
from shipper.errors import SpoolFull
from shipper.records import NewRow
from shipper.spool import Spool, dlq
from shipper.spool.bounds import Bounds
from shipper.spool.reader import SpoolReader, read
from shipper.spool.salvage import salvage

BOUND = Bounds(max_rows=3, when_full="reject")


def row(n: int) -> NewRow:
    return NewRow(sink="remote", method="POST", path="/in", query=None, body=orjson.dumps({"n": n}), key=None)


async def a_full_bound_refuses_one_more(path: Path) -> None:
    bounded = await Spool.open(path, bounds=BOUND)
    try:
        with pytest.raises(SpoolFull):
            await bounded.append([row(99)])
    finally:
        await bounded.close()


async def test_rows_a_replay_put_back_count_against_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        ids = await spool.append([row(n) for n in range(3)])
        await spool.lease("remote", 3)
        await spool.settle(dead=[DeadLetter(i, 400, "HTTP 400", "rejected by the remote: HTTP 400") for i in ids])
    finally:
        await spool.close()
    assert len(dlq.replay(path)) == 3
    assert read(path, SpoolReader.waiting) == 3
    await a_full_bound_refuses_one_more(path)


async def test_rows_a_salvage_requeued_count_against_the_bound(tmp_path: Path) -> None:
    old, path = tmp_path / "old.db", tmp_path / "spool.db"
    spool = await Spool.open(old)
    try:
        await spool.append([row(n) for n in range(3)])
    finally:
        await spool.close()
    assert salvage(old, path).requeued == 3
    await a_full_bound_refuses_one_more(path)
