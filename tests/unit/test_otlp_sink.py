"""The passthrough sink's requests: the stored OTLP/JSON export request sent to `base_url` + its signal's path, as
protobuf (the same request, re-encoded) or as the JSON itself, with the configured auth and headers; a stored body
that no longer parses (redaction masked an id) is dead-lettered, never an exception out of `send`."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.config.sinks import OtlpSinkConfig
from shipper.core.retry import Verdict
from shipper.core.rows import SpoolRow
from shipper.otlp.wire import to_json
from shipper.sinks.otlp import OtlpSink
from tests.otlp_spans import NEW_GENERATION, TRACE, export, span


def sink(**settings: object) -> OtlpSink:
    config = OtlpSinkConfig.model_validate({"type": "otlp", "base_url": "https://api.example.com/api/", **settings})
    return OtlpSink("col", config, {"COL_AUTH": "Bearer col-key"})


def row(path: str, body: bytes) -> SpoolRow:
    return SpoolRow(1, "col", None, "POST", path, None, body, 0.0, 1)


def test_a_traces_row_is_sent_as_the_same_request_in_protobuf_with_the_configured_auth() -> None:
    sent = export(span(NEW_GENERATION))
    request = sink(auth_env="COL_AUTH", headers={"X-Org": "o1"}).build_request([row("/v1/traces", to_json(sent))])
    assert (request.method, request.url) == ("POST", "https://api.example.com/api/v1/traces")
    assert request.headers == {
        "X-Org": "o1",
        "Authorization": "Bearer col-key",
        "Content-Type": "application/x-protobuf",
    }
    assert request.body is not None and ExportTraceServiceRequest.FromString(request.body) == sent


def test_a_logs_row_is_sent_as_its_json_when_the_endpoint_wants_json() -> None:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(trace_id=TRACE).body.string_value = "hi"
    stored = to_json(logs)
    request = sink(encoding="json").build_request([row("/v1/logs", stored)])
    assert (request.url, request.body, request.headers["Content-Type"]) == (
        "https://api.example.com/api/v1/logs", stored, "application/json",
    )  # fmt: skip
    assert orjson.loads(stored)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] == TRACE.hex()


async def test_a_stored_request_that_no_longer_parses_is_dead_lettered() -> None:
    masked = orjson.loads(to_json(export(span(NEW_GENERATION))))
    masked["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "[REDACTED]"
    outcome = await sink().send([row("/v1/traces", orjson.dumps(masked))])
    assert outcome.verdict is Verdict.REJECT and "no longer parses" in outcome.detail


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"base_url": "ftp://x"}, "must be an http:// or https:// URL"), ({"encoding": "thrift"}, "encoding")],
)
def test_a_bad_otlp_sink_is_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sink(**settings)
