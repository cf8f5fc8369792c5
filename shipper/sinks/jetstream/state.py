"""What a sidecar keeps beside its spool for its `jetstream` sinks: its own stable id, and the ordering group each key
was published in (core/partition.py), in one small SQLite file, `<spool>.jetstream`.

The id names this sidecar in every message identity (`Nats-Msg-Id`), so it must outlive restarts and be the same in
every delivery process of one shipper: the first process to open the file makes it (a transaction, so two cannot
both), the others read it. The groups are what lets an update, or a child log, go to the partition its create went
to after any restart: written (fsynced) before the rows that teach them are published, forgotten after 30 days as
the spool forgets an entity's scope. Work runs on one thread of its own, never on the event loop.
Not responsible for the rule that computes a group (core/partition.py) or for publishing (sink.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shipper.core.partition import ordering_group, teaches
from shipper.core.rows import SpoolRow

T = TypeVar("T")
RETENTION = 30 * 86400
# Keys whose group this process has seen, kept to skip a read; a group never changes once taught.
CACHE_KEYS = 100_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS sidecar (id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    grp TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sink, key)
) WITHOUT ROWID;
"""


def state_path(spool: Path) -> Path:
    return spool.with_name(spool.name + ".jetstream")


class SidecarState:
    def __init__(self, path: Path, sink: str) -> None:
        self.path = path
        self._sink = sink
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"jetstream-{sink}")
        self._cache: dict[str, str] = {}
        self.sidecar = ""

    async def open(self) -> None:
        self.sidecar = await self._run(self._open)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._thread.shutdown()

    async def groups(self, rows: Sequence[SpoolRow]) -> list[str | None]:
        """Each row's ordering group, in order; what the rows teach is on disk when this returns."""
        return await self._run(self._groups, rows)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000"):
            conn.execute(pragma)
        try:
            conn.executescript(SCHEMA)
            with _transaction(conn):
                row = conn.execute("SELECT id FROM sidecar").fetchone()
                if row is None:
                    row = (uuid.uuid4().hex[:16],)
                    conn.execute("INSERT INTO sidecar (id) VALUES (?)", row)
                conn.execute("DELETE FROM groups WHERE created_at < ?", (time.time() - RETENTION,))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return str(row[0])

    def _groups(self, rows: Sequence[SpoolRow]) -> list[str | None]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("sidecar state is not open")
        known = self._known(conn, {name for row in rows for name in (row.key, row.after) if name is not None})
        out: list[str | None] = []
        taught: list[tuple[str, str]] = []
        for row in rows:
            group = ordering_group(row.key, row.scope, row.after, known)
            out.append(group)
            lesson = teaches(row.key, group)
            if lesson is not None and lesson[0] not in known:
                known[lesson[0]] = lesson[1]
                taught.append(lesson)
        if taught:
            now = time.time()
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR IGNORE INTO groups (sink, key, grp, created_at) VALUES (?, ?, ?, ?)",
                    [(self._sink, key, group, now) for key, group in taught],
                )
            self._remember(taught)
        return out

    def _known(self, conn: sqlite3.Connection, names: set[str]) -> dict[str, str]:
        known = {name: self._cache[name] for name in names if name in self._cache}
        missing = [name for name in names if name not in known]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found = conn.execute(
                f"SELECT key, grp FROM groups WHERE sink = ? AND key IN ({marks})", (self._sink, *chunk)
            ).fetchall()
            known.update(found)
            self._remember(found)
        return known

    def _remember(self, pairs: Sequence[tuple[str, str]]) -> None:
        for key, group in pairs:
            self._cache[key] = group
        while len(self._cache) > CACHE_KEYS:
            del self._cache[next(iter(self._cache))]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock now, so two processes cannot both decide) ... COMMIT, or ROLLBACK."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
