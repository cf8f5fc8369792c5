"""Dead-letter operations for the CLI: list, show, replay and purge, safe while the daemon runs.

They open the spool file directly (WAL lets them read beside the daemon; writes take SQLite's lock briefly, in
chunks, and the daemon's writer waits its turn). A replayed row goes back to the queue with a new id, in its
original order, with attempts reset; the daemon notices it within a second. API keys are never read here; a replay
may be given a new one (`--api-key-env`), stored like the keys apps send, to replace the one a remote refused.
Reads go through the spool's reader (reader.py, which also says how a dead letter is shown); this module writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from shipper.errors import SpoolError
from shipper.spool import sql
from shipper.spool.inserts import credential_digest
from shipper.spool.reader import DeadRow, read, require_version

CHUNK = 500
# The request a dead letter holds, put back under a new id (REQUEUED is the request, then when: now); a replay may
# give it another key (coalesce).
_REQUEUE = f"""
INSERT INTO rows ({sql.names(sql.REQUEUED)})
SELECT {sql.names(sql.REQUEST).replace("credential_id", "coalesce(?, credential_id)")}, ?
FROM dead_letters WHERE id = ?
"""


def connect_writable(path: Path) -> sqlite3.Connection:
    """The spool for a short write beside the running daemon; refuses a file of another schema version."""
    if not path.exists():
        raise SpoolError(f"no spool at {path}")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool {path}: {exc}") from exc
    try:
        require_version(version, path)
    except SpoolError:
        conn.close()
        raise
    return conn


def check_sink(path: Path, sink: str, configured: Collection[str]) -> None:
    """A --sink that names no configured sink and nothing in the spool is a typo, not an empty answer."""
    if sink not in configured and not read(path, lambda spool: spool.holds_sink(sink), current=True):
        raise SpoolError(f"no sink {sink!r} in the config ({', '.join(configured)}) or in the spool {path}")


def list_dead(path: Path, sink: str | None = None, since: float | None = None) -> list[DeadRow]:
    return read(path, lambda spool: spool.dead_letters(sink, since), current=True)


def show_dead(path: Path, row_id: int) -> DeadRow:
    found = read(path, lambda spool: spool.dead_letter(row_id), current=True)
    if found is None:
        raise SpoolError(f"no dead letter with id {row_id}")
    return found


# Dead letters put back leave their table, saying how many records each carried (the file's record count adds them).
_FORGET = f"DELETE FROM dead_letters WHERE id IN ({sql.IDS}) RETURNING records"


def _requeue(conn: sqlite3.Connection, now: float, row_id: int, credential_id: int | None) -> int:
    cursor = conn.execute(_REQUEUE, (credential_id, now, row_id))
    if cursor.rowcount != 1 or cursor.lastrowid is None:  # then the chunk's transaction is never committed
        raise SpoolError(f"dead letter {row_id} could not be put back in the queue")
    conn.execute(sql.RESERVE_BUNDLE_IDS, (cursor.lastrowid,))
    return cursor.lastrowid


def replay(
    path: Path,
    ids: Sequence[int] = (),
    sink: str | None = None,
    since: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    api_key: str | None = None,
) -> list[tuple[int, int]]:
    """Move matching dead letters back into the queue, oldest first; returns (dead letter id, new row id) pairs.
    With `api_key`, the replayed rows travel with that key instead of the one they carried (a vendor sink's
    `override_key` still wins)."""
    chosen = read(path, lambda spool: spool.dead_letter_sinks(sink, since, ids), current=True)
    missing = sorted(set(ids) - set(chosen))
    if missing:
        raise SpoolError(
            f"no dead letter with id {', '.join(map(str, missing))} (matching the filters); nothing replayed"
        )
    ordered = list(chosen)
    conn = connect_writable(path)
    try:
        done: list[tuple[int, int]] = []
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start : start + CHUNK]
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            keys = _credentials(conn, {row_id: chosen[row_id] for row_id in chunk}, api_key) if api_key else {}
            moved = [(row_id, _requeue(conn, now, row_id, keys.get(row_id))) for row_id in chunk]
            gone = conn.execute(_FORGET, (orjson.dumps(chunk),))
            records = sum(n for (n,) in gone)
            conn.execute(sql.COUNT_ROWS, (records,))  # the file's record count, as every writer keeps it
            conn.execute("COMMIT")
            done += moved
            if progress is not None:
                progress(len(done), len(ordered))
        return done
    except sqlite3.Error as exc:
        raise SpoolError(f"replay stopped after an error: {exc}") from exc
    finally:
        conn.close()


def _credentials(conn: sqlite3.Connection, sinks: dict[int, str], api_key: str) -> dict[int, int]:
    """The credential id of `api_key` for each dead letter (id -> sink), stored once per sink as ingest stores it."""
    by_sink: dict[str, int] = {}
    for sink in dict.fromkeys(sinks.values()):
        digest = credential_digest(sink, api_key)
        conn.execute(sql.STORE_CREDENTIAL, (digest, api_key))
        by_sink[sink] = conn.execute(sql.CREDENTIAL_ID, (digest,)).fetchone()[0]
    return {row_id: by_sink[sink] for row_id, sink in sinks.items()}


def purge(path: Path, older_than: float | None = None, sink: str | None = None) -> int:
    """Delete dead letters that failed more than `older_than` seconds ago (all of them when None)."""
    conn = connect_writable(path)
    try:
        clauses: list[str] = []
        params: list[Any] = []
        if older_than is not None:
            clauses.append("failed_at < ?")
            params.append(time.time() - older_than)
        if sink is not None:
            clauses.append("sink = ?")
            params.append(sink)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return conn.execute(f"DELETE FROM dead_letters{where}", params).rowcount
    except sqlite3.Error as exc:
        raise SpoolError(f"purge failed: {exc}") from exc
    finally:
        conn.close()


def parse_duration(text: str) -> float:
    """`90`, `30s`, `15m`, `2h`, `7d` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise SpoolError(f"cannot read {text!r} as a duration (e.g. 90, 30s, 15m, 2h, 7d)") from None
    if value < 0:
        raise SpoolError(f"a duration cannot be negative: {text!r}")
    return value


def parse_since(text: str, now: float | None = None) -> float:
    """An ISO 8601 time, or a duration meaning that long ago."""

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return (time.time() if now is None else now) - parse_duration(text)
