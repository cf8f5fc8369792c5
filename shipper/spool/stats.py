"""Read-only views of a spool file, safe while the daemon runs (WAL readers never block the writer).

Used by `shipper status` from another process. Not responsible for anything that writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipper.errors import SpoolError


@dataclass(frozen=True, slots=True)
class SinkStats:
    sink: str
    queued: int
    leased: int
    retrying: int
    dead_lettered: int
    oldest_age: float | None  # seconds since the oldest queued row was acknowledged


@dataclass(frozen=True, slots=True)
class SpoolStats:
    path: str
    file_bytes: int
    sinks: list[SinkStats]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_bytes(path: Path) -> int:
    """The database plus its WAL: what the spool really occupies."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise SpoolError(f"no spool at {path} (has the daemon run with this config?)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("PRAGMA busy_timeout=5000")
        return conn
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read spool {path}: {exc}") from exc


def queued_by_sink(path: Path) -> dict[str, int]:
    """Rows waiting per sink, and nothing else: cheap enough for the daemon's stop line on a large backlog."""
    conn = connect_readonly(path)
    try:
        return dict(conn.execute("SELECT sink, count(*) FROM rows GROUP BY sink").fetchall())
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read spool {path}: {exc}") from exc
    finally:
        conn.close()


def read_stats(path: Path, sinks: list[str], now: float | None = None) -> SpoolStats:
    """Per-sink counts for every configured sink and any sink still holding rows."""
    now = time.time() if now is None else now
    conn = connect_readonly(path)
    try:
        queue = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT sink, count(*), sum(EXISTS (SELECT 1 FROM leases AS l WHERE l.id = r.id AND l.until > ?)),"
                " sum(next_attempt_at > ?), min(created_at) FROM rows AS r GROUP BY sink",
                (now, now),
            )
        }
        dead = dict(conn.execute("SELECT sink, count(*) FROM dead_letters GROUP BY sink").fetchall())
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read spool {path}: {exc}") from exc
    finally:
        conn.close()
    names = sorted(set(sinks) | set(queue) | set(dead))
    result = []
    for name in names:
        queued, leased, retrying, oldest = queue.get(name, (0, 0, 0, None))
        result.append(
            SinkStats(
                sink=name,
                queued=int(queued),
                leased=int(leased or 0),
                retrying=int(retrying or 0),
                dead_lettered=int(dead.get(name, 0)),
                oldest_age=None if oldest is None else max(0.0, now - oldest),
            )
        )
    return SpoolStats(path=str(path), file_bytes=file_bytes(path), sinks=result)
