"""Recording what came of sends, inside the writer's transaction: delivered rows go, retries wait for their time,
dead rows move to `dead_letters` and take the rows that depend on them along. Every row whose attempt ended gives
its lease back. Not responsible for deciding outcomes (forward/) or for the transaction (group.py).
"""

from __future__ import annotations

import sqlite3
import time

import orjson

from shipper.core import order
from shipper.core.rows import DeadLetter, Settlement
from shipper.spool import sql
from shipper.spool.bundles import unbundle


def settle(conn: sqlite3.Connection, s: Settlement, owner: str) -> int:
    """Apply a merged settlement from the process named `owner`; returns how many records left `rows` (dependants
    included). A delivered row goes whoever holds it now: the remote has it. A retry, a dead letter or a release
    counts only for rows whose lease `owner` still holds: a process that hung past its deadline must not move a row
    another process now sends."""
    if s.learned:
        conn.executemany(sql.LEARN_ID, s.learned)
    held = _held(conn, owner, [d.id for d in s.dead] + [r.id for r in s.retry] + s.released + s.unbundled)
    removed = 0
    if s.dead:
        removed += dead_letter(conn, [d for d in s.dead if d.id in held])
    if s.delivered:
        removed += _delete(conn, s.delivered)
    if s.unbundled:
        unbundle(conn, [row_id for row_id in s.unbundled if row_id in held])
    retry = [r for r in s.retry if r.id in held]
    if retry:
        conn.executemany(
            "UPDATE rows SET next_attempt_at = ?, last_error = ?, attempts = attempts + 1,"
            " unanswered = unanswered + ? WHERE id = ?",
            [(r.next_attempt_at, r.error, int(r.unanswered), r.id) for r in retry],
        )
    ended = s.delivered + list(held)
    if ended:
        conn.execute(f"DELETE FROM leases WHERE id IN ({sql.IDS})", (orjson.dumps(ended),))
    return removed


def _delete(conn: sqlite3.Connection, ids: list[int]) -> int:
    """Delete rows; returns how many records went with them."""
    return sum(records for (records,) in conn.execute(sql.DELETE_ROWS, (orjson.dumps(ids),)))


def _held(conn: sqlite3.Connection, owner: str, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    return {row_id for (row_id,) in conn.execute(sql.HELD, (owner, orjson.dumps(ids)))}


def dead_letter(conn: sqlite3.Connection, dead: list[DeadLetter]) -> int:
    """Move rows to dead_letters; a dead create takes its updates and dependants along, transitively. Returns how
    many records left `rows`."""
    now = time.time()
    sent = orjson.dumps([d.id for d in dead])
    conn.execute(f"UPDATE rows SET attempts = attempts + 1 WHERE id IN ({sql.IDS})", (sent,))
    removed = 0
    while dead:
        ids = orjson.dumps([d.id for d in dead])
        conn.executemany(sql.DEAD, [(now, d.status, d.response, d.reason, d.id) for d in dead])
        creates = conn.execute(sql.DEAD_CREATES, (ids,)).fetchall()
        removed += _delete(conn, [d.id for d in dead])
        dead = []
        for create_id, sink, key in creates:
            reason = order.reason(create_id, key)
            for (row_id,) in conn.execute(sql.DEPENDANTS, (sink, key, key, create_id)).fetchall():
                dead.append(DeadLetter(row_id, None, None, reason))
        dead = list({d.id: d for d in dead}.values())
    return removed
