"""`shipper spool salvage FILE`: put every readable row of a damaged spool back into the live one.

Reads the old file through the spool's reader, which walks it in small id ranges so that one damaged page costs
only the rows on it, skipping past stretches that cannot be read. Queued rows are re-queued (new ids, original
order, attempts reset), dead letters are kept as dead letters, and stored API keys and learnt ids are carried over.
Safe while the daemon runs: writes go in short transactions the daemon's writer waits out. Not responsible for
detecting damage (files.py does that at start).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipper.errors import SpoolError
from shipper.spool import sql
from shipper.spool.dlq import connect_writable
from shipper.spool.files import prepare_file
from shipper.spool.reader import SpoolReader

CHUNK = 256
# What is read of an old row: its id (to walk the table), then what a re-queued row is given.
ROW_FIELDS = ("id", *sql.REQUEUED)
# Where each read holds its credential id, renumbered for the new file.
ROW_CREDENTIAL, DEAD_CREDENTIAL = ROW_FIELDS.index("credential_id"), sql.DEAD_LETTER.index("credential_id")
# Where a re-queued row (REQUEUED) holds how many records it carries: the file's record count adds them.
RECORDS, DEAD_RECORDS = sql.REQUEUED.index("records"), sql.DEAD_LETTER.index("records")


@dataclass(slots=True)
class SalvageReport:
    requeued: int = 0
    dead_letters: int = 0
    unreadable_stretches: int = 0

    def skipped(self) -> None:
        self.unreadable_stretches += 1


def _old_credentials(old: SpoolReader, new: sqlite3.Connection) -> dict[int, int]:
    mapping: dict[int, int] = {}
    try:
        found = old.credentials()
    except SpoolError:
        return mapping
    for credential in found:
        new.execute(sql.STORE_CREDENTIAL, (credential.digest, credential.value))
        mapping[credential.id] = new.execute(sql.CREDENTIAL_ID, (credential.digest,)).fetchone()[0]
    return mapping


def _copy_small_tables(old: SpoolReader, new: sqlite3.Connection) -> None:
    for table, columns, read in (
        ("id_map", sql.LEARNT_ID, old.learnt_ids),
        ("entity_scopes", sql.ENTITY_SCOPE, old.entity_scopes),
    ):
        try:
            found: list[tuple[Any, ...]] = list(read())
        except SpoolError:
            continue
        new.executemany(f"INSERT OR IGNORE INTO {table} ({sql.names(columns)}) VALUES ({sql.marks(columns)})", found)


def _reserve_ids(new: sqlite3.Connection, count: int) -> int:
    """Take `count` ids from the rows sequence for dead letters (ids are shared by both tables)."""
    found = new.execute(sql.LAST_ID).fetchone()
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
    old = SpoolReader.damaged(old_path)
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


def _flush(new: sqlite3.Connection, insert: str, chunk: list[tuple[Any, ...]]) -> None:
    """Queue a chunk of rows, and count them in the file's row count as every writer does."""
    new.execute("BEGIN IMMEDIATE")
    for row in chunk:
        cursor = new.execute(insert, row)
        if row[RECORDS] > 1:
            new.execute(sql.RESERVE_BUNDLE_IDS, (cursor.lastrowid,))
    new.execute(sql.COUNT_ROWS, (sum(row[RECORDS] for row in chunk),))
    new.execute("COMMIT")


def _requeue(
    old: SpoolReader,
    new: sqlite3.Connection,
    credentials: dict[int, int],
    report: SalvageReport,
    progress: Callable[[str, int], None] | None,
) -> None:
    insert = f"INSERT INTO rows ({sql.names(sql.REQUEUED)}) VALUES ({sql.marks(sql.REQUEUED)})"
    chunk: list[tuple[Any, ...]] = []
    for row in old.readable("rows", ROW_FIELDS, report.skipped):
        chunk.append(_rekeyed(row, ROW_CREDENTIAL, credentials)[1:])
        if len(chunk) >= CHUNK:
            _flush(new, insert, chunk)
            report.requeued += len(chunk)
            chunk = []
            if progress is not None:
                progress("requeued", report.requeued)
    if chunk:
        _flush(new, insert, chunk)
        report.requeued += len(chunk)


def _rekeyed(row: tuple[Any, ...], at: int, credentials: dict[int, int]) -> tuple[Any, ...]:
    """The row with its credential id (at index `at`) as the new spool numbers it."""
    old = row[at]
    return (*row[:at], None if old is None else credentials.get(old), *row[at + 1 :])


def _keep_dead(
    old: SpoolReader,
    new: sqlite3.Connection,
    credentials: dict[int, int],
    report: SalvageReport,
    progress: Callable[[str, int], None] | None,
) -> None:
    insert = f"INSERT INTO dead_letters ({sql.names(sql.DEAD_LETTER)}) VALUES ({sql.marks(sql.DEAD_LETTER)})"
    rows = list(old.readable("dead_letters", sql.DEAD_LETTER, report.skipped))
    if not rows:
        return
    new.execute("BEGIN IMMEDIATE")
    next_id = _reserve_ids(new, sum(row[DEAD_RECORDS] for row in rows))
    values = []
    for row in rows:  # a dead bundle takes an id for each of its records, as in the queue
        values.append((next_id, *_rekeyed(row, DEAD_CREDENTIAL, credentials)[1:]))
        next_id += row[DEAD_RECORDS]
    new.executemany(insert, values)
    new.execute("COMMIT")
    report.dead_letters = len(rows)
    if progress is not None:
        progress("dead letters kept", report.dead_letters)
