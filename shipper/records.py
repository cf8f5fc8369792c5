"""The validation boundary: bytes from a client become spool rows, or one specific error naming item and field.

Every check that decides whether a record may be spooled lives here, so ingest routes stay thin and a record that
passes cannot later make the forwarder build a request to somewhere it should not go.
Not responsible for transport (HTTP status mapping lives in ingest) or for writing (the spool).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import unquote

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from shipper.errors import ShipperError

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
JSON_TYPES = frozenset({"application/json"})
_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x20\x7f\\?#]")


class BadInput(ShipperError):
    """A request that cannot be spooled; carries what the client needs to fix it: which refusal (`code`), in words,
    and where (`detail`: index, field, limit). No HTTP status: the HTTP layer maps each code to one (responses.py)."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": str(self), **self.detail}


class NewRow(NamedTuple):
    """A validated record, ready to append: what the forwarder will replay against the sink.

    A NamedTuple, not a frozen dataclass: one is built per record on the ingest path, and a frozen dataclass's
    `__init__` (one `object.__setattr__` per field) took 1.6 µs of it, a tuple 0.3 µs."""

    sink: str
    method: str
    path: str
    query: bytes | None
    body: bytes
    key: str | None
    scope: str | None = None
    after: str | None = None
    kind: str | None = None
    credential: str | None = None  # the remote's API key; stored once, never logged (not in the repr)
    records: int = 1  # more than one: a bundle, whose body is its records' bodies joined by newlines
    due: float = 0.0  # epoch seconds before which it is not handed out (0: at once); an LLM span held for its logs

    def __repr__(self) -> str:
        shown = self._asdict()
        del shown["credential"]
        return "NewRow(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"


@functools.lru_cache(maxsize=4096)
def check_path(path: str) -> str:
    """Reject any path that could leave the sink's base URL: another host, a parent directory, a smuggled header."""
    if not path:
        return path
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("must start with a single '/'")
    if _FORBIDDEN_IN_PATH.search(path):
        raise ValueError("must not contain spaces, control characters, '\\', '?' or '#'")
    decoded = unquote(path)
    if _FORBIDDEN_IN_PATH.search(decoded) or decoded.startswith("//"):
        raise ValueError("must not hide forbidden characters in percent-encoding")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise ValueError("must not contain '.' or '..' segments")
    return path


class RecordIn(BaseModel):
    """One item of `POST /v1/records`."""

    model_config = ConfigDict(extra="forbid")

    sink: StrictStr
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: StrictStr = ""
    query: dict[StrictStr, Any] | None = None
    body: Any = None
    key: StrictStr | None = Field(None, min_length=1, max_length=512)


