"""OTLP/HTTP's two encodings: protobuf, and OTLP/JSON with hex ids and int64s as strings (which protobuf's own JSON
parser would misread); refusals that name what is wrong; answers in the request's own encoding."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shipper.otlp import wire
from shipper.records import BadInput
from tests.otlp_spans import END_NS, NEW_GENERATION, PARENT, SPAN, START_NS, TRACE, export, span


def json_export(**ids: Any) -> dict[str, Any]:
    """One span as OTLP/JSON writes it: hex ids, int64 times as strings, the kind as a number, camelCase."""
    one = {
        "traceId": TRACE.hex(), "spanId": SPAN.hex(), "parentSpanId": PARENT.hex(), "name": "chat gpt-4o-mini",
        "kind": 3, "startTimeUnixNano": str(START_NS), "endTimeUnixNano": str(END_NS),
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}],
        "links": [{"traceId": TRACE.hex(), "spanId": PARENT.hex()}], "someFieldFromTheFuture": {"x": 1},
        **ids,
    }  # fmt: skip
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": [one]}]}]}


def test_protobuf_decodes_as_sent() -> None:
    sent = export(span(NEW_GENERATION))
    assert wire.decode(sent.SerializeToString(), wire.PROTOBUF, ExportTraceServiceRequest) == sent


def test_otlp_json_hex_ids_and_string_int64s_decode_to_the_same_bytes_and_unknown_fields_are_ignored() -> None:
    decoded = wire.decode(orjson.dumps(json_export()), wire.JSON, ExportTraceServiceRequest)
    got = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert (got.trace_id, got.span_id, got.parent_span_id) == (TRACE, SPAN, PARENT)
    assert (got.start_time_unix_nano, got.end_time_unix_nano, got.kind) == (START_NS, END_NS, 3)
    assert got.attributes[0].value.int_value == 12
    assert (got.links[0].trace_id, got.links[0].span_id) == (TRACE, PARENT)


def test_an_empty_parent_id_means_a_root_span() -> None:
    decoded = wire.decode(orjson.dumps(json_export(parentSpanId="")), wire.JSON, ExportTraceServiceRequest)
    assert decoded.resource_spans[0].scope_spans[0].spans[0].parent_span_id == b""


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ({"traceId": base64.b64encode(TRACE).decode()}, "traceId"),  # what protobuf's JSON printer writes
        ({"spanId": base64.b64encode(SPAN).decode()}, "spanId"),
        ({"spanId": "zz" * 8}, "spanId"),  # the right length, not hex
        ({"parentSpanId": PARENT.hex() + "00"}, "parentSpanId"),
        ({"traceId": 12}, "traceId"),
    ],
    ids=["base64-trace", "base64-span", "not-hex", "too-long", "not-text"],
)
def test_an_id_that_is_not_hex_of_its_length_refuses_the_request_naming_it(ids: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput) as refused:
        wire.decode(orjson.dumps(json_export(**ids)), wire.JSON, ExportTraceServiceRequest)
    assert refused.value.code == "invalid_id" and refused.value.detail == {"field": field}
    assert "hex digits in OTLP/JSON (not base64)" in str(refused.value)


def test_log_record_ids_are_hex_too() -> None:
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": TRACE.hex(), "spanId": SPAN.hex()}]}]}]}
    decoded = wire.decode(orjson.dumps(body), wire.JSON, ExportLogsServiceRequest)
    record = decoded.resource_logs[0].scope_logs[0].log_records[0]
    assert (record.trace_id, record.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize(
    ("raw", "encoding", "code"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", wire.PROTOBUF, "invalid_protobuf"),  # a length past the end
        (b"{", wire.JSON, "invalid_json"),
        (b"[]", wire.JSON, "invalid_json"),
        (b'{"resourceSpans": "no"}', wire.JSON, "invalid_json"),
        (b"{}", "text/plain", "unsupported_media_type"),
    ],
    ids=["truncated-protobuf", "broken-json", "json-array", "wrong-type", "text"],
)
def test_a_body_that_does_not_parse_is_refused_with_its_code(raw: bytes, encoding: str, code: str) -> None:
    with pytest.raises(BadInput) as refused:
        wire.decode(raw, encoding, ExportTraceServiceRequest)
    assert refused.value.code == code


def test_a_partial_success_is_answered_in_the_requests_encoding() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "why"
    assert orjson.loads(wire.encode(response, wire.JSON)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}  # int64 as a string, as OTLP/JSON writes it
    }
    assert ExportTraceServiceResponse.FromString(wire.encode(response, wire.PROTOBUF)) == response
    assert wire.encode(ExportTraceServiceResponse(), wire.JSON) == b"{}"


@pytest.mark.parametrize("text", ["short", "é" * 100])
def test_a_failure_is_a_google_rpc_status_in_either_encoding(text: str) -> None:
    parsed = Status.FromString(wire.status(wire.INVALID_ARGUMENT, text, wire.PROTOBUF))
    assert (parsed.code, parsed.message) == (3, text)
    assert orjson.loads(wire.status(wire.UNAVAILABLE, text, wire.JSON)) == {"code": 14, "message": text}


def test_to_json_writes_otlp_json_that_decodes_to_the_same_request() -> None:
    sent = export(span(NEW_GENERATION))
    written = orjson.loads(wire.to_json(sent))
    one = written["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (one["traceId"], one["spanId"], one["kind"]) == (TRACE.hex(), SPAN.hex(), 3)  # hex ids, integer enums
    assert one["startTimeUnixNano"] == str(START_NS)
    assert wire.decode(wire.to_json(sent), wire.JSON, ExportTraceServiceRequest) == sent
