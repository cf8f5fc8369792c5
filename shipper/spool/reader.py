"""Reading a spool file from outside the writer: what waits, what is dead, what is stored, asked the way callers ask.

A read-only connection (WAL lets it read while the daemon writes, and it never blocks the writer), statements built
from the columns sql.py names, answers as typed values. `shipper status`, the dlq commands, salvage (reading the old
file) and the tests read through it, so none of them spells the schema. Not responsible for anything that writes
(the spool writer, dlq.py's replay and purge, salvage's copies).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import orjson

from shipper.core.rows import SpoolRow
from shipper.errors import SpoolError
from shipper.logs import rfc3339
from shipper.spool import sql
from shipper.spool.schema import SCHEMA_VERSION

T = TypeVar("T")
# A damaged file is read in id ranges this long; when even its largest id cannot be read, probe this far at most.
CHUNK = 256
MAX_SKIP = 1 << 20


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A dead letter as the dlq commands show it: the request (query and body decoded) and how it ended."""

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
    records: int = 1  # a bundle's: then `body` is the list of its records' bodies

    def to_dict(self) -> dict[str, Any]:
        """As `dlq show` and `dlq list --json` print it."""
        shown = asdict(self)
        shown["created_at"], shown["failed_at"] = rfc3339(self.created_at), rfc3339(self.failed_at)
        shown["reason"] = reason_alone(self.reason, self.response)
        return shown


_DEAD_FIELDS = tuple(field.name for field in fields(DeadRow))
_DEAD_ROW = sql.names(_DEAD_FIELDS)
_WAITING = sql.names(sql.SPOOL_ROW)
# Counts are of records: a bundle (schema 8) counts every record it carries.
_RECORDS = "coalesce(sum(records), 0)"


def reason_alone(reason: str, response: str | None) -> str:
    """The reason without the remote's answer that the forwarder appends to it (`rejected by the remote: HTTP 400:
    ...`, `gave up (...): ...`): `response` already holds that answer, and both were cut to the same length."""
    start = reason.find(": ")
    while response and start != -1:
        if response.startswith(reason[start + 2 :]):
            return reason[:start]
        start = reason.find(": ", start + 2)
    return reason


class QueueCounts(NamedTuple):
    """One sink's queue at a moment: records waiting, leased, backing off, and when the oldest was acknowledged."""

    queued: int
    leased: int
    retrying: int
    oldest_created_at: float | None


class StoredCredential(NamedTuple):
    id: int
    digest: str
    value: str


def _dead_row(values: Sequence[Any]) -> DeadRow:
    named = dict(zip(_DEAD_FIELDS, values, strict=True))
    named["query"] = orjson.loads(named["query"]) if named["query"] else None
    body = named["body"]
    named["body"] = [orjson.loads(line) for line in body.split(b"\n")] if named["records"] > 1 else orjson.loads(body)
    return DeadRow(**named)


def _where(clauses: dict[str, Any]) -> tuple[str, list[Any]]:
    """`WHERE` for the clauses whose value is not None (each clause holds one `?`)."""
    chosen = {clause: value for clause, value in clauses.items() if value is not None}
    return (" WHERE " + " AND ".join(chosen)) if chosen else "", list(chosen.values())


def _dead_where(sink: str | None, since: float | None, ids: Sequence[int] = ()) -> tuple[str, list[Any]]:
    listed = orjson.dumps(list(ids)).decode() if ids else None
    return _where({"sink = ?": sink, "failed_at >= ?": since, f"id IN ({sql.IDS})": listed})


