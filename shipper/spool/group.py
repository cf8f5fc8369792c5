"""One group commit, run start to end on the database thread: appends, settlements, leases and reads, one transaction.

Appends go first, then settlements (they free keyed successors), then leases and reads. Only commits that acknowledge
records are fsynced. The state kept here (the row count, drops since the last group, the append path's caches in
inserts.py) belongs to the database thread; the event loop reads it only between groups.
Not responsible for queueing, futures or callbacks (store.py), nor for what an append stores (inserts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.core.leasing import take
from shipper.core.rows import DeadLetter, Lease, Settlement, SpoolRow
from shipper.errors import DiskFull, LargerThanSpool, SpoolError, SpoolFull
from shipper.records import NewRow
from shipper.spool import sql
from shipper.spool.bounds import Bounds, excess, row_bytes, rows_to_drop
from shipper.spool.bundles import unbundle
from shipper.spool.burial import bury
from shipper.spool.inserts import Inserts, one
from shipper.spool.settle import settle
from shipper.spool.turns import Turns

MAINTENANCE_INTERVAL = 5.0
VACUUM_MIN_PAGES = 256  # 1 MiB of free pages before it is worth giving them back
VACUUM_MAX_PAGES = 4096  # at most 16 MiB per pass, so one pass never stalls the writer for long

Read = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class Op:
    """One caller's request to the writer; exactly one of append, bury, settle, lease and read is set (none: a
    ping)."""

    future: asyncio.Future[Any]
    append: Sequence[NewRow] | None = None
    bury: Sequence[tuple[SpoolRow, DeadLetter]] | None = None
    settle: Settlement | None = None
    lease: tuple[str, int, int, bool] | None = None
    read: Read | None = None


@dataclass(slots=True)
class Outcome:
    """What a committed group hands back to the event loop: a result per op and what the loop must publish."""

    results: list[Any]
    dropped: Counter[str] = field(default_factory=Counter)
    learned: list[tuple[str, str, str]] = field(default_factory=list)


class GroupWriter:
    """Applies groups of ops in single transactions; lives on the database thread."""

    def __init__(
        self, bounds: Bounds, page_size: int, durability: str, lease_timeout: float, owner: str, turns: Turns
    ) -> None:
        self._bounds = bounds
        self._owner = owner  # written into each lease this writer takes
        self._turns = turns
        self._lease_timeout = lease_timeout
        self._page_size = page_size
        self._durability = durability
        self._synchronous = "FULL" if durability == "fsync" else "NORMAL"
        self._next_maintenance = 0.0
        self._inserts = Inserts()

    def commit(self, conn: sqlite3.Connection, group: list[Op]) -> Outcome:
        """Raises with the transaction rolled back (see `environmental` for what the error says)."""
        outcome = Outcome([None] * len(group))
        try:
            self._sync_for(conn, any(op.append or op.bury for op in group))
            self._turns.take()
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._apply(conn, group, outcome)
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._turns.give()
        except BaseException:
            self._inserts.rolled_back()
            raise
        self._inserts.committed()
        if time.monotonic() >= self._next_maintenance:
            with contextlib.suppress(sqlite3.Error):  # housekeeping: a failure here costs only disk space
                self._maintain(conn)
        return outcome

    def close(self) -> None:
        self._turns.close()

    def _sync_for(self, conn: sqlite3.Connection, acknowledging: bool) -> None:
        """fsync only commits that acknowledge records. A lease or a settlement lost to a power cut costs at most a
        repeat (at-least-once), and the next acknowledging commit's fsync carries the WAL frames before it too."""
        wanted = "FULL" if acknowledging and self._durability == "fsync" else "NORMAL"
        if wanted != self._synchronous:
            conn.execute(f"PRAGMA synchronous={wanted}")
            self._synchronous = wanted

    def _apply(self, conn: sqlite3.Connection, group: list[Op], out: Outcome) -> None:
        appends: list[tuple[int, Sequence[NewRow]]] = []
        pending = (0, 0)  # rows and bytes admitted in this group, not inserted yet
        for i, op in enumerate(group):
            if op.append is None:
                continue
            size = row_bytes(op.append) if self._bounds.bounded else 0
            records = sum(row.records for row in op.append)
            refusal = self._admit(conn, records, size, pending, out.dropped)
            if refusal is None:
                appends.append((i, op.append))
                pending = (pending[0] + records, pending[1] + size)
            else:
                out.results[i] = refusal
        counted = 0  # rows in minus rows out, for the file's row count (drops are counted as they happen)
        if appends:
            inserted, queued = self._inserts.insert(conn, [rows for _, rows in appends])
            counted += queued
            for (i, _), ids in zip(appends, inserted, strict=True):
                out.results[i] = ids
        for i, op in enumerate(group):
            if op.bury is not None:
                out.results[i] = bury(conn, op.bury)
        merged = Settlement()
        for op in group:
            if op.settle is not None:
                merged.merge(op.settle)
        counted -= settle(conn, merged, self._owner)
        if counted:
            conn.execute(sql.COUNT_ROWS, (counted,))
        out.learned = merged.learned
        for i, op in enumerate(group):
            if op.lease is not None:
                out.results[i] = self._lease(conn, *op.lease)
            elif op.read is not None:
                out.results[i] = op.read(conn)

    def _admit(
        self, conn: sqlite3.Connection, rows_in: int, bytes_in: int, pending: tuple[int, int], dropped: Counter[str]
    ) -> SpoolError | None:
        """Whether one request fits the bounds beside what the group already took, after dropping the oldest rows
        when `when_full = drop_oldest`; each request is judged alone, so one too many does not refuse the others."""
        bounds = self._bounds
        if not bounds.bounded:
            return None
        if (bounds.max_rows is not None and rows_in > bounds.max_rows) or (
            bounds.max_bytes is not None and bytes_in > bounds.max_bytes
        ):
            return LargerThanSpool(
                f"this request ({rows_in} records, ~{bytes_in} bytes) is larger than the whole spool bound"
                " ([spool] max_rows / max_bytes); send it in smaller requests"
            )
        rows_now, bytes_now = self._row_count(conn) + pending[0], self._used_bytes(conn) + pending[1]
        over_rows, over_bytes = excess(bounds, rows_now, bytes_now, rows_in, bytes_in)
        if over_rows <= 0 and over_bytes <= 0:
            return None
        full = SpoolFull("the spool is full ([spool] max_bytes / max_rows); retry later")
        if bounds.when_full == "reject":
            return full
        wanted = rows_to_drop(over_rows, over_bytes, bytes_now / max(rows_now, 1))
        # Drop only if that makes room: a request that cannot fit must not cost acknowledged rows for nothing.
        oldest = self._oldest(conn, wanted)
        if sum(records for _, records in oldest) < wanted:
            return full
        # Whole rows go: the last one, a bundle, may take a few records more than wanted along.
        gone = conn.execute(sql.DROP, (orjson.dumps([row_id for row_id, _ in oldest]),)).fetchall()
        for sink, records in gone:
            dropped[sink] += records
        conn.execute(sql.COUNT_ROWS, (-sum(records for _, records in gone),))
        return None

    @staticmethod
    def _oldest(conn: sqlite3.Connection, wanted: int) -> list[tuple[int, int]]:
        """The oldest rows no one sends, as (id, records), until they hold `wanted` records (or there are no more)."""
        chosen: list[tuple[int, int]] = []
        held = 0
        for row_id, records in conn.execute(sql.OLDEST, (wanted,)):
            chosen.append((row_id, records))
            held += records
            if held >= wanted:
                break
        return chosen

    @staticmethod
    def _row_count(conn: sqlite3.Connection) -> int:
        """Kept in the file by every writer in its own transaction (schema 7): right whichever process wrote last."""
        return int(one(conn, sql.ROW_COUNT) or 0)

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        """Live pages of the database: what the spool holds once free pages are given back. The WAL is kept small
        apart (checkpoints, journal_size_limit), so a queue that churns does not count its WAL twice."""
        pages = int(one(conn, "PRAGMA page_count") or 0)
        free = int(one(conn, "PRAGMA freelist_count") or 0)
        return (pages - free) * self._page_size

    def _maintain(self, conn: sqlite3.Connection) -> None:
        """Between transactions: give free pages back a slice at a time, so the file shrinks after a backlog drains,
        and cut a WAL a burst has grown back to its limit."""
        self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
        free = int(one(conn, "PRAGMA freelist_count") or 0)
        if free >= VACUUM_MIN_PAGES:
            # executescript steps the pragma to its end; a plain execute would free a single page.
            conn.executescript(f"PRAGMA incremental_vacuum({min(free, VACUUM_MAX_PAGES)});")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _lease(self, conn: sqlite3.Connection, sink: str, limit: int, max_bytes: int, bundles: bool) -> Lease:
        """At most `limit` records and about `max_bytes`, at least one row. A bundle the sender cannot take whole
        (`bundles` false, or larger than this batch may be) is split into its records first (bundles.py)."""
        now = time.time()
        rows, too_big = take(self._eligible(conn, sink, now, limit), limit, max_bytes, bundles)
        if too_big and unbundle(conn, too_big):
            rows, _ = take(self._eligible(conn, sink, now, limit), limit, max_bytes, bundles, split=False)
        if rows:
            until = now + self._lease_timeout
            conn.executemany(sql.TAKE_LEASE, [(row.id, until, self._owner) for row in rows])
        next_due = one(conn, sql.NEXT_DUE, (sink, now)) if len(rows) < limit else None
        return Lease(rows, next_due)

    @staticmethod
    def _eligible(conn: sqlite3.Connection, sink: str, now: float, limit: int) -> Iterator[SpoolRow]:
        """The rows the ordering rule lets leave now, in id order, streamed (a lease reads only what it takes)."""
        for found in conn.execute(sql.LEASE, {"sink": sink, "now": now, "limit": limit}):
            yield SpoolRow._make(found)


def environmental(exc: BaseException) -> bool:
    """A failure of the spool itself (disk full, I/O, a lock, a damaged file), as opposed to what one op's content
    causes (a value SQLite cannot bind, a bug): these fail a whole group, the others only the op at fault."""
    return (
        isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError | OSError)
        or type(exc) is sqlite3.DatabaseError
    )


def failure(exc: BaseException) -> SpoolError:
    """A full disk is the operator's to fix and passes by itself (507); anything else is the spool's (503). Told
    apart by error code (SQLITE_FULL, ENOSPC), never by the message's wording."""
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    ):
        return DiskFull(f"no space left for the spool: {exc}")
    return SpoolError(f"spool write failed: {exc}")
