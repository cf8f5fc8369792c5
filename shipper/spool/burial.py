"""Dead letters of rows that never waited in this spool: a relay's messages, which wait in a stream instead.

A relay keeps its dead letters where it runs, in a spool file of its own, so `shipper dlq` lists, shows, replays and
purges them as a sidecar's. Each takes its id from the rows' sequence (as every row does), so no id is ever shared
with a row or another dead letter of the file; the row's own id (a stream sequence) is not kept as the id, since
two streams, or a stream made anew, count from 1 again. Not responsible for why a row died (the forwarder).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from shipper.core.rows import DeadLetter, SpoolRow
from shipper.spool import sql
from shipper.spool.inserts import one

# The last id any row or dead letter of the file took.
LAST_USED = f"SELECT max(coalesce(({sql.LAST_ID}), 0), coalesce((SELECT max(id) FROM dead_letters), 0))"
START_SEQUENCE = (
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'rows', ? WHERE NOT EXISTS"
    " (SELECT 1 FROM sqlite_sequence WHERE name = 'rows')"
)


def bury(conn: sqlite3.Connection, dead: Sequence[tuple[SpoolRow, DeadLetter]]) -> list[int]:
    """Write the dead letters inside the caller's transaction; returns their ids, in order."""
    first = int(one(conn, LAST_USED) or 0) + 1
    now = time.time()
    values = []
    ids = []
    next_id = first
    for row, letter in dead:
        ids.append(next_id)
        values.append((next_id, *row[1 : len(sql.ROW)], now, letter.status, letter.response, letter.reason))
        next_id += row.records
    conn.executemany(sql.BURY, values)
    if ids:  # a relay's spool may never have had a row: then the sequence has no entry yet
        conn.execute(sql.BUMP_SEQUENCE, (next_id - 1,))
        conn.execute(START_SEQUENCE, (next_id - 1,))
    return ids
