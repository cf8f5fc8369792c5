"""`shipper spool salvage FILE`: put every readable row of a damaged spool back into the live one.

Reads the old file in small id ranges so that one damaged page costs only the rows on it, skipping past stretches
that cannot be read. Queued rows are re-queued (new ids, original order, attempts reset), dead letters are kept as
dead letters, and stored API keys and learnt ids are carried over. Safe while the daemon runs: writes go in short
transactions the daemon's writer waits out. Not responsible for detecting damage (files.py does that at start).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipper.errors import SpoolError
from shipper.spool import sql
from shipper.spool.dlq import connect_writable
from shipper.spool.files import prepare_file

CHUNK = 256
# What is read of an old row: its id (to walk the table), the request it holds, when it was acknowledged.
ROW_FIELDS = ("id", *sql.REQUEST, "created_at")
DEAD_FIELDS = (*ROW_FIELDS, "attempts", *sql.OUTCOME)
CREDENTIAL = ROW_FIELDS.index("credential_id")
# When even the table's largest id cannot be read, probe this far at most.
MAX_SKIP = 1 << 20


@dataclass(slots=True)
class SalvageReport:
    requeued: int = 0
    dead_letters: int = 0
    unreadable_stretches: int = 0


def _readable(conn: sqlite3.Connection, table: str, fields: str, report: SalvageReport) -> Iterator[tuple[Any, ...]]:
    """Rows in id order. A range that fails to read is retried one id at a time (a lookup by id touches only that
    row's page), so a damaged page costs only the rows on it; past the last known id, stop."""
    try:
        top = conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = MAX_SKIP
    last = 0
    while last < top:
        try:
            rows = conn.execute(
                f"SELECT {fields} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, CHUNK)
            ).fetchall()
        except sqlite3.DatabaseError:
            report.unreadable_stretches += 1
            yield from _one_by_one(conn, table, fields, last + 1, last + CHUNK)
            last += CHUNK
            continue
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def _one_by_one(conn: sqlite3.Connection, table: str, fields: str, first: int, end: int) -> Iterator[tuple[Any, ...]]:
    for row_id in range(first, end + 1):
        try:
            found = conn.execute(f"SELECT {fields} FROM {table} WHERE id = ?", (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if found is not None:
            yield found


def _old_credentials(old: sqlite3.Connection, new: sqlite3.Connection) -> dict[int, int]:
    mapping: dict[int, int] = {}
    try:
        found = old.execute("SELECT id, digest, value FROM credentials").fetchall()
    except sqlite3.DatabaseError:
        return mapping
    for old_id, digest, value in found:
        new.execute("INSERT OR IGNORE INTO credentials (digest, value) VALUES (?, ?)", (digest, value))
        mapping[old_id] = new.execute("SELECT id FROM credentials WHERE digest = ?", (digest,)).fetchone()[0]
    return mapping


def _copy_small_tables(old: sqlite3.Connection, new: sqlite3.Connection) -> None:
    for table, columns in (("id_map", "sink, local, upstream"), ("entity_scopes", "sink, key, scope, created_at")):
        try:
            found = old.execute(f"SELECT {columns} FROM {table}").fetchall()
        except sqlite3.DatabaseError:
            continue
        marks = ", ".join("?" for _ in columns.split(","))
        new.executemany(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})", found)


def _reserve_ids(new: sqlite3.Connection, count: int) -> int:
    """Take `count` ids from the rows sequence for dead letters (ids are shared by both tables)."""
    found = new.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rows'").fetchone()
    start = (found[0] if found else 0) + 1
    if found:
        new.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'rows'", (start + count - 1,))
    else:
        new.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('rows', ?)", (start + count - 1,))
    return int(start)


def salvage(old_path: Path, spool_path: Path, progress: Callable[[str, int], None] | None = None) -> SalvageReport:
    if not old_path.exists():
        raise SpoolError(f"no file at {old_path}")
    report = SalvageReport()
    try:
        old = sqlite3.connect(old_path, isolation_level=None)
        old.execute("PRAGMA query_only=1")
        tables = {name for (name,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read {old_path} as a spool: {exc}") from exc
    if "rows" not in tables:
        old.close()
        raise SpoolError(f"{old_path} is not a shipper spool (it has no rows table)")
    if not spool_path.exists():
        prepare_file(spool_path, "fsync")
    new = connect_writable(spool_path)
    try:
        new.execute("BEGIN IMMEDIATE")
        credentials = _old_credentials(old, new)
        _copy_small_tables(old, new)
        new.execute("COMMIT")
        _requeue(old, new, credentials, report, progress)
        _keep_dead(old, new, credentials, report, progress)
    except sqlite3.Error as exc:
        raise SpoolError(f"salvage stopped after an error writing {spool_path}: {exc}") from exc
    finally:
        old.close()
        new.close()
    return report


def _flush(new: sqlite3.Connection, sql: str, chunk: list[tuple[Any, ...]]) -> None:
    new.execute("BEGIN IMMEDIATE")
    new.executemany(sql, chunk)
    new.execute("COMMIT")


def _requeue(
    old: sqlite3.Connection,
    new: sqlite3.Connection,
    credentials: dict[int, int],
    report: SalvageReport,
    progress: Callable[[str, int], None] | None,
) -> None:
    insert = f"INSERT INTO rows ({sql.names(ROW_FIELDS[1:])}) VALUES ({sql.marks(ROW_FIELDS[1:])})"
    chunk: list[tuple[Any, ...]] = []
    for row in _readable(old, "rows", sql.names(ROW_FIELDS), report):
        chunk.append(_rekeyed(row, credentials)[1:])
        if len(chunk) >= CHUNK:
            _flush(new, insert, chunk)
            report.requeued += len(chunk)
            chunk = []
            if progress is not None:
                progress("requeued", report.requeued)
    if chunk:
        _flush(new, insert, chunk)
        report.requeued += len(chunk)


def _rekeyed(row: tuple[Any, ...], credentials: dict[int, int]) -> tuple[Any, ...]:
    """The row with its credential id as the new spool numbers it."""
    old = row[CREDENTIAL]
    return (*row[:CREDENTIAL], None if old is None else credentials.get(old), *row[CREDENTIAL + 1 :])


def _keep_dead(
    old: sqlite3.Connection,
    new: sqlite3.Connection,
    credentials: dict[int, int],
    report: SalvageReport,
    progress: Callable[[str, int], None] | None,
) -> None:
    insert = f"INSERT INTO dead_letters ({sql.names(DEAD_FIELDS)}) VALUES ({sql.marks(DEAD_FIELDS)})"
    rows = list(_readable(old, "dead_letters", sql.names(DEAD_FIELDS), report))
    if not rows:
        return
    new.execute("BEGIN IMMEDIATE")
    first = _reserve_ids(new, len(rows))
    values = [(first + n, *_rekeyed(row, credentials)[1:]) for n, row in enumerate(rows)]
    new.executemany(insert, values)
    new.execute("COMMIT")
    report.dead_letters = len(rows)
    if progress is not None:
        progress("dead letters kept", report.dead_letters)
