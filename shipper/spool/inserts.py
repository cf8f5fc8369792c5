"""The append path of a group commit: new rows become queued rows (or dead letters on arrival), on the database
thread, inside the group's transaction.

Each row's stored scope and fate follow the ordering rule (core/order.py): an update joins its create's scope, the
first create of a key names that scope for good, and a row that depends on a dead create is dead-lettered at once
(written at once, so it is dead for the rest of its batch too). Keys are stored once per sink (`credentials`). The
caches here (credential ids, entity scopes) agree with the file: committed() keeps what a commit made durable,
rolled_back() forgets what a rollback undid. Not responsible for bounds or the transaction (group.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from shipper.core import order
from shipper.records import NewRow
from shipper.spool import sql

MAX_CACHED_SCOPES = 100_000


def credential_digest(sink: str, secret: str) -> str:
    """How a key is stored once per sink: ingest and a re-keying dead-letter replay must agree on it."""
    return hashlib.sha256(f"{sink}\0{secret}".encode()).hexdigest()


def one(conn: sqlite3.Connection, query: str, params: Sequence[Any] = ()) -> Any:
    found = conn.execute(query, params).fetchone()
    return None if found is None else found[0]


class Inserts:
    """Lives on the database thread, with the GroupWriter that calls it."""

    def __init__(self) -> None:
        self._credential_ids: dict[str, int] = {}
        self._new_credentials: dict[str, int] = {}  # made by the transaction under way
        self._scopes: dict[tuple[str, str], str] = {}

    def committed(self) -> None:
        self._credential_ids.update(self._new_credentials)
        self._new_credentials.clear()

    def rolled_back(self) -> None:
        self._new_credentials.clear()
        self._scopes.clear()  # it may hold scopes of creates the rollback undid

    def insert(self, conn: sqlite3.Connection, batches: list[Sequence[NewRow]]) -> tuple[list[list[int]], int]:
        """Ids for each batch's records, in order, and how many records were queued (the rest died on arrival). A
        bundle of n records is one row with the first of its n ids (schema 8)."""
        next_id = first_of_all = int(one(conn, sql.LAST_ID) or 0) + 1
        now = time.time()
        queued: list[tuple[Any, ...]] = []
        held: list[tuple[float, int]] = []
        scopes: list[tuple[str, str, str, float]] = []
        out: list[list[int]] = []
        records = 0
        for rows in batches:
            first = next_id
            for row in rows:
                values = self._place(conn, next_id, row, now, scopes)
                if values is not None:
                    queued.append(values)
                    if row.due > 0:
                        held.append((row.due, next_id))
                    records += row.records
                next_id += row.records
            out.append(list(range(first, next_id)))
        conn.executemany(sql.INSERT, queued)
        if held:  # rows not to be handed out before a time: the lease's `next_attempt_at`, set as a retry sets it
            conn.executemany(sql.HOLD, held)
        if len(queued) < next_id - first_of_all:  # ids past the rows: bundles' later ids, records dead on arrival
            conn.execute(sql.BUMP_SEQUENCE, (next_id - 1,))
        if scopes:
            conn.executemany(sql.REMEMBER_SCOPE, scopes)
        return out, records

    def _place(
        self, conn: sqlite3.Connection, row_id: int, r: NewRow, now: float, scopes: list[tuple[str, str, str, float]]
    ) -> tuple[Any, ...] | None:
        """One row's stored values, or None when it died on arrival (then it is written to dead_letters here)."""
        cred = None if r.credential is None else self._credential_id(conn, r.sink, r.credential)
        # What the entity's create named, where the rule needs it (an update joins it, a create may set it).
        wanted = r.key is not None and (r.kind == "create" or (r.kind == "update" and r.scope is None))
        known = self._entity_scope(conn, r.sink, r.key) if wanted and r.key is not None else None
        scope = order.inherited_scope(r.kind, r.key, r.scope, known)
        values = (row_id, r.sink, r.key, r.method, r.path, r.query, r.body, now, 0, scope, r.after, r.kind, cred,
                  r.records)  # fmt: skip
        # The first create of a key names its scope for good (INSERT OR IGNORE; the cache agrees).
        if order.remembers_scope(r.kind, r.key, scope) and r.key is not None and scope is not None and known is None:
            scopes.append((r.sink, r.key, scope, now))
            self._scopes[(r.sink, r.key)] = scope
        died = self._dead_create(conn, r) if (r.kind == "update" and r.key) or r.after else None
        if died is None:
            return values
        conn.execute(sql.DEAD_ON_ARRIVAL, (*values, now, order.reason(*died)))
        return None

    def _credential_id(self, conn: sqlite3.Connection, sink: str, secret: str) -> int:
        digest = credential_digest(sink, secret)
        known = self._credential_ids.get(digest) or self._new_credentials.get(digest)
        if known is not None:
            return known
        conn.execute(sql.STORE_CREDENTIAL, (digest, secret))
        self._new_credentials[digest] = int(one(conn, sql.CREDENTIAL_ID, (digest,)))
        return self._new_credentials[digest]

    def _entity_scope(self, conn: sqlite3.Connection, sink: str, key: str) -> str | None:
        """The scope the entity's create named (an update of a Freeplay trace belongs to the trace's session)."""
        if (sink, key) not in self._scopes:
            found = one(conn, "SELECT scope FROM entity_scopes WHERE sink = ? AND key = ?", (sink, key))
            if found is None:
                return None
            if len(self._scopes) > MAX_CACHED_SCOPES:
                self._scopes.clear()
            self._scopes[(sink, key)] = found
        return self._scopes[(sink, key)]

    def _dead_create(self, conn: sqlite3.Connection, row: NewRow) -> tuple[int, str] | None:
        """The dead-lettered create this row depends on, if any: such a row could never succeed."""
        own = row.key if row.kind == "update" else None
        found = conn.execute(sql.DEAD_CREATE_FOR, (row.sink, own, row.after)).fetchone()
        return None if found is None else (int(found[0]), str(found[1]))
