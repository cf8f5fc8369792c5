"""The message a `jetstream` sink publishes for a spool row: a versioned JSON envelope, and its stable identity.

Version 1, one row per message (UTF-8 JSON object):

    {"v": 1, "sidecar": "<id>", "id": <row id>, "target": "<relay's sink>", "method": "POST", "path": "/...",
     "query": {...} | null, "body": <the record's JSON, as the app sent it>, "key": ..., "scope": ..., "after": ...,
     "kind": "create" | "update" | null, "created_at": <epoch seconds>}

`body` is the record's JSON itself (not a string), so a consumer reads the record with the envelope in one parse.
No credential travels: the row's API key (if the app sent one) stays in the sidecar's spool, and the relay delivers
with the keys it is configured with for `target`. The identity `Nats-Msg-Id` is `<sidecar>:<row id>:<created_at>`:
the same however often the row is published, so the stream's dedup window drops a repeat; `created_at` keeps it
unique should a new spool file count its ids from 1 again under the same sidecar id.
Not responsible for subjects or partitions (core/partition.py), nor for publishing (sink.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from shipper.core.rows import SpoolRow

VERSION = 1
MSG_ID = "Nats-Msg-Id"


def msg_id(sidecar: str, row: SpoolRow) -> str:
    return f"{sidecar}:{row.id}:{row.created_at!r}"


def encode(row: SpoolRow, sidecar: str, target: str) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "sidecar": sidecar,
            "id": row.id,
            "target": target,
            "method": row.method,
            "path": row.path,
            "query": orjson.Fragment(row.query) if row.query else None,
            "body": orjson.Fragment(row.body),
            "key": row.key,
            "scope": row.scope,
            "after": row.after,
            "kind": row.kind,
            "created_at": row.created_at,
        }
    )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message read back: what a consumer replays (the body as JSON text, as the spool keeps it)."""

    sidecar: str
    id: int
    target: str
    method: str
    path: str
    query: bytes | None
    body: bytes
    key: str | None
    scope: str | None
    after: str | None
    kind: str | None
    created_at: float


def decode(data: bytes) -> Envelope:
    """The envelope of a message; ValueError for one of another version or shape."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError(f"not a version {VERSION} envelope")
    try:
        query = raw["query"]
        return Envelope(
            raw["sidecar"],
            raw["id"],
            raw["target"],
            raw["method"],
            raw["path"],
            None if query is None else orjson.dumps(query),
            orjson.dumps(raw["body"]),
            raw["key"],
            raw["scope"],
            raw["after"],
            raw["kind"],
            raw["created_at"],
        )
    except KeyError as missing:
        raise ValueError(f"envelope without {missing.args[0]}") from None
