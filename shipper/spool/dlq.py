"""Dead-letter operations for the CLI: list, show, replay and purge, safe while the daemon runs.

They open the spool file directly (WAL lets them read beside the daemon; writes take SQLite's lock briefly, in
chunks, and the daemon's writer waits its turn). A replayed row goes back to the queue with a new id, in its
original order, with attempts reset; the daemon notices it within a second. API keys are never read here; a replay
may be given a new one (`--api-key-env`), stored like the keys apps send, to replace the one a remote refused.
What a dead letter says is shown as people read it: times in RFC 3339 UTC, the reason without the remote's answer
repeated (`response` holds that).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from shipper.errors import SpoolError
from shipper.logs import rfc3339
from shipper.spool import sql
from shipper.spool.inserts import credential_digest
from shipper.spool.schema import SCHEMA_VERSION

CHUNK = 500
# The request a dead letter holds, put back under a new id; a replay may give it another key (coalesce).
_REQUEUE = f"""
INSERT INTO rows ({sql.names(sql.REQUEST)}, created_at)
SELECT {sql.names(sql.REQUEST).replace("credential_id", "coalesce(?, credential_id)")}, ?
FROM dead_letters WHERE id = ?
"""


@dataclass(frozen=True, slots=True)
class DeadRow:
    id: int
    sink: str
    key: str | None
    method: str
    path: str
    query: Any
    body: Any
    created_at: float
    attempts: int
    failed_at: float
    status: int | None
    response: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """As `dlq show` and `dlq list --json` print it."""
        shown = asdict(self)
        shown["created_at"], shown["failed_at"] = rfc3339(self.created_at), rfc3339(self.failed_at)
        shown["reason"] = reason_alone(self.reason, self.response)
        return shown


_FIELDS = sql.names(tuple(field.name for field in fields(DeadRow)))


def reason_alone(reason: str, response: str | None) -> str:
    """The reason without the remote's answer that the forwarder appends to it (`rejected by the remote: HTTP 400:
    ...`, `gave up (...): ...`): `response` already holds that answer, and both were cut to the same length."""
    start = reason.find(": ")
    while response and start != -1:
        if response.startswith(reason[start + 2 :]):
            return reason[:start]
        start = reason.find(": ", start + 2)
    return reason


def connect_writable(path: Path) -> sqlite3.Connection:
    """The spool for a short write beside the running daemon; refuses a file of another schema version."""
    if not path.exists():
        raise SpoolError(f"no spool at {path}")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool {path}: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise SpoolError(
            f"spool {path} has schema {version}; this shipper reads {SCHEMA_VERSION} (start the daemon once)"
        )
    return conn


def check_sink(path: Path, sink: str, configured: Collection[str]) -> None:
    """A --sink that names no configured sink and nothing in the spool is a typo, not an empty answer."""
    if sink in configured:
        return
    conn = connect_writable(path)
    try:
        found = conn.execute(
            "SELECT 1 FROM dead_letters WHERE sink = ? UNION SELECT 1 FROM rows WHERE sink = ?", (sink, sink)
        )
        if found.fetchone() is None:
            raise SpoolError(f"no sink {sink!r} in the config ({', '.join(configured)}) or in the spool {path}")
    finally:
        conn.close()


def _where(sink: str | None, since: float | None, ids: Sequence[int] = ()) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if sink is not None:
        clauses.append("sink = ?")
        params.append(sink)
    if since is not None:
        clauses.append("failed_at >= ?")
        params.append(since)
    if ids:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(orjson.dumps(list(ids)).decode())
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _row(values: Sequence[Any]) -> DeadRow:
    fields = list(values)
    fields[5] = orjson.loads(fields[5]) if fields[5] else None
    fields[6] = orjson.loads(fields[6])
    return DeadRow(*fields)


def list_dead(path: Path, sink: str | None = None, since: float | None = None) -> list[DeadRow]:
    conn = connect_writable(path)
    try:
        where, params = _where(sink, since)
        return [_row(r) for r in conn.execute(f"SELECT {_FIELDS} FROM dead_letters{where} ORDER BY id", params)]
    finally:
        conn.close()


def show_dead(path: Path, row_id: int) -> DeadRow:
    conn = connect_writable(path)
    try:
        found = conn.execute(f"SELECT {_FIELDS} FROM dead_letters WHERE id = ?", (row_id,)).fetchone()
    finally:
        conn.close()
    if found is None:
        raise SpoolError(f"no dead letter with id {row_id}")
    return _row(found)


def _requeue(conn: sqlite3.Connection, now: float, row_id: int, credential_id: int | None) -> int:
    cursor = conn.execute(_REQUEUE, (credential_id, now, row_id))
    if cursor.rowcount != 1 or cursor.lastrowid is None:  # then the chunk's transaction is never committed
        raise SpoolError(f"dead letter {row_id} could not be put back in the queue")
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
    conn = connect_writable(path)
    try:
        where, params = _where(sink, since, ids)
        chosen = [r[0] for r in conn.execute(f"SELECT id FROM dead_letters{where} ORDER BY id", params)]
        missing = sorted(set(ids) - set(chosen))
        if missing:
            raise SpoolError(
                f"no dead letter with id {', '.join(map(str, missing))} (matching the filters); nothing replayed"
            )
        done: list[tuple[int, int]] = []
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start : start + CHUNK]
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            keys = _credentials(conn, chunk, api_key) if api_key else {}
            moved = [(row_id, _requeue(conn, now, row_id, keys.get(row_id))) for row_id in chunk]
            conn.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT value FROM json_each(?))", (orjson.dumps(chunk),)
            )
            conn.execute("COMMIT")
            done += moved
            if progress is not None:
                progress(len(done), len(chosen))
        return done
    except sqlite3.Error as exc:
        raise SpoolError(f"replay stopped after an error: {exc}") from exc
    finally:
        conn.close()


def _credentials(conn: sqlite3.Connection, ids: Sequence[int], api_key: str) -> dict[int, int]:
    """The credential id of `api_key` for each dead letter's sink (stored once per sink, as ingest stores them)."""
    sinks = conn.execute(
        "SELECT id, sink FROM dead_letters WHERE id IN (SELECT value FROM json_each(?))", (orjson.dumps(list(ids)),)
    )
    by_sink: dict[str, int] = {}
    found: dict[int, int] = {}
    for row_id, sink in sinks.fetchall():
        if sink not in by_sink:
            digest = credential_digest(sink, api_key)
            conn.execute("INSERT OR IGNORE INTO credentials (digest, value) VALUES (?, ?)", (digest, api_key))
            by_sink[sink] = conn.execute("SELECT id FROM credentials WHERE digest = ?", (digest,)).fetchone()[0]
        found[row_id] = by_sink[sink]
    return found


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
