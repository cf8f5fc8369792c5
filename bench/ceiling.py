"""The ceiling: raw SQLite group commit, inserting 1 KB rows and deleting them, with no daemon around it.

A plain sqlite3 loop on the same disk as the daemon's spool, in WAL mode with the spool's layout (a queue table with
an index by sink and a partial index by key): each transaction inserts a group of rows and deletes the group the
previous transaction inserted, so the table stays small, as a healthy spool does, and every row costs one insert and
one delete. Whatever shipper adds (HTTP, validation, leasing, forwarding) can only come in under this figure.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, key TEXT, method TEXT NOT NULL, path TEXT NOT NULL,
    query BLOB, body BLOB NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0, last_error TEXT);
CREATE INDEX rows_by_sink ON rows (sink, id);
CREATE INDEX rows_by_key ON rows (sink, key, id) WHERE key IS NOT NULL;
"""
_INSERT = "INSERT INTO rows (sink, key, method, path, body, created_at) VALUES ('remote', ?, 'POST', '/x', ?, ?)"


def measure(scratch: Path, synchronous: str, group: int, seconds: float, bodies: list[bytes]) -> dict[str, Any]:
    """Rows per second through insert + delete, `group` rows per commit, and the commit latency percentiles."""
    with tempfile.TemporaryDirectory(prefix="ceiling-", dir=scratch) as tmp:
        conn = sqlite3.connect(Path(tmp) / "ceiling.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint=1000")
            conn.executescript(_SCHEMA)
            return _loop(conn, group, seconds, bodies)
        finally:
            conn.close()


def _loop(conn: sqlite3.Connection, group: int, seconds: float, bodies: list[bytes]) -> dict[str, Any]:
    seq, previous_last, rows, commits = 0, 0, 0, []
    start = time.perf_counter()
    deadline = start + seconds
    while (began := time.perf_counter()) < deadline:
        params = [(f"cmpl-{seq + i:010d}", bodies[(seq + i) % len(bodies)], time.time()) for i in range(group)]
        seq += group
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, params)
        conn.execute("DELETE FROM rows WHERE id <= ?", (previous_last,))
        conn.execute("COMMIT")
        previous_last = seq
        rows += group
        commits.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    commits.sort()
    return {
        "synchronous": synchronous_name(conn),
        "group": group,
        "rows_per_s": rows / elapsed,
        "commits_per_s": len(commits) / elapsed,
        "commit_p50_ms": statistics.median(commits) * 1000,
        "commit_p99_ms": commits[int(len(commits) * 0.99)] * 1000,
    }


def synchronous_name(conn: sqlite3.Connection) -> str:
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
