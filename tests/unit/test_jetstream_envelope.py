"""The jetstream sink's message (sinks/jetstream/envelope.py): a versioned envelope a consumer reads back whole, and
an identity that is the same however often the row is published."""

from __future__ import annotations

import orjson
import pytest

from shipper.core.rows import SpoolRow
from shipper.jetstream.envelope import VERSION, decode, encode, msg_id


def spool_row(**over: object) -> SpoolRow:
    fields: dict[str, object] = {
        "id": 7,
        "sink": "fleet",
        "key": "hl:log:a",
        "method": "PATCH",
        "path": "/prompts/log/a",
        "query": b'{"x":1}',
        "body": b'{"output":"hi","n":1.5}',
        "created_at": 1764650000.123456,
        "attempts": 0,
        "scope": None,
        "after": "hl:log:p",
        "kind": "update",
        "credential_id": 3,
    }
    fields.update(over)
    return SpoolRow(**fields)  # type: ignore[arg-type]


def test_an_envelope_carries_the_row_and_reads_back() -> None:
    row = spool_row()
    data = encode(row, "side1", "humanloop")
    raw = orjson.loads(data)
    assert raw["v"] == VERSION == 1
    assert raw["body"] == {"output": "hi", "n": 1.5}  # the record itself, not a string
    back = decode(data)
    assert (back.sidecar, back.id, back.target, back.method, back.path) == ("side1", 7, "humanloop", "PATCH", row.path)
    assert orjson.loads(back.body) == orjson.loads(row.body) and back.query == b'{"x":1}'
    assert (back.key, back.scope, back.after, back.kind, back.created_at) == (
        "hl:log:a",
        None,
        "hl:log:p",
        "update",
        row.created_at,
    )


def test_an_envelope_names_no_credential() -> None:
    assert set(orjson.loads(encode(spool_row(), "s", "t"))) == {
        "v", "sidecar", "id", "target", "method", "path", "query", "body", "key", "scope", "after", "kind",
        "created_at",
    }  # fmt: skip


def test_the_identity_is_the_rows_own_and_differs_for_a_new_spool_counting_from_one_again() -> None:
    row = spool_row()
    assert msg_id("s", row) == msg_id("s", row._replace(attempts=5, unanswered=2)) == "s:7:1764650000.123456"
    assert msg_id("s", row) != msg_id("s", row._replace(created_at=1764650001.0))
    assert msg_id("s", row) != msg_id("t", row)


@pytest.mark.parametrize("data", [b"nope", b"[]", b'{"v": 2}', b'{"v": 1, "id": 1}'])
def test_decode_refuses_what_is_not_a_version_1_envelope(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)
