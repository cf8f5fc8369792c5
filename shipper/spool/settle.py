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


def settle(conn: sqlite3.Connection, s: Settlement) -> int:
    """Apply a merged settlement; returns how many rows it took out of `rows` (dependants not counted)."""
    if s.learned:
        conn.executemany("INSERT OR REPLACE INTO id_map (sink, local, upstream) VALUES (?, ?, ?)", s.learned)
    if s.dead:
        dead_letter(conn, s.dead)
    if s.delivered:
        conn.execute(f"DELETE FROM rows WHERE id IN ({sql.IDS})", (orjson.dumps(s.delivered),))
    if s.retry:
        conn.executemany(
            "UPDATE rows SET next_attempt_at = ?, last_error = ?, attempts = attempts + 1,"
            " unanswered = unanswered + ? WHERE id = ?",
            [(r.next_attempt_at, r.error, int(r.unanswered), r.id) for r in s.retry],
        )
    ended = s.delivered + [d.id for d in s.dead] + [r.id for r in s.retry] + s.released
    if ended:
        conn.execute(f"DELETE FROM leases WHERE id IN ({sql.IDS})", (orjson.dumps(ended),))
    return len(s.delivered) + len(s.dead)


def dead_letter(conn: sqlite3.Connection, dead: list[DeadLetter]) -> None:
    """Move rows to dead_letters; a dead create takes its updates and dependants along, transitively."""
    now = time.time()
    sent = orjson.dumps([d.id for d in dead])
    conn.execute(f"UPDATE rows SET attempts = attempts + 1 WHERE id IN ({sql.IDS})", (sent,))
    while dead:
        ids = orjson.dumps([d.id for d in dead])
        conn.executemany(sql.DEAD, [(now, d.status, d.response, d.reason, d.id) for d in dead])
        creates = conn.execute(sql.DEAD_CREATES, (ids,)).fetchall()
        conn.execute(f"DELETE FROM rows WHERE id IN ({sql.IDS})", (ids,))
        dead = []
        for create_id, sink, key in creates:
            reason = order.reason(create_id, key)
            for (row_id,) in conn.execute(sql.DEPENDANTS, (sink, key, key, create_id)).fetchall():
                dead.append(DeadLetter(row_id, None, None, reason))
        dead = list({d.id: d for d in dead}.values())
