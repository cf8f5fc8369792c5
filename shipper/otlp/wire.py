"""OTLP/HTTP on the wire: an export request's bytes in, in either encoding, and the answers in the request's own.

Protobuf (`application/x-protobuf`) is read by opentelemetry-proto's generated classes. OTLP/JSON
(`application/json`) is protobuf's JSON mapping with two differences the specification makes: trace and span ids
are hex, not base64 (protobuf's own JSON parser would read a hex id as base64 and get other bytes, or fail), and
enums are integers. So ids are turned from hex into base64 before protobuf's parser sees them, and any id that is
not hex of its exact length refuses the request, naming the field: an exporter writing base64 ids is told so.
Unknown fields are ignored, as the specification asks of receivers. Every answer, success or failure, is in the
encoding the request came in: an `Export…ServiceResponse` (with `partial_success` when some items were refused) or
a `google.rpc.Status`. Not responsible for HTTP (shipper/ingest/otlp.py) or for what spans mean (genai.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from shipper.records import BadInput, json_words

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# gRPC status codes, as google.rpc.Status carries them.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16
# Id fields by their length in bytes, in both spellings protobuf's JSON parser accepts.
ID_BYTES = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}
# Where ids sit: spans and their links (traces), log records (logs).
_CONTAINERS = (
    ("resourceSpans", "resource_spans", "scopeSpans", "scope_spans", "spans", "spans"),
    ("resourceLogs", "resource_logs", "scopeLogs", "scope_logs", "logRecords", "log_records"),
)

M = TypeVar("M", bound=Message)


def decode(raw: bytes, content_type: str, message: type[M]) -> M:
    """The export request; BadInput for a body that does not parse (400) or an encoding OTLP does not have (415)."""
    parsed = message()
    if content_type == PROTOBUF:
        try:
            parsed.ParseFromString(raw)
        except DecodeError as exc:
            raise BadInput("invalid_protobuf", f"the body is not a {message.DESCRIPTOR.name}: {exc}") from None
        return parsed
    if content_type == JSON:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadInput("invalid_json", f"body is not JSON: {json_words(exc)}") from None
        if not isinstance(data, dict):
            raise BadInput("invalid_json", f"the body must be a JSON object (a {message.DESCRIPTOR.name})")
        _ids_to_base64(data)
        try:
            return json_format.ParseDict(data, parsed, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise BadInput("invalid_json", f"the body is not a {message.DESCRIPTOR.name}: {exc}") from None
    raise BadInput("unsupported_media_type", f"send {PROTOBUF} or {JSON}, not {content_type or 'no Content-Type'}")


def to_json(message: Message) -> bytes:
    """OTLP/JSON of an export request, as an exporter writes it: hex ids, enums as integers, int64s as strings."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    for item in _items(data):
        for name in ID_BYTES:
            if isinstance(item.get(name), str):
                item[name] = base64.b64decode(item[name]).hex()
    return orjson.dumps(data)


def _ids_to_base64(data: dict[str, Any]) -> None:
    for item in _items(data):
        _fix(item)


def _items(data: dict[str, Any]) -> Iterator[Any]:
    """Every object that holds ids: spans, their links, log records."""
    for outer, outer_, middle, middle_, inner, inner_ in _CONTAINERS:
        for resource in _list(data, outer, outer_):
            for scope in _list(resource, middle, middle_):
                for item in _list(scope, inner, inner_):
                    yield item
                    yield from _list(item, "links", "links")


def _list(data: Any, name: str, other: str) -> list[Any]:
    found = data.get(name, data.get(other)) if isinstance(data, dict) else None
    return found if isinstance(found, list) else []


def _fix(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for name, size in ID_BYTES.items():
        hex_id = item.get(name)
        if hex_id is None or hex_id == "":
            continue
        if not isinstance(hex_id, str) or len(hex_id) != 2 * size:
            raise _bad_id(name, hex_id, size)
        try:
            item[name] = base64.b64encode(bytes.fromhex(hex_id)).decode()
        except ValueError:
            raise _bad_id(name, hex_id, size) from None


def _bad_id(name: str, found: Any, size: int) -> BadInput:
    message = f"{name} must be {2 * size} hex digits in OTLP/JSON (not base64), got {str(found)[:80]!r}"
    return BadInput("invalid_id", message, field=name)


def encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return orjson.dumps(json_format.MessageToDict(message))
    return message.SerializeToString()


def status(code: int, text: str, content_type: str) -> bytes:
    """A google.rpc.Status (code and message): what an OTLP/HTTP failure carries, in the request's encoding.
    Written by hand (two fields) rather than adding googleapis-common-protos for one message."""
    if content_type == JSON:
        return orjson.dumps({"code": code, "message": text})
    encoded = text.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(encoded)) + encoded


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)
