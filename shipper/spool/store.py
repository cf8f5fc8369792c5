"""The durable queue: one writer task owns the write connection and commits operations in groups.

Ingest appends, forwarder leases and settlements all queue up for the writer; it runs whatever has gathered in one
transaction (one fsync) and then answers every waiter. That is group commit: an acknowledgement is durable yet cheap.
A row is eligible only while no older row shares its key (per-entity order) and, when it names an `after`, no older
row has that key or scope (an update waits for its create, session metadata for the session's rows). A dead create
takes its dependants with it. Not responsible for retry decisions (forward/retry.py) or reporting (stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from shipper.errors import DiskFull, SpoolError, SpoolFull
from shipper.logs import Throttled
from shipper.records import NewRow
from shipper.spool import sql
from shipper.spool.bounds import Bounds, excess, row_bytes, rows_to_drop
from shipper.spool.files import lock, prepare_file
from shipper.spool.rows import DeadLetter, Lease, Retry, Settlement, SpoolRow
from shipper.spool.schema import pragmas

log = logging.getLogger(__name__)

MAX_GROUP_OPS = 2048
QUEUE_DEPTH = 8192

ROW_RECOUNT_INTERVAL = 30.0
MAINTENANCE_INTERVAL = 5.0
VACUUM_MIN_PAGES = 256  # 1 MiB of free pages before it is worth giving them back
VACUUM_MAX_PAGES = 4096  # at most 16 MiB per pass, so one pass never stalls the writer for long
# Entities whose create is older than this are forgotten: their updates no longer join the create's scope.
SCOPE_RETENTION = 30 * 86400
MAX_CACHED_SCOPES = 100_000

Call = Callable[[aiosqlite.Connection], Awaitable[Any]]


@dataclass(slots=True)
class _Op:
    future: asyncio.Future[Any]
    append: Sequence[NewRow] | None = None
    settle: Settlement | None = None
    lease: tuple[str, int, int] | None = None
    call: Call | None = None


def _classify_failure(exc: BaseException) -> SpoolError:
    """ENOSPC is the operator's to fix and passes by itself (507); anything else is the spool's (503)."""
    text = str(exc)
    if "full" in text or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return DiskFull(f"no space left for the spool: {text}")
    return SpoolError(f"spool write failed: {text}")


def _digest(sink: str, secret: str) -> str:
    return hashlib.sha256(f"{sink}\0{secret}".encode()).hexdigest()


class Spool:
    """Async facade over the spool file; create with `await Spool.open(...)`, end with `await close()`."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        lock_fd: int,
        path: Path,
        lease_timeout: float,
        bounds: Bounds | None = None,
        page_size: int = 4096,
        durability: str = "fsync",
    ) -> None:
        self.path = path
        self.recovered_from: Path | None = None
        self._durability = durability
        self._synchronous = "FULL" if durability == "fsync" else "NORMAL"
        self._bounds = bounds or Bounds()
        self._page_size = page_size
        self._rows: int | None = None
        self._rows_synced = 0.0
        self._dropped: Counter[str] = Counter()
        self._next_maintenance = 0.0
        self._conn = conn
        self._lock_fd = lock_fd
        self._lease_timeout = lease_timeout
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(QUEUE_DEPTH)
        self._watchers: dict[str, Callable[[int], None]] = {}
        self._credential_ids: dict[str, int] = {}
        self._credentials: dict[int, str] = {}
        self._upstream: dict[tuple[str, str], str] = {}
        self._scopes: dict[tuple[str, str], str] = {}
        self._failure_log = Throttled(log, 10.0)
        self._writer = asyncio.create_task(self._run_writer(), name="spool-writer")

    @classmethod
    async def open(
        cls,
        path: Path,
        durability: str = "fsync",
        lease_timeout: float = 300.0,
        bounds: Bounds | None = None,
    ) -> Spool:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = lock(path)
        try:
            damaged = prepare_file(path, durability)
            conn = await aiosqlite.connect(path, isolation_level=None)
            for pragma in pragmas(durability):
                await conn.execute(pragma)
            # One process owns the spool (the lock says so): any lease left in the file is from a dead sender, whose
            # send may or may not have reached the remote: it counts as an attempt.
            await conn.execute("UPDATE rows SET attempts = attempts + 1 WHERE id IN (SELECT id FROM leases)")
            await conn.execute("DELETE FROM leases")
            await conn.execute("DELETE FROM entity_scopes WHERE created_at < ?", (time.time() - SCOPE_RETENTION,))
            async with conn.execute("PRAGMA page_size") as cursor:
                page_size = int((await cursor.fetchone() or (4096,))[0])
        except BaseException:
            os.close(lock_fd)
            raise
        spool = cls(conn, lock_fd, path, lease_timeout, bounds or Bounds(), page_size, durability)
        spool.recovered_from = damaged
        return spool

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
        learned: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        settlement = Settlement(list(delivered), list(retry), list(dead), list(released), list(learned))
        await self._submit(_Op(self._future(), settle=settlement))

    async def credential(self, credential_id: int) -> str | None:
        """The API key stored for rows that carry `credential_id` (cached: keys never change)."""
        if credential_id not in self._credentials:

            async def read(conn: aiosqlite.Connection) -> None:
                async with conn.execute("SELECT value FROM credentials WHERE id = ?", (credential_id,)) as cursor:
                    found = await cursor.fetchone()
                if found is not None:
                    self._credentials[credential_id] = found[0]

            await self._submit(_Op(self._future(), call=read))
        return self._credentials.get(credential_id)

    async def upstream_id(self, sink: str, local: str) -> str | None:
        """The remote's id for an id shipper made up for the app, once a delivered create taught it."""
        if (sink, local) not in self._upstream:

            async def read(conn: aiosqlite.Connection) -> None:
                query = "SELECT upstream FROM id_map WHERE sink = ? AND local = ?"
                async with conn.execute(query, (sink, local)) as cursor:
                    found = await cursor.fetchone()
                if found is not None:
                    self._upstream[(sink, local)] = found[0]

            await self._submit(_Op(self._future(), call=read))
        return self._upstream.get((sink, local))

    async def ping(self) -> None:
        """Prove the spool takes a write: an empty write transaction through the group-commit writer."""

        async def nothing(conn: aiosqlite.Connection) -> None:
            return None

        await self._submit(_Op(self._future(), call=nothing))

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
        new_credentials: dict[str, int] = {}
        learned: list[tuple[str, str, str]] = []
        try:
            await self._sync_for(any(op.append for op in group))
            await self._conn.execute("BEGIN IMMEDIATE")
            results = await self._apply(group, new_credentials, learned)
            await self._conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                await self._conn.execute("ROLLBACK")
            self._rows = None
            self._dropped.clear()
            error = _classify_failure(exc)
            self._failure_log.warning("spool commit failed: %s", exc)
            for op in group:
                if not op.future.done():
                    op.future.set_exception(error)
            return
        if time.monotonic() >= self._next_maintenance:
            with contextlib.suppress(sqlite3.Error):  # housekeeping: a failure here costs only disk space
                await self._maintain()
        if self._dropped and self._bounds.on_drop is not None:
            self._bounds.on_drop(self._dropped)
        self._dropped = Counter()
        self._credential_ids.update(new_credentials)
        self._upstream.update({(sink, local): upstream for sink, local, upstream in learned})
        added: Counter[str] = Counter()
        for op, result in zip(group, results, strict=True):
            if op.future.done():
                continue
            if isinstance(result, SpoolError):
                op.future.set_exception(result)
                continue
            op.future.set_result(result)
            if op.append:
                added.update(row.sink for row in op.append)
        for sink, count in added.items():
            callback = self._watchers.get(sink)
            if callback is not None:
                callback(count)

    async def _sync_for(self, acknowledging: bool) -> None:
        """fsync only commits that acknowledge records. A lease or a settlement lost to a power cut costs at most a
        repeat (at-least-once), and the next acknowledging commit's fsync carries the WAL frames before it too."""
        wanted = "FULL" if acknowledging and self._durability == "fsync" else "NORMAL"
        if wanted != self._synchronous:
            await self._conn.execute(f"PRAGMA synchronous={wanted}")
            self._synchronous = wanted

    async def _apply(
        self, group: list[_Op], new_credentials: dict[str, int], learned: list[tuple[str, str, str]]
    ) -> list[Any]:
        """Appends first, then settlements (they free keyed successors), then leases and calls; one transaction."""
        results: list[Any] = [None] * len(group)
        appends = [(i, op.append) for i, op in enumerate(group) if op.append is not None]
        if appends and not await self._admit([rows for _, rows in appends]):
            for i, _ in appends:
                results[i] = SpoolFull("the spool is full ([spool] max_bytes / max_rows); retry later")
            appends = []
        if appends:
            inserted = await self._insert([rows for _, rows in appends], new_credentials)
            for (i, _), ids in zip(appends, inserted, strict=True):
                results[i] = ids
        merged = Settlement()
        for op in group:
            if op.settle is not None:
                merged.merge(op.settle)
        await self._settle(merged)
        learned += merged.learned
        for i, op in enumerate(group):
            if op.lease is not None:
                results[i] = await self._lease(*op.lease)
            elif op.call is not None:
                results[i] = await op.call(self._conn)
        return results

    async def _admit(self, batches: list[Sequence[NewRow]]) -> bool:
        """Whether the appends fit the bounds, after dropping the oldest rows when `when_full = drop_oldest`."""
        if not self._bounds.bounded:
            return True
        rows_in = sum(len(rows) for rows in batches)
        bytes_in = sum(row_bytes(rows) for rows in batches)
        rows_now, bytes_now = await self._row_count(), await self._used_bytes()
        over_rows, over_bytes = excess(self._bounds, rows_now, bytes_now, rows_in, bytes_in)
        if over_rows <= 0 and over_bytes <= 0:
            return True
        if self._bounds.when_full == "reject":
            return False
        wanted = rows_to_drop(over_rows, over_bytes, bytes_now / max(rows_now, 1))
        # Drop only if that makes room: a request that cannot fit must not cost acknowledged rows for nothing.
        await self._conn.execute("SAVEPOINT make_room")
        dropped = list(await self._conn.execute_fetchall(sql.DROP_OLDEST, (wanted,)))
        if len(dropped) < wanted:
            await self._conn.execute("ROLLBACK TO make_room")
            await self._conn.execute("RELEASE make_room")
            return False
        await self._conn.execute("RELEASE make_room")
        self._dropped.update(sink for (sink,) in dropped)
        self._rows = rows_now - len(dropped)
        return True

    async def _row_count(self) -> int:
        # Kept in step with appends and settlements; recounted now and then (the CLI may add rows too).
        if self._rows is None or time.monotonic() - self._rows_synced > ROW_RECOUNT_INTERVAL:
            async with self._conn.execute("SELECT count(*) FROM rows") as cursor:
                found = await cursor.fetchone()
            self._rows = int(found[0]) if found else 0
            self._rows_synced = time.monotonic()
        return self._rows

    async def _used_bytes(self) -> int:
        """Live pages of the database: what the spool holds once free pages are given back. The WAL is kept small
        apart (checkpoints, journal_size_limit), so a queue that churns does not count its WAL twice."""
        async with self._conn.execute("PRAGMA page_count") as cursor:
            pages = int((await cursor.fetchone() or (0,))[0])
        async with self._conn.execute("PRAGMA freelist_count") as cursor:
            free = int((await cursor.fetchone() or (0,))[0])
        return (pages - free) * self._page_size

    async def _maintain(self) -> None:
        """Between transactions: give free pages back a slice at a time, so the file shrinks after a backlog drains,
        and cut a WAL a burst has grown back to its limit."""
        self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
        async with self._conn.execute("PRAGMA freelist_count") as cursor:
            free = int((await cursor.fetchone() or (0,))[0])
        if free >= VACUUM_MIN_PAGES:
            # executescript steps the pragma to its end; a plain execute would free a single page.
            await self._conn.executescript(f"PRAGMA incremental_vacuum({min(free, VACUUM_MAX_PAGES)});")
            await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _credential_id(self, sink: str, secret: str, new: dict[str, int]) -> int:
        digest = _digest(sink, secret)
        known = self._credential_ids.get(digest) or new.get(digest)
        if known is not None:
            return known
        await self._conn.execute("INSERT OR IGNORE INTO credentials (digest, value) VALUES (?, ?)", (digest, secret))
        async with self._conn.execute("SELECT id FROM credentials WHERE digest = ?", (digest,)) as cursor:
            found = await cursor.fetchone()
        assert found is not None
        new[digest] = int(found[0])
        return new[digest]

    async def _insert(self, batches: list[Sequence[NewRow]], new_credentials: dict[str, int]) -> list[list[int]]:
        async with self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'") as cursor:
            found = await cursor.fetchone()
        next_id = (int(found[0]) if found else 0) + 1
        now = time.time()
        queued: list[tuple[Any, ...]] = []
        dead: list[tuple[Any, ...]] = []
        scopes: list[tuple[str, str, str, float]] = []
        out: list[list[int]] = []
        for rows in batches:
            ids = list(range(next_id, next_id + len(rows)))
            next_id += len(rows)
            out.append(ids)
            for row_id, r in zip(ids, rows, strict=True):
                cred = (
                    None if r.credential is None else await self._credential_id(r.sink, r.credential, new_credentials)
                )
                scope = r.scope
                if r.kind == "update" and r.key is not None and scope is None:
                    scope = await self._entity_scope(r.sink, r.key)
                values = (
                    row_id,
                    r.sink,
                    r.key,
                    r.method,
                    r.path,
                    r.query,
                    r.body,
                    now,
                    0,
                    scope,
                    r.after,
                    r.kind,
                    cred,
                )
                died = await self._dead_create(r) if (r.kind == "update" and r.key) or r.after else None
                if died is None:
                    queued.append(values)
                else:
                    dead.append((*values, now, f"depends on row {died[0]} ({died[1]}), which was dead-lettered"))
                if r.kind == "create" and r.key is not None and scope is not None:
                    scopes.append((r.sink, r.key, scope, now))
                    self._scopes[(r.sink, r.key)] = scope
        await self._conn.executemany(sql.INSERT, queued)
        if self._rows is not None:
            self._rows += len(queued)
        if dead:
            await self._conn.executemany(sql.DEAD_ON_ARRIVAL, dead)
            await self._conn.execute(sql.BUMP_SEQUENCE, (next_id - 1,))
        if scopes:
            await self._conn.executemany(sql.REMEMBER_SCOPE, scopes)
        return out

    async def _entity_scope(self, sink: str, key: str) -> str | None:
        """The scope the entity's create named (an update of a Freeplay trace belongs to the trace's session)."""
        if (sink, key) not in self._scopes:
            query = "SELECT scope FROM entity_scopes WHERE sink = ? AND key = ?"
            async with self._conn.execute(query, (sink, key)) as cursor:
                found = await cursor.fetchone()
            if found is None:
                return None
            if len(self._scopes) > MAX_CACHED_SCOPES:
                self._scopes.clear()
            self._scopes[(sink, key)] = found[0]
        return self._scopes[(sink, key)]

    async def _dead_create(self, row: NewRow) -> tuple[int, str] | None:
        """The dead-lettered create this row depends on, if any: such a row could never succeed."""
        own = row.key if row.kind == "update" else None
        async with self._conn.execute(sql.DEAD_CREATE_FOR, (row.sink, own, row.after)) as cursor:
            found = await cursor.fetchone()
        return None if found is None else (int(found[0]), str(found[1]))

    async def _settle(self, s: Settlement) -> None:
        if s.learned:
            await self._conn.executemany(
                "INSERT OR REPLACE INTO id_map (sink, local, upstream) VALUES (?, ?, ?)", s.learned
            )
        if s.dead:
            await self._dead_letter(s.dead)
        if s.delivered:
            await self._conn.execute(f"DELETE FROM rows WHERE id IN ({sql.IDS})", (orjson.dumps(s.delivered),))
        if self._rows is not None:
            self._rows -= len(s.delivered) + len(s.dead)
        if s.retry:
            await self._conn.executemany(
                "UPDATE rows SET next_attempt_at = ?, last_error = ?, attempts = attempts + 1 WHERE id = ?",
                [(r.next_attempt_at, r.error, r.id) for r in s.retry],
            )
        ended = s.delivered + [d.id for d in s.dead] + [r.id for r in s.retry] + s.released
        if ended:
            await self._conn.execute(f"DELETE FROM leases WHERE id IN ({sql.IDS})", (orjson.dumps(ended),))

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Move rows to dead_letters; a dead create takes its updates and dependants along, transitively."""
        now = time.time()
        sent = orjson.dumps([d.id for d in dead])
        await self._conn.execute(f"UPDATE rows SET attempts = attempts + 1 WHERE id IN ({sql.IDS})", (sent,))
        while dead:
            ids = orjson.dumps([d.id for d in dead])
            await self._conn.executemany(sql.DEAD, [(now, d.status, d.response, d.reason, d.id) for d in dead])
            creates = await self._conn.execute_fetchall(sql.DEAD_CREATES, (ids,))
            await self._conn.execute(f"DELETE FROM rows WHERE id IN ({sql.IDS})", (ids,))
            dead = []
            for create_id, sink, key in creates:
                reason = f"depends on row {create_id} ({key}), which was dead-lettered"
                for (row_id,) in await self._conn.execute_fetchall(sql.DEPENDANTS, (sink, key, key, create_id)):
                    dead.append(DeadLetter(row_id, None, None, reason))
            dead = list({d.id: d for d in dead}.values())

    async def _lease(self, sink: str, limit: int, max_bytes: int) -> Lease:
        now = time.time()
        params = {"sink": sink, "now": now, "limit": limit, "max_bytes": max_bytes}
        rows = [SpoolRow(*row) for row in await self._conn.execute_fetchall(sql.LEASE, params)]
        if rows:
            until = now + self._lease_timeout
            await self._conn.executemany(
                "INSERT OR REPLACE INTO leases (id, until) VALUES (?, ?)", [(row.id, until) for row in rows]
            )
        next_due = None
        if len(rows) < limit:
            async with self._conn.execute(sql.NEXT_DUE, (sink, now)) as cursor:
                found = await cursor.fetchone()
            next_due = found[0] if found else None
        return Lease(rows, next_due)