def _field_of(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(item)"
    return where, first["msg"]


def to_row(item: Any, index: int, sinks: Collection[str]) -> NewRow:
    """Validate one decoded item; raise BadInput naming its index and field."""
    if not isinstance(item, dict):
        raise BadInput("invalid_record", "each record must be a JSON object", index=index, field="(item)")
    try:
        record = RecordIn.model_validate(item)
        path = check_path(record.path)
    except ValidationError as exc:
        where, msg = _field_of(exc)
        raise BadInput("invalid_record", msg, index=index, field=where) from None
    except ValueError as exc:
        raise BadInput("invalid_record", f"path {exc}", index=index, field="path") from None
    for name, value in (record.query or {}).items():
        if not isinstance(value, str | int | float):  # bool is an int
            message = "query values must be strings, numbers or booleans"
            raise BadInput("invalid_record", message, index=index, field=f"query.{name}")
    if record.sink not in sinks:
        raise BadInput("unknown_sink", f"no sink named {record.sink!r}", index=index, field="sink")
    query = orjson.dumps(record.query) if record.query else None
    return NewRow(record.sink, record.method, path, query, orjson.dumps(record.body), record.key)


def check_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("invalid_utf8", f"body is not valid UTF-8 at byte {exc.start}", offset=exc.start) from None


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask of the daemon; each limit has its own error code."""

    max_line_bytes: int = 1024 * 1024
    max_items: int = 10_000
    max_depth: int = 128


def too_deep(value: Any, limit: int) -> bool:
    """Whether JSON nesting exceeds `limit` levels; iterative, so hostile input cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_depth(raw: bytes, value: Any, limits: Limits, **where: Any) -> None:
    # Counting brackets is C-speed; only a body with enough of them is walked.
    if raw.count(b"[") + raw.count(b"{") > limits.max_depth and too_deep(value, limits.max_depth):
        raise BadInput("too_deep", f"JSON nested deeper than {limits.max_depth} levels", **where)


# orjson's complaints that say what went wrong but not what a client should have sent.
_JSON_WORDS = {
    "unexpected end of data": "the JSON ends before it is complete: expected the rest of a string, array or object",
    "trailing comma is not allowed": "expected another value after the comma (a trailing comma is not JSON)",
    "unexpected content after document": "expected nothing after the JSON value (send several as an array or NDJSON)",
    "number is infinity when parsed as double": "expected a number a 64-bit float can hold",
}


def json_words(exc: orjson.JSONDecodeError) -> str:
    """What a client should have sent, in plain words: `expected ':' after key, found '1'`."""
    words = _JSON_WORDS.get(exc.msg)
    if words is not None:
        return words
    words = exc.msg.removeprefix("unexpected character, ").removeprefix("invalid literal, ")
    return f"{words}, found {exc.doc[exc.pos]!r}" if 0 <= exc.pos < len(exc.doc) else words


def _ndjson_items(raw: bytes, limits: Limits) -> Iterator[tuple[int, Any]]:
    index = 0
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        if len(line) > limits.max_line_bytes:
            message = f"line {line_no} is longer than {limits.max_line_bytes} bytes"
            raise BadInput("line_too_long", message, index=index, line=line_no)
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            message = f"line {line_no}, column {exc.colno}: {json_words(exc)}"
            raise BadInput("invalid_json", message, index=index, line=line_no) from None
        check_depth(line, value, limits, index=index, line=line_no)
        yield index, value
        index += 1


def _json_items(raw: bytes, limits: Limits) -> list[Any]:
    if not raw.strip():
        return []  # no records, as an NDJSON body of blank lines: `empty`, not a JSON syntax error
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"not valid JSON at line {exc.lineno}, column {exc.colno}: {json_words(exc)}"
        raise BadInput("invalid_json", message) from None
    check_depth(raw, value, limits)
    return value if isinstance(value, list) else [value]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """RecordIn's shape for msgspec, which decodes and checks a valid item in one pass and keeps its body as the
    client's JSON text: no parse into objects and back, and integers beyond 64 bits survive. An item it refuses goes
    the checked way, through RecordIn, whose errors name the field."""

    sink: str
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = ""
    query: dict[str, str | int | float | bool] | None = None
    body: msgspec.Raw = msgspec.Raw(b"null")
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_ENVELOPES = msgspec.json.Decoder(list[_Envelope] | _Envelope)


def _body_fits(body: bytes, limit: int) -> bool:
    """Whether a body nests at most `limit` levels and every number in it fits a double, as orjson (every sink's
    decoder) needs: the envelope's decoder keeps the body as raw text and so lets 1e400 through. One msgspec decode
    answers both (it refuses a number out of range); counting brackets spares walking most bodies."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        return False
    return body.count(b"[") + body.count(b"{") <= limit or not too_deep(value, limit)


def _quick_row(item: _Envelope, sinks: Collection[str], limits: Limits) -> NewRow | None:
    # The body sits one level inside the item and the item may sit inside an array: a body closer than that to the
    # limit, or anything else in doubt, is left to the checked way, which names the error.
    body = bytes(item.body)
    if item.sink not in sinks or not _body_fits(body, limits.max_depth - 2):
        return None
    try:
        path = check_path(item.path)
    except ValueError:
        return None
    if b"\n" in body:  # pretty-printed inside a JSON array: one line, or it would break NDJSON batches and files
        body = msgspec.json.format(body, indent=-1)
    query = msgspec.json.encode(item.query) if item.query else None
    return NewRow(item.sink, item.method, path, query, body, item.key)


def quick_rows(raw: bytes, ndjson: bool, sinks: Collection[str], limits: Limits) -> list[NewRow] | None:
    """The rows of a request in which every item is valid, or None: then `checked_rows` finds and names the error."""
    try:
        if ndjson:
            lines = [line for line in raw.split(b"\n") if line.strip()]
            if any(len(line) > limits.max_line_bytes for line in lines):
                return None
            items = [_ENVELOPE.decode(line) for line in lines]
        else:
            decoded = _ENVELOPES.decode(raw)
            items = decoded if isinstance(decoded, list) else [decoded]
    except (msgspec.MsgspecError, RecursionError):  # msgspec's own depth guard raises RecursionError
        return None
    if not items or len(items) > limits.max_items:
        return None
    rows = []
    for item in items:
        row = _quick_row(item, sinks, limits)
        if row is None:
            return None
        rows.append(row)
    return rows


def checked_rows(raw: bytes, ndjson: bool, sinks: Collection[str], limits: Limits) -> list[NewRow]:
    """Decode item by item with orjson and RecordIn; raise BadInput naming the first bad item and its field."""
    items: Iterator[tuple[int, Any]] | enumerate[Any] = (
        _ndjson_items(raw, limits) if ndjson else enumerate(_json_items(raw, limits))
    )
    rows = []
    for index, item in items:
        if index >= limits.max_items:
            raise BadInput("too_many_items", f"more than {limits.max_items} records in one request", index=index)
        rows.append(to_row(item, index, sinks))
    if not rows:
        raise BadInput("empty", "the request carries no records")
    return rows


def parse_records(raw: bytes, content_type: str, sinks: Collection[str], limits: Limits | None = None) -> list[NewRow]:
    """Decode a whole request body into rows; all of it or none of it."""
    limits = limits or Limits()
    if content_type not in NDJSON_TYPES and content_type not in JSON_TYPES:
        raise BadInput(
            "unsupported_media_type",
            f"content type {content_type or '(none)'!r} is not application/x-ndjson or application/json",
        )
    check_utf8(raw)
    ndjson = content_type in NDJSON_TYPES
    return quick_rows(raw, ndjson, sinks, limits) or checked_rows(raw, ndjson, sinks, limits)
