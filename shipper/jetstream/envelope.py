"""The message a `jetstream` sink publishes for a spool row: a versioned JSON envelope, and its stable identity.

Version 1, one row per message (UTF-8 JSON object):

    {"v": 1, "sidecar": "<id>", "id": <row id>, "target": "<relay's sink>", "method": "POST", "path": "/...",
     "query": {...} | null, "body": <the record's JSON, as the app sent it>, "key": ..., "scope": ..., "after": ...,
     "kind": "create" | "update" | null, "created_at": <epoch seconds>}

`body` is the record's JSON itself (not a string), so a consumer reads the record with the envelope in one parse.

Version 2, a bundle (several keyless records of one request, sinks/bundling.py): as version 1, with `"records": n`
and `body` the list of the n records. A reader of version 1 only refuses it (not a version 1 envelope) rather than
taking the list for one record.
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
BUNDLE_VERSION = 2
MSG_ID = "Nats-Msg-Id"


def msg_id(sidecar: str, row: SpoolRow) -> str:
    return f"{sidecar}:{row.id}:{row.created_at!r}"


def encode(row: SpoolRow, sidecar: str, target: str) -> bytes:
    """A bundle's bodies are JSON texts joined by newlines, none holding one: joined by commas, they are a list."""
    bundle = row.records > 1
    body = b"[" + row.body.replace(b"\n", b",") + b"]" if bundle else row.body
    envelope = {
        "v": BUNDLE_VERSION if bundle else VERSION,
        "sidecar": sidecar,
        "id": row.id,
        "target": target,
        "method": row.method,
        "path": row.path,
        "query": orjson.Fragment(row.query) if row.query else None,
        "body": orjson.Fragment(body),
        "key": row.key,
        "scope": row.scope,
        "after": row.after,
        "kind": row.kind,
        "created_at": row.created_at,
    }
    if bundle:
        envelope["records"] = row.records
    return orjson.dumps(envelope)


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
    records: int = 1  # more than one: a bundle, its records' bodies joined by newlines (as the spool keeps them)


def decode(data: bytes) -> Envelope:
    """The envelope of a message; ValueError for one of another version or shape."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("v") not in (VERSION, BUNDLE_VERSION):
        raise ValueError(f"not a version {VERSION} or {BUNDLE_VERSION} envelope")
    try:
        query = raw["query"]
        records, body = 1, orjson.dumps(raw["body"])
        if raw["v"] == BUNDLE_VERSION:
            bodies, records = raw["body"], raw["records"]
            if not isinstance(bodies, list) or records != len(bodies) or records < 2:
                raise ValueError("a bundle envelope whose body is not a list of its records")
            body = b"\n".join(orjson.dumps(item) for item in bodies)
        return Envelope(
            raw["sidecar"],
            raw["id"],
            raw["target"],
            raw["method"],
            raw["path"],
            None if query is None else orjson.dumps(query),
            body,
            raw["key"],
            raw["scope"],
            raw["after"],
            raw["kind"],
            raw["created_at"],
            records,
        )
    except KeyError as missing:
        raise ValueError(f"envelope without {missing.args[0]}") from None
