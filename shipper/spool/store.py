"""The durable queue: one writer task owns the write connection and commits operations in groups.

Ingest appends, forwarder leases and settlements all queue up for the writer; it runs whatever has gathered in one
transaction (one fsync) and then answers every waiter. That is group commit: an acknowledgement is durable yet cheap.
Leases carry a deadline so a vanished sender's rows come back; rows sharing a key leave in id order because a row is
only eligible while no older row of its key is still queued.
Not responsible for deciding retries (forward/retry.py) or for reporting (stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from shipper.errors import SpoolError
from shipper.records import NewRow
from shipper.spool.schema import apply_pragmas, migrate

log = logging.getLogger(__name__)

MAX_GROUP_OPS = 2048
QUEUE_DEPTH = 8192

_INSERT = "INSERT INTO rows (id, sink, key, method, path, query, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_LEASE = """
WITH candidates AS (
    SELECT id, length(body) AS size FROM rows AS r
    WHERE sink = :sink AND lease_until <= :now AND next_attempt_at <= :now
      AND (key IS NULL OR NOT EXISTS (
          SELECT 1 FROM rows AS p WHERE p.sink = r.sink AND p.key = r.key AND p.id < r.id))
    ORDER BY id LIMIT :limit
), picked AS (
    SELECT id FROM (
        SELECT id, sum(size) OVER (ORDER BY id) AS total, row_number() OVER (ORDER BY id) AS n FROM candidates)
    WHERE total <= :max_bytes OR n = 1
)
UPDATE rows SET lease_until = :until, attempts = attempts + 1 WHERE id IN (SELECT id FROM picked)
RETURNING id, sink, key, method, path, query, body, created_at, attempts
"""
_NEXT_DUE = "SELECT min(next_attempt_at) FROM rows WHERE sink = ? AND next_attempt_at > ?"
_IDS = "SELECT value FROM json_each(?)"
_DEAD = """
INSERT INTO dead_letters
    (id, sink, key, method, path, query, body, created_at, attempts, failed_at, status, response, reason)
