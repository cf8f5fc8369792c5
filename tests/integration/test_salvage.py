"""A spool with one damaged page, on a real SQLite file: moved aside at start, then salvaged row by row.

The damage is a leaf page of the `rows` table overwritten with garbage. Which rows lived on it is found by asking
the damaged file for each id alone (a lookup by id reads only the path to that id's page), so the test knows the
exact set a salvage can and cannot read: every readable row must come back, in order, with its API key, the learnt
ids and the dead letters.
"""

from __future__ import annotations

import random
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest

from shipper.core.rows import DeadLetter
from shipper.errors import SpoolError
from shipper.records import NewRow
from shipper.spool import Spool
from shipper.spool.salvage import salvage

ROWS = 600
KEY = "sk-salvage-test-1234567890"


def row(n: int, keyed: bool = True) -> NewRow:
    body = orjson.dumps({"n": n, "pad": "z" * 300})
    key = f"k{n % 13}" if keyed else None
    return NewRow("remote", "POST", "/in", None, body, key=key, credential=KEY if n % 2 else None)


async def make_spool(path: Path) -> list[int]:
    """ROWS queued rows (odd ones carrying an API key), two dead letters and one learnt id; closed cleanly."""
    spool = await Spool.open(path)
    try:
        ids: list[int] = []
        for start in range(0, ROWS, 50):
            ids += await spool.append([row(n) for n in range(start, start + 50)])
        extra = await spool.append([row(9000, keyed=False), row(9001, keyed=False)])
        lease = await spool.lease("remote", 10_000)
        assert {r.id for r in lease.rows} >= set(extra)
        await spool.settle(
            dead=[DeadLetter(i, 400, '{"error":"no"}', "rejected by the remote: HTTP 400") for i in extra],
            released=[r.id for r in lease.rows if r.id not in extra],
            learned=[("remote", "pr_shp_local", "pr_remote_42")],
        )
    finally:
        await spool.close()
    return ids


def damage_a_leaf_of_rows(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        leaves = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'rows' AND pagetype = 'leaf'")]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    victim = sorted(leaves)[len(leaves) // 2]
    with open(path, "r+b") as out:
        out.seek((victim - 1) * page_size)
        out.write(random.Random(7).randbytes(page_size))


def readable_ids(path: Path, ids: list[int]) -> list[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found = []
    try:
        for i in ids:
            try:
                if conn.execute("SELECT id, body FROM rows WHERE id = ?", (i,)).fetchone() is not None:
                    found.append(i)
            except sqlite3.DatabaseError:
                pass
    finally:
        conn.close()
    return found


@pytest.fixture
async def damaged(tmp_path: Path) -> tuple[Path, list[int], list[int]]:
    """(the damaged file, every queued id it had, the ids still readable)."""
    path = tmp_path / "old" / "spool.db"
    path.parent.mkdir()
    ids = await make_spool(path)
    damage_a_leaf_of_rows(path)
    readable = readable_ids(path, ids)
    assert 0 < len(ids) - len(readable) < 40, "one page of rows is unreadable, and only one"
    return path, ids, readable


async def test_a_spool_failing_quick_check_is_moved_aside_and_a_fresh_one_takes_its_place(
    damaged: tuple[Path, list[int], list[int]],
) -> None:
    path, _, _ = damaged
    garbage = path.read_bytes()
    spool = await Spool.open(path)
    try:
        assert spool.recovered_from is not None
        assert spool.recovered_from.name.startswith("spool.db.damaged-")
        assert spool.recovered_from.read_bytes() == garbage
        assert (await spool.lease("remote", 10)).rows == []
        assert await spool.append([row(1)])
    finally:
        await spool.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()


async def test_salvage_requeues_every_readable_row_in_order_with_its_key_and_keeps_dead_letters_and_ids(
    damaged: tuple[Path, list[int], list[int]], tmp_path: Path
) -> None:
    old, ids, readable = damaged
    fresh = tmp_path / "new" / "spool.db"
    # The live spool already holds a row: salvaged rows queue after it.
    spool = await Spool.open(fresh)
    (first,) = await spool.append([row(-1)])
    await spool.close()

    progress: list[tuple[str, int]] = []
    report = salvage(old, fresh, lambda what, count: progress.append((what, count)))
    assert report.requeued == len(readable), (
        f"{len(readable)} of {len(ids)} rows were readable, salvage re-queued {report.requeued}"
        f" ({report.unreadable_stretches} unreadable stretch(es))"
    )
    assert report.dead_letters == 2
    assert progress and progress[-1][0] == "dead letters kept"

    conn = sqlite3.connect(fresh)
    queued = conn.execute("SELECT id, body, attempts, credential_id, key FROM rows ORDER BY id").fetchall()
    dead = conn.execute("SELECT status, reason, body FROM dead_letters ORDER BY id").fetchall()
    conn.close()
    assert queued[0][0] == first
    salvaged = [orjson.loads(body)["n"] for _, body, _, _, _ in queued[1:]]
    assert salvaged == [i - 1 for i in readable], "salvaged rows are not the readable ones in their order"
    assert all(attempts == 0 for _, _, attempts, _, _ in queued)
    assert [(status, orjson.loads(body)["n"]) for status, _, body in dead] == [(400, 9000), (400, 9001)]

    spool = await Spool.open(fresh)
    try:
        for _, body, _, credential_id, key in queued[1:]:
            n = orjson.loads(body)["n"]
            assert key == f"k{n % 13}"
            if n % 2:
                assert credential_id is not None and await spool.credential(credential_id) == KEY
            else:
                assert credential_id is None
        assert await spool.upstream_id("remote", "pr_shp_local") == "pr_remote_42"
        # Ids are never reused: the dead letters kept and new rows do not collide.
        more = await spool.append([row(-2)])
        assert more[0] > max(i for i, *_ in queued)
    finally:
        await spool.close()


def test_salvage_of_a_file_that_is_not_a_spool_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(SpoolError, match=r"junk\.db"):
        salvage(junk, tmp_path / "spool.db")
    with pytest.raises(SpoolError, match="no file"):
        salvage(tmp_path / "missing.db", tmp_path / "spool.db")