class SpoolReader:
    """Questions to one spool file. Open with `open` (or `damaged`), close when done, or use `read` for one."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SpoolReader:
        """Read-only beside the running daemon: a busy writer is waited for (5 s), never blocked."""
        if not path.exists():
            raise SpoolError(f"no spool at {path} (has the daemon run with this config?)")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read spool {path}: {exc}") from exc
        return cls(conn, path)

    @classmethod
    def damaged(cls, path: Path) -> SpoolReader:
        """A file moved aside as damaged, as salvage reads it: a plain connection made query-only. Refuses a file
        that is no spool at all."""
        try:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA query_only=1")
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read {path} as a spool: {exc}") from exc
        if "rows" not in tables:
            conn.close()
            raise SpoolError(f"{path} is not a shipper spool (it has no rows table)")
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SpoolReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read spool {self.path}: {exc}") from exc

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        found = self._all(query, params)
        return found[0][0] if found else None

    def version(self) -> int:
        return int(self._one("PRAGMA user_version"))

    def last_id(self) -> int | None:
        """The last row id handed out (dead letters keep theirs), None before the first."""
        found = self._one(sql.LAST_ID)
        return None if found is None else int(found)

    def holds_sink(self, sink: str) -> bool:
        """Whether any waiting row or dead letter belongs to `sink`."""
        query = "SELECT 1 FROM dead_letters WHERE sink = ? UNION SELECT 1 FROM rows WHERE sink = ?"
        return bool(self._all(query, (sink, sink)))

    def waiting(self, sink: str | None = None) -> int:
        where, params = _where({"sink = ?": sink})
        return int(self._one(f"SELECT {_RECORDS} FROM rows{where}", params))

    def waiting_by_sink(self) -> dict[str, int]:
        return dict(self._all(f"SELECT sink, {_RECORDS} FROM rows GROUP BY sink"))

    def waiting_rows(self, sink: str | None = None) -> list[SpoolRow]:
        """In id order, bodies as stored; `attempts` counts the attempts that ended (a lease adds the one under way)."""
        where, params = _where({"sink = ?": sink})
        return [SpoolRow(*found) for found in self._all(f"SELECT {_WAITING} FROM rows{where} ORDER BY id", params)]

    def retrying(self, now: float, sink: str | None = None) -> int:
        """Records backing off: not to be sent before some time after `now`."""
        where, params = _where({"next_attempt_at > ?": now, "sink = ?": sink})
        return int(self._one(f"SELECT {_RECORDS} FROM rows{where}", params))

    def attempts(self, sink: str | None = None) -> int:
        """Attempts that ended, summed over the waiting rows."""
        where, params = _where({"sink = ?": sink})
        return int(self._one(f"SELECT coalesce(sum(attempts), 0) FROM rows{where}", params))

    def last_errors(self) -> dict[int, str]:
        """Row id -> why its last attempt failed, for the rows that have failed one."""
        return dict(self._all("SELECT id, last_error FROM rows WHERE last_error IS NOT NULL"))

    def leases(self) -> dict[int, float]:
        """Row id -> until when it is leased, for every lease taken (some may have run out)."""
        return dict(self._all("SELECT id, until FROM leases"))

    def queue_counts(self, now: float) -> dict[str, QueueCounts]:
        """Records per sink holding rows; a lease counts while it runs."""
        found = self._all(
            "SELECT sink, sum(records), sum(records * EXISTS (SELECT 1 FROM leases AS l WHERE l.id = r.id"
            " AND l.until > ?)), sum(records * (next_attempt_at > ?)), min(created_at) FROM rows AS r GROUP BY sink",
            (now, now),
        )
        return {
            sink: QueueCounts(int(n), int(leased or 0), int(later or 0), oldest)
            for sink, n, leased, later, oldest in found
        }

    def dead_letters(self, sink: str | None = None, since: float | None = None) -> list[DeadRow]:
        """In id order; `since` keeps those that failed at or after it."""
        where, params = _dead_where(sink, since)
        return [_dead_row(r) for r in self._all(f"SELECT {_DEAD_ROW} FROM dead_letters{where} ORDER BY id", params)]

    def dead_letter(self, row_id: int) -> DeadRow | None:
        found = self._all(f"SELECT {_DEAD_ROW} FROM dead_letters WHERE id = ?", (row_id,))
        return _dead_row(found[0]) if found else None

    def dead_count(self, sink: str | None = None) -> int:
        where, params = _where({"sink = ?": sink})
        return int(self._one(f"SELECT {_RECORDS} FROM dead_letters{where}", params))

    def dead_by_sink(self) -> dict[str, int]:
        return dict(self._all(f"SELECT sink, {_RECORDS} FROM dead_letters GROUP BY sink"))

    def dead_letter_sinks(
        self, sink: str | None = None, since: float | None = None, ids: Sequence[int] = ()
    ) -> dict[int, str]:
        """Id -> sink of the matching dead letters, in id order, without reading their bodies (a replay's choice)."""
        where, params = _dead_where(sink, since, ids)
        return dict(self._all(f"SELECT id, sink FROM dead_letters{where} ORDER BY id", params))

    def credentials(self) -> list[StoredCredential]:
        """The API keys stored once each (values in the clear: the file is the daemon's, mode 0600)."""
        found = self._all(f"SELECT {sql.names(sql.CREDENTIAL)} FROM credentials ORDER BY id")
        return [StoredCredential(*row) for row in found]

    def learnt_ids(self) -> list[tuple[str, str, str]]:
        """(sink, id told to the app, the remote's id) for each id learnt from a remote."""
        return self._all(f"SELECT {sql.names(sql.LEARNT_ID)} FROM id_map")

    def entity_scopes(self) -> list[tuple[str, str, str, float]]:
        """(sink, key, scope, when) for each entity whose first create named its scope."""
        return self._all(f"SELECT {sql.names(sql.ENTITY_SCOPE)} FROM entity_scopes")

    def readable(self, table: str, columns: tuple[str, ...], skipped: Callable[[], None]) -> Iterator[tuple[Any, ...]]:
        """`columns` (the first is `id`) of a table's rows in id order. A range that fails to read is retried one id
        at a time (a lookup by id touches only that row's page), so a damaged page costs only the rows on it; each
        such range is reported to `skipped`. Past the last known id, stop."""
        try:
            top = self._conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
        except sqlite3.DatabaseError:
            top = MAX_SKIP
        chosen, last = sql.names(columns), 0
        while last < top:
            try:
                query = f"SELECT {chosen} FROM {table} WHERE id > ? ORDER BY id LIMIT ?"
                rows = self._conn.execute(query, (last, CHUNK)).fetchall()
            except sqlite3.DatabaseError:
                skipped()
                yield from self._one_by_one(table, chosen, last + 1, last + CHUNK)
                last += CHUNK
                continue
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def _one_by_one(self, table: str, chosen: str, first: int, end: int) -> Iterator[tuple[Any, ...]]:
        for row_id in range(first, end + 1):
            try:
                found = self._conn.execute(f"SELECT {chosen} FROM {table} WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if found is not None:
                yield found


def require_version(version: int, path: Path) -> None:
    """The dlq commands and salvage read and write the columns of this shipper's schema only."""
    if version != SCHEMA_VERSION:
        raise SpoolError(
            f"spool {path} has schema {version}; this shipper reads {SCHEMA_VERSION} (start the daemon once)"
        )


def read(path: Path, ask: Callable[[SpoolReader], T], current: bool = False) -> T:
    """Open, ask, close: one question holds no connection (and no WAL snapshot) past its answer. With `current`,
    refuse a file of another schema version first."""
    with SpoolReader.open(path) as reader:
        if current:
            require_version(reader.version(), path)
        return ask(reader)
