"""The jetstream sink's message (sinks/jetstream/envelope.py): a versioned envelope a consumer reads back whole, and
an identity that is the same however often the row is published."""

from __future__ import annotations

import orjson
import pytest

from shipper.core.rows import SpoolRow
from shipper.jetstream.envelope import BUNDLE_VERSION, VERSION, decode, encode, msg_id


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


def test_a_bundle_travels_as_a_list_of_its_records_and_reads_back_as_the_spool_keeps_it() -> None:
    bodies = [b'{"n":1,"text":"a, b"}', b'{"n":2,"nested":{"x":[1,2]}}', b'"just a string"']
    row = spool_row(key=None, after=None, kind=None, body=b"\n".join(bodies), records=3)
    raw = orjson.loads(encode(row, "side1", "out"))
    assert (raw["v"], raw["records"]) == (BUNDLE_VERSION, 3) == (2, 3)
    assert raw["body"] == [orjson.loads(body) for body in bodies]  # the records themselves, in order
    back = decode(encode(row, "side1", "out"))
    assert back.records == 3 and back.body.split(b"\n") == bodies
    assert "records" not in orjson.loads(encode(spool_row(), "s", "t"))  # one record: version 1, as before


@pytest.mark.parametrize(
    "data",
    [
        b"nope",
        b"[]",
        b'{"v": 3}',
        b'{"v": 1, "id": 1}',
        b'{"v": 2, "sidecar": "s", "id": 1, "target": "t", "method": "POST", "path": "/x", "query": null,'
        b' "body": {"n": 1}, "key": null, "scope": null, "after": null, "kind": null, "created_at": 1, "records": 1}',
        b'{"v": 2, "sidecar": "s", "id": 1, "target": "t", "method": "POST", "path": "/x", "query": null,'
        b' "body": [1, 2, 3], "key": null, "scope": null, "after": null, "kind": null, "created_at": 1, "records": 2}',
    ],
)
def test_decode_refuses_what_is_not_a_version_1_or_2_envelope(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)
