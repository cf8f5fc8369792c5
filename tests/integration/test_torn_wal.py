"""Power loss, imitated on copies of a real spool: its WAL truncated at many offsets, or with a byte flipped.

The copies are taken while the spool is open, so the WAL holds every commit (none checkpointed yet) and the
database file holds none of them. Each damaged copy must open as a spool (not be moved aside as damaged: a torn WAL
is what a power cut leaves, and SQLite's recovery handles it), pass `PRAGMA quick_check`, and hold exactly the rows
of a prefix of the commits, in order: never a half-commit, never a later commit without an earlier one.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from shipper.records import NewRow
from shipper.spool import Spool

WAL_HEADER = 32
FRAME_HEADER = 24
COMMITS = 30


def row(n: int) -> NewRow:
    return NewRow(sink="remote", method="POST", path="/in", query=None, body=orjson.dumps({"n": n, "pad": "y" * 300}),
                  key=f"k{n % 7}")  # fmt: skip


@dataclass
class Original:
    db: Path
    wal: Path
    commits: list[list[int]]  # the ids committed by each append, in order
    page_size: int

    def prefixes(self) -> list[list[int]]:
        out: list[list[int]] = [[]]
        for ids in self.commits:
            out.append(out[-1] + ids)
        return out


async def make_original(live: Path, saved: Path) -> list[list[int]]:
    spool = await Spool.open(live, "fsync")
    try:
        rng = random.Random(6)
        commits = []
        n = 0
        for _ in range(COMMITS):
            count = rng.randint(1, 5)
            commits.append(await spool.append([row(n + i) for i in range(count)]))
            n += count
        # The group-commit writer is idle between awaits: the files are quiet while they are copied.
        shutil.copyfile(live, saved / "spool.db")
        shutil.copyfile(live.with_name("spool.db-wal"), saved / "spool.db-wal")
    finally:
        await spool.close()
    return commits


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    """A spool with COMMITS appends of 1 to 5 rows each, copied (db + WAL, no -shm) while still open."""
    live = tmp_path_factory.mktemp("live") / "spool.db"
    saved = tmp_path_factory.mktemp("saved")
    commits = asyncio.run(make_original(live, saved))
    conn = sqlite3.connect(saved / "spool.db")
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    wal = saved / "spool.db-wal"
    assert wal.stat().st_size > WAL_HEADER + COMMITS * (FRAME_HEADER + page_size), "the WAL holds every commit"
    return Original(saved / "spool.db", wal, commits, page_size)


def damaged_copy(original: Original, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(original.db, where / "spool.db")
    shutil.copyfile(original.wal, where / "spool.db-wal")
    return where / "spool.db"


async def survives(path: Path, original: Original) -> list[int]:
    """Open the copy as the daemon would and check it; returns the ids it holds."""
    spool = await Spool.open(path, "fsync")
    try:
        assert spool.recovered_from is None, "a torn WAL was treated as a damaged spool"
        lease = await spool.lease("remote", 10_000)
    finally:
        await spool.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        ids = [i for (i,) in conn.execute("SELECT id FROM rows ORDER BY id")]
        bodies = [orjson.loads(b)["n"] for (b,) in conn.execute("SELECT body FROM rows ORDER BY id")]
    finally:
        conn.close()
    # Lease order per key is intact: every key's oldest row is leasable, nothing else blocks.
    assert {r.id for r in lease.rows} <= set(ids)
    assert bodies == [i - 1 for i in ids], "a row's body does not belong to its id"
    assert ids in original.prefixes(), f"rows {ids} are not a prefix of the commits"
    return ids


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def frame_offsets(original: Original) -> list[int]:
    frame = FRAME_HEADER + original.page_size
    frames = (original.wal.stat().st_size - WAL_HEADER) // frame
    return [WAL_HEADER + i * frame for i in range(frames + 1)]


def truncation_points(original: Original) -> list[int]:
    """The empty file, inside the header, every frame boundary, and inside frame headers and pages."""
    points = {0, 1, 16, WAL_HEADER - 1}
    for start in frame_offsets(original):
        points |= {start, start + 7, start + FRAME_HEADER + 2000}
    size = original.wal.stat().st_size
    return sorted(p for p in points if p <= size)


async def test_a_wal_truncated_at_any_offset_opens_checks_clean_and_keeps_a_prefix_of_the_commits(
    original: Original, tmp_path: Path
) -> None:
    seen: set[int] = set()
    points = truncation_points(original)
    assert len(points) > 100
    for point in points:
        path = damaged_copy(original, tmp_path / f"cut-{point}")
        os.truncate(path.with_name("spool.db-wal"), point)
        kept = await survives(path, original)
        seen.add(len(kept))
        shutil.rmtree(path.parent)
    # The cuts covered the whole range: from nothing kept to everything kept.
    assert 0 in seen and sum(len(ids) for ids in original.commits) in seen
    assert len(seen) > COMMITS // 2


async def test_a_wal_with_a_flipped_byte_opens_checks_clean_and_keeps_a_prefix_of_the_commits(
    original: Original, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    size = original.wal.stat().st_size
    # Header bytes, each frame header's fields, and random places in the pages.
    targets = set(range(0, WAL_HEADER, 3))
    for start in frame_offsets(original)[:-1]:
        targets |= {start, start + 4, start + 9, start + 17, start + 23}
    targets |= {rng.randrange(WAL_HEADER, size) for _ in range(60)}
    everything = sum(len(ids) for ids in original.commits)
    shorter = 0
    for target in sorted(t for t in targets if t < size):
        path = damaged_copy(original, tmp_path / f"flip-{target}")
        flip(path.with_name("spool.db-wal"), target)
        kept = await survives(path, original)
        shorter += len(kept) < everything
        shutil.rmtree(path.parent)
    # A flip in a checksummed place cuts the WAL there: most flips must have cost the commits after them.
    assert shorter > len(targets) // 2


async def test_a_deleted_wal_leaves_the_spool_as_it_was_before_those_commits(
    original: Original, tmp_path: Path
) -> None:
    path = damaged_copy(original, tmp_path / "no-wal")
    path.with_name("spool.db-wal").unlink()
    assert await survives(path, original) == []
