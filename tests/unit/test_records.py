"""The validation boundary: which bodies become spool rows, and the exact error (status, code, index, field) for
every body that does not. Plus the path guard that keeps a record from steering a request off its sink's host."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.ingest.responses import status_of
from shipper.records import BadInput, Limits, NewRow, check_path, checked_rows, parse_records, quick_rows

SINKS = frozenset({"remote", "audit"})
NDJSON = "application/x-ndjson"
JSON = "application/json"


def lines(*items: Any) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def bad(raw: bytes, content_type: str = JSON) -> BadInput:
    with pytest.raises(BadInput) as caught:
        parse_records(raw, content_type, SINKS)
    return caught.value


# --- what is accepted ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [NDJSON, "application/ndjson", "application/jsonl"])
def test_ndjson_lines_become_rows_in_order_skipping_blank_lines(content_type: str) -> None:
    raw = lines({"sink": "remote", "body": {"n": 0}}) + b"\n  \n" + lines({"sink": "audit", "body": {"n": 1}})
    rows = parse_records(raw, content_type, SINKS)
    assert [(r.sink, orjson.loads(r.body)) for r in rows] == [("remote", {"n": 0}), ("audit", {"n": 1})]


def test_ndjson_without_a_trailing_newline_is_accepted() -> None:
    rows = parse_records(b'{"sink": "remote"}\n{"sink": "remote"}', NDJSON, SINKS)
    assert len(rows) == 2


def test_a_json_array_becomes_one_row_per_item() -> None:
    rows = parse_records(orjson.dumps([{"sink": "remote", "body": {"n": n}} for n in range(3)]), JSON, SINKS)
    assert [orjson.loads(r.body)["n"] for r in rows] == [0, 1, 2]


def test_a_single_json_object_becomes_one_row() -> None:
    (row,) = parse_records(b'{"sink": "remote", "body": {"a": 1}}', JSON, SINKS)
    assert row.sink == "remote"
    assert orjson.loads(row.body) == {"a": 1}


def test_every_field_is_carried_into_the_row_and_defaults_are_post_and_empty_path() -> None:
    item = {
        "sink": "remote",
        "method": "PATCH",
        "path": "/v1/things/42",
        "query": {"a": "x", "n": 3, "f": 1.5, "b": True},
        "body": {"nested": [1, {"deep": None}]},
        "key": "thing-42",
    }
    (row,) = parse_records(orjson.dumps(item), JSON, SINKS)
    assert (row.sink, row.method, row.path, row.key) == ("remote", "PATCH", "/v1/things/42", "thing-42")
    assert row.query is not None
    assert orjson.loads(row.query) == item["query"]
    assert orjson.loads(row.body) == item["body"]
    (plain,) = parse_records(b'{"sink": "remote"}', JSON, SINKS)
    assert (plain.method, plain.path, plain.query, plain.key) == ("POST", "", None, None)


# --- what is refused, and how exactly -----------------------------------------------------------------------------


def test_malformed_ndjson_line_is_400_invalid_json_naming_item_index_and_line() -> None:
    raw = lines({"sink": "remote"}) + b"\n" + b'{"sink": "remote"\n' + lines({"sink": "remote"})
    error = bad(raw, NDJSON)
    assert (status_of(error), error.code) == (400, "invalid_json")
    assert error.detail == {"index": 1, "line": 3}
    assert error.body()["error"] == "invalid_json"
    assert "line 3" in error.body()["message"]


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"body":{"a":1,"a":{"b":[1e400]}},"sink":"remote"}\n{"sink":"remote"}\n', NDJSON),  # found by the fuzzer
        (b'[{"sink":"remote","body":-2E+308}]', JSON),
    ],
)
def test_a_number_no_double_can_hold_is_400_invalid_json_even_on_the_quick_path(raw: bytes, content_type: str) -> None:
    """msgspec keeps a body as text and would let 1e400 through; orjson, which every sink decodes with, refuses it."""
    assert quick_rows(raw, content_type == NDJSON, SINKS, Limits()) is None
    error = bad(raw, content_type)
    assert (status_of(error), error.code) == (400, "invalid_json")
    assert "64-bit float" in error.body()["message"]


def test_a_three_digit_exponent_a_double_holds_or_a_string_like_e400_is_accepted() -> None:
    raw = lines({"sink": "remote", "body": {"n": 1e-300, "m": 1e300, "s": "name400"}})
    assert quick_rows(raw, True, SINKS, Limits()) is not None
    rows = parse_records(raw, NDJSON, SINKS)
    assert orjson.loads(rows[0].body) == {"n": 1e-300, "m": 1e300, "s": "name400"}


def test_malformed_json_array_is_400_invalid_json() -> None:
    error = bad(b'[{"sink": "remote"},')
    assert (status_of(error), error.code) == (400, "invalid_json")
    assert set(error.body()) == {"error", "message"}


@pytest.mark.parametrize("content_type", [NDJSON, JSON])
def test_invalid_utf8_is_400_invalid_utf8_naming_the_byte_offset(content_type: str) -> None:
    raw = b'{"sink": "remote", "body": "caf\xe9"}'
    error = bad(raw, content_type)
    assert (status_of(error), error.code) == (400, "invalid_utf8")
    assert error.detail == {"offset": raw.index(b"\xe9")}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""])
def test_wrong_content_type_is_415_unsupported_media_type(content_type: str) -> None:
    error = bad(b'{"sink": "remote"}', content_type)
    assert (status_of(error), error.code) == (415, "unsupported_media_type")
    assert "application/x-ndjson" in str(error)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"", NDJSON), (b"\n\n  \n", NDJSON), (b"[]", JSON)],
    ids=["empty-ndjson", "blank-lines-ndjson", "empty-array"],
)
def test_a_body_without_records_is_400_empty(raw: bytes, content_type: str) -> None:
    error = bad(raw, content_type)
    assert (status_of(error), error.code) == (400, "empty")


@pytest.mark.parametrize("raw", [b"", b"  \n "])
def test_an_empty_json_body_is_400_empty_like_an_empty_ndjson_body(raw: bytes) -> None:
    error = bad(raw)
    assert (status_of(error), error.code, str(error)) == (400, "empty", "the request carries no records")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'[{"sink": "remote"},', "line 1, column 21: the JSON ends before it is complete: expected the rest of"),
        (b'{"sink" "remote"}', "line 1, column 9: expected ':' after key, found '\"'"),
        (b'{"sink": "remote",}', "line 1, column 18: expected another value after the comma"),
        (b'{"sink": "remote"} {}', "line 1, column 20: expected nothing after the JSON value"),
        (b'{"sink": tru}', "line 1, column 10: expected 'true', found 't'"),
        (b"{sink: 1}", "line 1, column 2: expected a string key, found 's'"),
    ],
)
def test_a_json_syntax_error_says_where_and_what_was_expected_in_plain_words(raw: bytes, message: str) -> None:
    error = bad(raw)
    assert (status_of(error), error.code) == (400, "invalid_json")
    assert str(error).startswith(f"not valid JSON at {message}")


def test_an_ndjson_syntax_error_says_which_line_column_and_what_was_expected() -> None:
    error = bad(lines({"sink": "remote"}) + b'{"sink": "remote",}\n', NDJSON)
    assert str(error) == "line 2, column 18: expected another value after the comma (a trailing comma is not JSON)"


@pytest.mark.parametrize(
    ("raw", "content_type", "index"),
    [
        (b'[{"sink": "remote"}, 42]', JSON, 1),
        (b'[{"sink": "remote"}, "text"]', JSON, 1),
        (b"[null]", JSON, 0),
        (b"[[]]", JSON, 0),
        (b'{"sink": "remote"}\n[{"sink": "remote"}]\n', NDJSON, 1),
        (b"42", JSON, 0),
    ],
)
def test_an_item_that_is_not_an_object_is_422_naming_its_index(raw: bytes, content_type: str, index: int) -> None:
    error = bad(raw, content_type)
    assert (status_of(error), error.code) == (422, "invalid_record")
    assert error.detail == {"index": index, "field": "(item)"}


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"sink": "nowhere"}, "unknown_sink", "sink"),
        ({"body": {}}, "invalid_record", "sink"),  # missing sink
        ({"sink": 5}, "invalid_record", "sink"),
        ({"sink": None}, "invalid_record", "sink"),
        ({"sink": "remote", "method": 5}, "invalid_record", "method"),
        ({"sink": "remote", "method": "GET"}, "invalid_record", "method"),
        ({"sink": "remote", "method": "post"}, "invalid_record", "method"),
        ({"sink": "remote", "path": 5}, "invalid_record", "path"),
        ({"sink": "remote", "path": ["/x"]}, "invalid_record", "path"),
        ({"sink": "remote", "query": "a=1"}, "invalid_record", "query"),
        ({"sink": "remote", "query": [1]}, "invalid_record", "query"),
        ({"sink": "remote", "key": 5}, "invalid_record", "key"),
        ({"sink": "remote", "key": ""}, "invalid_record", "key"),
        ({"sink": "remote", "key": "k" * 513}, "invalid_record", "key"),
        ({"sink": "remote", "bogus": 1}, "invalid_record", "bogus"),  # an extra field
    ],
)
def test_a_bad_field_is_422_naming_the_item_index_and_the_field(item: dict[str, Any], code: str, field: str) -> None:
    raw = lines({"sink": "remote"}, {"sink": "audit"}, item)
    error = bad(raw, NDJSON)
    assert (status_of(error), error.code) == (422, code)
    assert error.detail == {"index": 2, "field": field}
    assert error.body() == {"error": code, "message": str(error), "index": 2, "field": field}


@pytest.mark.parametrize("value", [[1], {"x": 1}, None])
def test_a_mistyped_query_value_names_the_query_key_as_the_field(value: Any) -> None:
    # The field a client must fix is `query.a`; pydantic's internal union branch name ("str") is not a field.
    error = bad(orjson.dumps({"sink": "remote", "query": {"a": value}}))
    assert (status_of(error), error.code) == (422, "invalid_record")
    assert error.detail == {"index": 0, "field": "query.a"}


def test_the_first_bad_item_is_the_one_named() -> None:
    raw = lines({"sink": "remote"}, {"sink": "nowhere"}, {"sink": "remote", "key": 1})
    assert bad(raw, NDJSON).detail == {"index": 1, "field": "sink"}


# --- the path guard -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/v1/log",
        "/v1/things/42/feedback",
        "/a%2Fb",  # an encoded slash inside one segment stays one segment
        "/@evil.example",  # after a single '/', an '@' is just a path character, not userinfo
        "/a:b",
        "/%25",
        "/caf%C3%A9",
        "/x..y/.hidden",
    ],
)
def test_check_path_accepts_paths_that_stay_under_the_base_url(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "//evil.example/x",
        "///evil.example/x",
        "http://evil.example/x",
        "https://evil.example",
        "evil.example/x",
        "@evil.example/x",
        ":@evil.example",
        "../etc/passwd",
        "./x",
        "/a/../b",
        "/a/./b",
        "/..",
        "/a/..",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/a/%2e%2e/b",
        "/a/.%2e/b",
        "/%2e/x",
        "/%2F%2Fevil.example",
        "/%2f/evil.example",
        "/x\r\nHost: evil.example",
        "/x\nX-Injected: 1",
        "/x%0d%0aHost:%20evil.example",
        "/x%0aA:b",
        "/x%00",
        "/x\x00",
        "/x\x7f",
        "/a\\b",
        "/\\evil.example",
        "/a%5cb",
        "/a b",
        "/a%20b",
        "/a\tb",
        "/a?b=1",
        "/a#frag",
        "/a%3Fb=1",
        "/a%23frag",
    ],
)
def test_check_path_rejects_anything_that_could_leave_the_base_url(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)


@pytest.mark.parametrize("path", ["//evil.example/x", "/a/../b", "/%2e%2e/x", "/x%0d%0aHost:%20e", "/a?b"])
def test_a_dangerous_path_in_a_record_is_422_naming_the_path_field(path: str) -> None:
    error = bad(orjson.dumps([{"sink": "remote"}, {"sink": "remote", "path": path}]))
    assert (status_of(error), error.code) == (422, "invalid_record")
    assert error.detail == {"index": 1, "field": "path"}
    assert str(error).startswith("path ")


# --- the quick way and the checked way agree ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
items = st.fixed_dictionaries(
    {"sink": st.sampled_from(sorted(SINKS))},
    optional={
        "method": st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
        "path": st.sampled_from(["", "/v1/x", "/a/b-c_d.e/%41", "/v1/things/42"]),
        "query": st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(-9, 9) | st.booleans()),
        "body": json_values,
        "key": st.text(min_size=1, max_size=40),
    },
)


def as_compared(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (r.sink, r.method, r.path, r.query and orjson.loads(r.query), orjson.loads(r.body), r.key, r.kind) for r in rows
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(items, min_size=1, max_size=5), st.booleans(), st.booleans())
def test_quick_rows_equal_checked_rows_for_every_valid_request(batch: list[Any], ndjson: bool, pretty: bool) -> None:
    raw = lines(*batch) if ndjson else json.dumps(batch, indent=2 if pretty else None).encode()
    quick = quick_rows(raw, ndjson, SINKS, Limits())
    checked = checked_rows(raw, ndjson, SINKS, Limits())
    assert quick is not None
    assert as_compared(quick) == as_compared(checked)
    assert all(b"\n" not in row.body for row in quick)  # a pretty-printed body never breaks an NDJSON batch


def test_integers_beyond_64_bits_in_a_body_are_kept_digit_for_digit() -> None:
    (row,) = parse_records(b'{"sink": "remote", "body": {"tokens": 123456789012345678901234567890}}', NDJSON, SINKS)
    assert row.body == b'{"tokens": 123456789012345678901234567890}'
    pretty = b'[{"sink": "remote", "body": {\n  "tokens": 123456789012345678901234567890\n}}]'
    (row,) = parse_records(pretty, JSON, SINKS)
    assert row.body == b'{"tokens":123456789012345678901234567890}'


def test_a_body_with_many_brackets_but_shallow_nesting_takes_the_quick_way() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": str(n)}]} for n in range(100)]
    raw = orjson.dumps({"sink": "remote", "body": {"messages": messages}})
    quick = quick_rows(raw, True, SINKS, Limits())
    assert quick is not None and orjson.loads(quick[0].body) == {"messages": messages}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sink": "remote", "extra": 1}',
        b'{"sink": "nowhere"}',
        b'{"sink": "remote", "path": "/a/../b"}',
        b'{"sink": "remote", "key": ""}',
        b'{"sink": "remote", "query": {"a": [1]}}',
        b'{"sink": "remote", "body": ' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"sink": "remote", "body": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"sink": "remote", "body": "\\ud800"}',
        b"[]",
    ],
)
@pytest.mark.parametrize("ndjson", [False, True])
def test_the_quick_way_leaves_every_doubtful_request_to_the_checked_way(raw: bytes, ndjson: bool) -> None:
    assert quick_rows(raw, ndjson, SINKS, Limits()) is None
    with pytest.raises(BadInput):
        parse_records(raw, NDJSON if ndjson else JSON, SINKS)


def test_a_new_rows_repr_shows_everything_but_its_credential() -> None:
    row = NewRow("remote", "POST", "/in", None, b"{}", "k", kind="create", credential="sk-secret-key")
    shown = repr(row)
    assert "sk-secret-key" not in shown and "credential" not in shown and str(row) == shown
    assert shown.startswith("NewRow(sink='remote', method='POST', path='/in'") and "kind='create'" in shown
    assert row._replace(body=b"[]").credential == "sk-secret-key"  # kept, only not shown