SELECT id, sink, key, method, path, query, body, created_at, attempts, ?, ?, ?, ? FROM rows WHERE id = ?
"""


@dataclass(frozen=True, slots=True)
class SpoolRow:
    id: int
    sink: str
    key: str | None
    method: str
    path: str
    query: bytes | None
    body: bytes
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Retry:
    id: int
    next_attempt_at: float
    error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    status: int | None
    response: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Lease:
    rows: list[SpoolRow]
    next_due: float | None  # when a row now backing off becomes eligible, if nothing else is


@dataclass(slots=True)
class _Settlement:
    delivered: list[int] = field(default_factory=list)
    retry: list[Retry] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    released: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Op:
    future: asyncio.Future[Any]
    append: Sequence[NewRow] | None = None
    settle: _Settlement | None = None
    lease: tuple[str, int, int] | None = None


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"another shipper is already using the spool {path}") from None
    return fd


def prepare_file(path: Path, durability: str) -> None:
    """Create (0600) and migrate the file synchronously, before the event loop depends on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            apply_pragmas(conn, durability)
            migrate(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SpoolError(f"cannot open spool {path}: {exc}") from exc


class Spool:
    """Async facade over the spool file; create with `await Spool.open(...)`, end with `await close()`."""

    def __init__(self, conn: aiosqlite.Connection, lock_fd: int, path: Path, lease_timeout: float) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._lease_timeout = lease_timeout
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(QUEUE_DEPTH)
        self._watchers: dict[str, Callable[[int], None]] = {}
        self._writer = asyncio.create_task(self._run_writer(), name="spool-writer")

    @classmethod
    async def open(cls, path: Path, durability: str = "fsync", lease_timeout: float = 300.0) -> Spool:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path)
        try:
            prepare_file(path, durability)
            conn = await aiosqlite.connect(path, isolation_level=None)
            await conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
            await conn.execute("PRAGMA busy_timeout=5000")
            # One process owns the spool (the lock says so): any lease left in the file is from a dead sender.
            await conn.execute("UPDATE rows SET lease_until = 0 WHERE lease_until > 0")
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(conn, lock_fd, path, lease_timeout)

    def watch(self, sink: str, callback: Callable[[int], None]) -> None:
        """Call `callback(count)` after each commit that adds rows for `sink` (the forwarder's wake-up)."""
        self._watchers[sink] = callback

    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        """Durably add rows; returns their ids once committed."""
        result: list[int] = await self._submit(_Op(self._future(), append=rows))
        return result

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62) -> Lease:
        result: Lease = await self._submit(_Op(self._future(), lease=(sink, limit, max_bytes)))
        return result

    async def settle(
        self,
        delivered: Iterable[int] = (),
        retry: Iterable[Retry] = (),
        dead: Iterable[DeadLetter] = (),
        released: Iterable[int] = (),
    ) -> None:
        settlement = _Settlement(list(delivered), list(retry), list(dead), list(released))
        await self._submit(_Op(self._future(), settle=settlement))

    async def close(self) -> None:
        if not self._writer.done():
            await self._queue.put(None)
            await self._writer
        await self._conn.close()
        os.close(self._lock_fd)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Op) -> Any:
        if self._writer.done():
            raise SpoolError("the spool is closed")
        await self._queue.put(op)
        return await op.future

    async def _run_writer(self) -> None:
        while True:
            first = await self._queue.get()
            group: list[_Op] = []
            stop = first is None
            if first is not None:
                group.append(first)
            while not stop and len(group) < MAX_GROUP_OPS and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                else:
                    group.append(op)
            if group:
                await self._commit(group)
            if stop:
                return

    async def _commit(self, group: list[_Op]) -> None:
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            results = await self._apply(group)
            await self._conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                await self._conn.execute("ROLLBACK")
            log.error("spool commit failed: %s", exc)
            error = SpoolError(f"spool write failed: {exc}")
            for op in group:
                if not op.future.done():
                    op.future.set_exception(error)
            return
        added: Counter[str] = Counter()
        for op, result in zip(group, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)
            if op.append:
                added.update(row.sink for row in op.append)
        for sink, count in added.items():
            callback = self._watchers.get(sink)
            if callback is not None:
                callback(count)

    async def _apply(self, group: list[_Op]) -> list[Any]:
        """Appends first, then settlements (they free keyed successors), then leases; one transaction."""
        results: list[Any] = [None] * len(group)
        appends = [(i, op.append) for i, op in enumerate(group) if op.append is not None]
        if appends:
            for i, ids in zip((i for i, _ in appends), await self._insert([rows for _, rows in appends]), strict=True):
                results[i] = ids
        merged = _Settlement()
        for op in group:
            if op.settle is not None:
                merged.delivered += op.settle.delivered
                merged.retry += op.settle.retry
                merged.dead += op.settle.dead
                merged.released += op.settle.released
        await self._settle(merged)
        for i, op in enumerate(group):
            if op.lease is not None:
                results[i] = await self._lease(*op.lease)
        return results

    async def _insert(self, batches: list[Sequence[NewRow]]) -> list[list[int]]:
        async with self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'") as cursor:
            found = await cursor.fetchone()
        next_id = (int(found[0]) if found else 0) + 1
        now = time.time()
        params: list[tuple[Any, ...]] = []
        out: list[list[int]] = []
        for rows in batches:
            ids = list(range(next_id, next_id + len(rows)))
            next_id += len(rows)
            out.append(ids)
            params.extend(
                (row_id, r.sink, r.key, r.method, r.path, r.query, r.body, now)
                for row_id, r in zip(ids, rows, strict=True)
            )
        await self._conn.executemany(_INSERT, params)
        return out

    async def _settle(self, s: _Settlement) -> None:
        if s.dead:
            now = time.time()
            await self._conn.executemany(_DEAD, [(now, d.status, d.response, d.reason, d.id) for d in s.dead])
        gone = s.delivered + [d.id for d in s.dead]
        if gone:
            await self._conn.execute(f"DELETE FROM rows WHERE id IN ({_IDS})", (orjson.dumps(gone),))
        if s.retry:
            await self._conn.executemany(
                "UPDATE rows SET lease_until = 0, next_attempt_at = ?, last_error = ? WHERE id = ?",
                [(r.next_attempt_at, r.error, r.id) for r in s.retry],
            )
        if s.released:
            await self._conn.execute(
                f"UPDATE rows SET lease_until = 0, attempts = max(attempts - 1, 0) WHERE id IN ({_IDS})",
                (orjson.dumps(s.released),),
            )

    async def _lease(self, sink: str, limit: int, max_bytes: int) -> Lease:
        now = time.time()
        params = {"sink": sink, "now": now, "limit": limit, "max_bytes": max_bytes, "until": now + self._lease_timeout}
        fetched = await self._conn.execute_fetchall(_LEASE, params)
        rows = sorted((SpoolRow(*row) for row in fetched), key=lambda row: row.id)
        next_due = None
        if len(rows) < limit:
            async with self._conn.execute(_NEXT_DUE, (sink, now)) as cursor:
                found = await cursor.fetchone()
            next_due = found[0] if found else None
        return Lease(rows, next_due)
