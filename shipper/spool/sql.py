"""The SQL the spool's writer runs, in one place: what a lease, an append and a settlement mean to the file."""

from __future__ import annotations

# The columns, named once. What a record asks for (the request to replay, with what orders it); what the queue adds
# (id, when, attempts); what a dead letter adds. Every statement here, in dlq.py and in salvage.py is built from them.
REQUEST = ("sink", "key", "method", "path", "query", "body", "scope", "after", "kind", "credential_id", "records")
# In SpoolRow's order: a lease builds SpoolRows straight from these (a test keeps the two equal).
ROW = ("id", "sink", "key", "method", "path", "query", "body", "created_at", "attempts", "scope", "after", "kind",
       "credential_id", "records")  # fmt: skip
OUTCOME = ("failed_at", "status", "response", "reason")
# Every SpoolRow field: what a reader hands back of a waiting row.
SPOOL_ROW = (*ROW, "unanswered")
# A row put back in the queue (a replay, a salvage): the request and when it was acknowledged; a new id, no attempts.
REQUEUED = (*REQUEST, "created_at")
# What a dead letter holds: the row and how it ended.
DEAD_LETTER = (*ROW, *OUTCOME)
# The small tables: API keys stored once, ids learnt from remotes, the scope each entity belongs to.
CREDENTIAL = ("id", "digest", "value")
LEARNT_ID = ("sink", "local", "upstream")
ENTITY_SCOPE = ("sink", "key", "scope", "created_at")


def names(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def marks(columns: tuple[str, ...]) -> str:
    return ", ".join("?" * len(columns))


COLUMNS = names(ROW)
# A leased row's `attempts` is the number of this attempt: the ended ones plus this one.
LEASED_COLUMNS = COLUMNS.replace("attempts", "attempts + 1") + ", unanswered"
INSERT = f"INSERT INTO rows ({COLUMNS}) VALUES ({marks(ROW)})"
DEAD_ON_ARRIVAL = f"INSERT INTO dead_letters ({COLUMNS}, failed_at, reason) VALUES ({marks(ROW)}, ?, ?)"
HOLD = "UPDATE rows SET next_attempt_at = ? WHERE id = ?"
# The rows of a sink with a key and a kind, in id order: the log-record content an LLM span waits for (otlp/join.py).
KEYED_KIND = "SELECT id, body FROM rows WHERE sink = ? AND key = ? AND kind = ? ORDER BY id"
# A dead letter of a row that was never in `rows` (a relay's message): the whole row and how it ended.
BURY = f"INSERT INTO dead_letters ({COLUMNS}, {names(OUTCOME)}) VALUES ({marks(DEAD_LETTER)})"
LAST_ID = "SELECT seq FROM sqlite_sequence WHERE name = 'rows'"
# Ids come from the rows table's sequence; a row dead on arrival never enters it, so move the sequence past it.
BUMP_SEQUENCE = "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'rows'"
# After a bundle went in under a new id (a replay, a salvage): its later records' ids are taken too (schema 8).
RESERVE_BUNDLE_IDS = (
    "UPDATE sqlite_sequence SET seq = max(seq, (SELECT id + records - 1 FROM rows WHERE id = ?)) WHERE name = 'rows'"
)
REMEMBER_SCOPE = f"INSERT OR IGNORE INTO entity_scopes ({names(ENTITY_SCOPE)}) VALUES ({marks(ENTITY_SCOPE)})"
LEARN_ID = f"INSERT OR REPLACE INTO id_map ({names(LEARNT_ID)}) VALUES ({marks(LEARNT_ID)})"
STORE_CREDENTIAL = "INSERT OR IGNORE INTO credentials (digest, value) VALUES (?, ?)"
CREDENTIAL_ID = "SELECT id FROM credentials WHERE digest = ?"
DEAD_CREATE_FOR = (
    "SELECT id, key FROM dead_letters WHERE sink = ? AND kind = 'create' AND key IN (?, ?) ORDER BY id LIMIT 1"
)
# The oldest rows no one sends, for `when_full = drop_oldest`: read in id order until they hold enough records.
OLDEST = """
SELECT id, records FROM rows AS r WHERE NOT EXISTS (SELECT 1 FROM leases AS l WHERE l.id = r.id) ORDER BY id LIMIT ?
"""
OLDER = "SELECT 1 FROM rows AS p WHERE p.sink = r.sink AND p.id < r.id AND"
# Eligible rows in id order, streamed: the writer stops reading once the batch reaches its byte budget.
LEASE = f"""
SELECT {LEASED_COLUMNS} FROM rows AS r
WHERE sink = :sink AND next_attempt_at <= :now
  AND NOT EXISTS (SELECT 1 FROM leases AS l WHERE l.id = r.id AND l.until > :now)
  AND (key IS NULL OR NOT EXISTS ({OLDER} p.key = r.key))
  AND (after IS NULL OR (NOT EXISTS ({OLDER} p.key = r.after) AND NOT EXISTS ({OLDER} p.scope = r.after)))
ORDER BY id LIMIT :limit
"""
TAKE_LEASE = "INSERT OR REPLACE INTO leases (id, until, owner) VALUES (?, ?, ?)"
NEXT_DUE = "SELECT min(next_attempt_at) FROM rows WHERE sink = ? AND next_attempt_at > ?"
IDS = "SELECT value FROM json_each(?)"
DROP = f"DELETE FROM rows WHERE id IN ({IDS}) RETURNING sink, records"
DEAD = f"""
INSERT INTO dead_letters ({COLUMNS}, {names(OUTCOME)})
SELECT {COLUMNS}, {marks(OUTCOME)} FROM rows WHERE id = ?
"""
DEAD_CREATES = f"SELECT id, sink, key FROM rows WHERE kind = 'create' AND key IS NOT NULL AND id IN ({IDS}) ORDER BY id"
DEPENDANTS = "SELECT id FROM rows WHERE sink = ? AND (key = ? OR after = ?) AND id > ? ORDER BY id"
# The row count every writer keeps in step inside its own transaction (schema 7).
ROW_COUNT = "SELECT value FROM tallies WHERE name = 'rows'"
COUNT_ROWS = "UPDATE tallies SET value = value + ? WHERE name = 'rows'"
# Of some ids, those whose lease `owner` holds: a settlement of a lease another process took over changes nothing.
HELD = f"SELECT id FROM leases WHERE owner = ? AND id IN ({IDS})"
# Rows leave `rows`: how many records went with them (a bundle counts all of its records).
DELETE_ROWS = f"DELETE FROM rows WHERE id IN ({IDS}) RETURNING records"
# A bundle split back into its records, in place: record i keeps the bundle's everything but its id (id + i, kept
# free for it since the append) and its body (the i-th line).
_KEPT_WHOLE = (*ROW, "next_attempt_at", "last_error", "unanswered")
_UNBUNDLED = tuple(c for c in _KEPT_WHOLE if c not in ("id", "body", "records"))
UNBUNDLE_RECORD = f"""
INSERT INTO rows (id, body, records, {names(_UNBUNDLED)})
SELECT ?, ?, 1, {names(_UNBUNDLED)} FROM rows WHERE id = ?
"""
UNBUNDLE_FIRST = "UPDATE rows SET body = ?, records = 1 WHERE id = ?"
BUNDLES = f"SELECT id, body, records FROM rows WHERE records > 1 AND id IN ({IDS})"
