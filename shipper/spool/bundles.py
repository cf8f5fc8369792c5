"""Bundles split back into their records, in place, inside the writer's transaction.

A bundle (schema 8) is one row carrying several keyless records for a sink that batches. It is split when what will
send it cannot take it whole: a sink that now replays one record per request (a reload changed it), a batch limit a
413 has shrunk below its size, or a remote that refused it whole (so the record at fault can be found, as a refused
batch of rows is split). Its records were given ids id..id+n-1 at the append, so they keep them, in order.
Not responsible for making bundles (core/bundle.py) or for deciding when to split (the lease, the settlement).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import orjson

from shipper.spool import sql


def unbundle(conn: sqlite3.Connection, ids: Iterable[int]) -> int:
    """Split the bundles among `ids` into one row per record; returns how many bundles were split. A bundle whose
    body does not have one line per record (never written so) is left whole rather than guessed at."""
    split = 0
    for row_id, body, records in conn.execute(sql.BUNDLES, (orjson.dumps(list(ids)),)).fetchall():
        parts = bytes(body).split(b"\n")
        if len(parts) != records:
            continue
        conn.executemany(sql.UNBUNDLE_RECORD, [(row_id + i, part, row_id) for i, part in enumerate(parts[1:], 1)])
        conn.execute(sql.UNBUNDLE_FIRST, (parts[0], row_id))
        split += 1
    return split
