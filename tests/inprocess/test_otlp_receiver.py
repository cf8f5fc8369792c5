"""The OTLP receiver in process, on a real local port, appending to the in-memory queue: an LLM span becomes one row
per routed vendor sink before the 200; what an exporter must not send again is in `partial_success`; what does not
parse is a 400 and what the spool cannot take now a 503 with Retry-After, each a google.rpc.Status in the request's
own encoding, and nothing is appended."""

from __future__ import annotations

import gzip
import stat
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shipper.config.listeners import IngestConfig
from shipper.config.otlp import OtlpConfig
from shipper.config.sinks import VendorSinkConfig
from shipper.enrich.redact import Redactor
from shipper.errors import DiskFull, SpoolError, SpoolFull
from shipper.ingest.counters import IngestCounters
from shipper.ingest.guard import InFlight
from shipper.ingest.otlp import build_otlp_app, otlp_server
from shipper.latency import IngestTimers
from shipper.otlp import wire
from shipper.otlp.join import PART_KIND, SPAN_PATH, part_key
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.sinks.routing import Routing
from shipper.sinks.vendor import VendorSink
from shipper.vendors import VENDORS
from tests.otlp_spans import (
    NEW_GENERATION,
    NO_CONTENT,
    OLD_EVENTS,
    OPENINFERENCE,
    SPAN,
    TRACE,
    export,
    log_record,
    logs_export,
    span,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
LIMIT = 64 * 1024
MAX_SPANS = 5
SINKS = {"fp": "freeplay", "hl": "humanloop", "kw": "keywordsai"}


class RefusingQueue(MemoryQueue):
    """The in-memory queue, failing every append with `failure` while it is set."""

    failure: SpoolError | None = None

    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        if self.failure is not None:
            raise self.failure
        return await super().append(rows)


@dataclass
class Intake:
    spool: RefusingQueue = field(default_factory=RefusingQueue)
    timers: IngestTimers = field(default_factory=IngestTimers)
    stopping: bool = False


@dataclass
class Served:
    client: TestClient
    intake: Intake
    counters: IngestCounters


def vendor_sink(name: str, vendor: str, queue: MemoryQueue) -> VendorSink:
    project = "p1" if vendor == "freeplay" else ""
    config = VendorSinkConfig(type=vendor, base_url="http://127.0.0.1:9", api_key_env="SINK_KEY", project_id=project)
    return VendorSink(name, VENDORS[vendor], config, queue, {"SINK_KEY": f"{name}-sink-key"})


@asynccontextmanager
async def serving(vendors: dict[str, str], forwarding: tuple[str, ...] = ()) -> AsyncIterator[Served]:
    """The receiver routing to these vendor sinks (name: vendor) and these otlp sinks."""
    intake, counters = Intake(), IngestCounters()
    running = {name: vendor_sink(name, vendor, intake.spool) for name, vendor in vendors.items()}
    routing = Routing(frozenset([*vendors, *forwarding]), vendors=running)
    ingest = IngestConfig(http="127.0.0.1:0", unix="", max_body_bytes=LIMIT, max_items=MAX_SPANS)
    otlp = OtlpConfig(http="127.0.0.1:0", route=(*vendors, *forwarding))
    app = build_otlp_app(intake, routing, counters, ingest, otlp, Redactor(), InFlight())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(auto_decompress=False)
    async with TestClient(server) as client:
        yield Served(client, intake, counters)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(SINKS) as running:
        yield running


def two_spans() -> bytes:
    http = span({"http.request.method": "GET", "url.full": "http://127.0.0.1/"}, name="GET", span_id=bytes(7) + b"\x09")
    return export(span(NEW_GENERATION), http).SerializeToString()


async def test_an_llm_span_is_one_row_per_routed_sink_before_the_200_and_an_http_span_is_passed_over(
    served: Served,
) -> None:
    response = await served.client.post("/v1/traces", data=two_spans(), headers=PROTOBUF)
    assert response.status == 200 and response.content_type == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(await response.read()) == ExportTraceServiceResponse()
    rows = list(served.intake.spool.rows.values())
    assert [(row.sink, row.path) for row in rows] == [
        ("fp", f"/v2/projects/p1/sessions/{rows[0].path.split('/')[5]}/completions"),
        ("hl", "/prompts/log"),
        ("kw", "/api/request-logs/create/"),
    ]
    assert all(orjson.loads(row.body)["messages" if row.sink != "kw" else "prompt_messages"] for row in rows)
    assert served.counters.otlp == {("traces", "mapped"): 1, ("traces", "passed_over"): 1}
    assert served.counters.received == {"fp": 1, "hl": 1, "kw": 1}


async def test_otlp_json_is_read_with_hex_ids_and_answered_in_json(served: Served) -> None:
    body = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": TRACE.hex(), "spanId": SPAN.hex(), "name": "chat", "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
            "attributes": [{"key": k, "value": {"stringValue": v} if isinstance(v, str) else {"intValue": str(v)}}
                           for k, v in OPENINFERENCE.items() if not isinstance(v, float)],
        }]}]}]
    }  # fmt: skip
    response = await served.client.post("/v1/traces", data=orjson.dumps(body), headers=JSON)
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == {}
    kw = next(row for row in served.intake.spool.rows.values() if row.sink == "kw")
    assert orjson.loads(kw.body)["trace_unique_id"] == TRACE.hex()


async def test_refused_spans_are_counted_in_partial_success_and_the_others_are_spooled(served: Served) -> None:
    bad = span(NEW_GENERATION, trace_id=b"\x01", name="bad")
    sent = export(span(NEW_GENERATION), span(NO_CONTENT, span_id=bytes(7) + b"\x02"), bad).SerializeToString()
    before = time.time()
    response = await served.client.post("/v1/traces", data=sent, headers=PROTOBUF)
    assert response.status == 200
    answer = ExportTraceServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message == (
        "1 span(s) refused; the first: span 'bad': trace and span ids must be 16 and 8 bytes"
    )
    rows = list(served.intake.spool.rows.values())
    held = [row for row in rows if row.path == SPAN_PATH]  # the span without messages waits for its logs
    assert len(rows) == 6 and sorted(row.sink for row in held) == ["fp", "hl", "kw"]
    due = {row.id: served.intake.spool._due.get(row.id, 0.0) for row in rows}
    assert all(before + 5.0 <= due[row.id] <= time.time() + 5.0 for row in held)
    assert served.counters.otlp == {("traces", "mapped"): 2, ("traces", "held"): 1, ("traces", "refused"): 1}


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, 400, "invalid_protobuf"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "W47/95gDgQPSabYzgT/GDA=="}]}]}]}',
            JSON,
            400,
            "invalid_id",
        ),
        (gzip.compress(b"\0" * (LIMIT + 1)), {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "body_too_large"),
        (b"\x1f\x8b not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "invalid_encoding"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
    ids=["bad-protobuf", "base64-id", "gzip-bomb", "bad-gzip", "text"],
)
async def test_what_does_not_parse_is_refused_as_a_status_in_the_requests_encoding(
    served: Served, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await served.client.post("/v1/traces", data=body, headers=headers)
    assert response.status == status and "Retry-After" not in response.headers
    raw = await response.read()
    message = orjson.loads(raw)["message"] if headers is JSON else Status.FromString(raw).message
    assert message and served.intake.spool.rows == {} and served.counters.rejected == {reason: 1}


async def test_a_gzipped_export_is_inflated(served: Served) -> None:
    headers = {**PROTOBUF, "Content-Encoding": "gzip"}
    response = await served.client.post("/v1/traces", data=gzip.compress(two_spans()), headers=headers)
    assert response.status == 200 and len(served.intake.spool.rows) == 3


@pytest.mark.parametrize("failure", [SpoolFull("spool is full"), DiskFull("disk is full")], ids=["full", "disk"])
async def test_a_spool_that_cannot_take_the_rows_now_is_a_503_with_retry_after(
    served: Served, failure: SpoolError
) -> None:
    served.intake.spool.failure = failure
    response = await served.client.post("/v1/traces", data=two_spans(), headers=PROTOBUF)
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert Status.FromString(await response.read()).code == 14  # UNAVAILABLE: the exporter retries
    assert served.counters.otlp == {}  # counted when the retry is taken, not now


async def test_content_log_records_are_spooled_as_parts_of_their_span_and_other_log_records_passed_over(
    served: Served,
) -> None:
    other = log_record("http.request", "GET /")
    response = await served.client.post(
        "/v1/logs", data=logs_export(*OLD_EVENTS, other).SerializeToString(), headers=PROTOBUF
    )
    assert response.status == 200
    assert ExportLogsServiceResponse.FromString(await response.read()) == ExportLogsServiceResponse()
    rows = list(served.intake.spool.rows.values())
    assert len(rows) == 9 and {(row.kind, row.key) for row in rows} == {(PART_KIND, part_key(TRACE.hex(), SPAN.hex()))}
    assert served.counters.otlp == {("logs", "held"): 3, ("logs", "passed_over"): 1}


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/v1/traces", 405), ("POST", "/v1/metrics", 404)])
async def test_other_routes_are_refused(served: Served, method: str, path: str, status: int) -> None:
    response = await served.client.request(method, path, headers=PROTOBUF)
    assert response.status == status and Status.FromString(await response.read()).message


async def test_once_shutdown_begins_exports_get_503_with_retry_after(served: Served) -> None:
    served.intake.stopping = True
    response = await served.client.post("/v1/traces", data=two_spans(), headers=JSON)
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert await response.json() == {"code": 14, "message": "stopping: shipper is shutting down; send to its successor"}
    assert served.intake.spool.rows == {}


async def test_more_spans_than_max_items_in_one_request_is_a_413_and_nothing_is_spooled(served: Served) -> None:
    at_limit = export(*(span(NEW_GENERATION, span_id=bytes([0] * 7 + [n + 1])) for n in range(MAX_SPANS)))
    response = await served.client.post("/v1/traces", data=at_limit.SerializeToString(), headers=PROTOBUF)
    assert response.status == 200 and len(served.intake.spool.rows) == 3 * MAX_SPANS
    over = export(*(span(NEW_GENERATION) for _ in range(MAX_SPANS + 1)))
    response = await served.client.post("/v1/traces", data=over.SerializeToString(), headers=PROTOBUF)
    assert (
        response.status == 413 and "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in Status.FromString(await response.read()).message
    )
    assert len(served.intake.spool.rows) == 3 * MAX_SPANS and served.counters.rejected == {"too_many_items": 1}


async def test_an_otlp_sink_gets_the_export_request_whole_beside_the_vendor_records() -> None:
    async with serving({"kw": "keywordsai"}, ("col",)) as served:
        response = await served.client.post("/v1/traces", data=two_spans(), headers=PROTOBUF)
        assert response.status == 200
        kw, col = served.intake.spool.rows.values()
        assert (kw.sink, col.sink, col.path, col.key) == ("kw", "col", "/v1/traces", None)
        assert wire.decode(col.body, wire.JSON, ExportTraceServiceRequest).SerializeToString() == two_spans()
        assert served.counters.otlp == {
            ("traces", "mapped"): 1, ("traces", "passed_over"): 1, ("traces", "forwarded"): 2,
        }  # fmt: skip


async def test_with_only_otlp_sinks_every_span_is_forwarded_and_none_is_mapped_or_refused() -> None:
    async with serving({}, ("col",)) as served:
        empty = span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, name="empty")
        response = await served.client.post("/v1/traces", data=export(empty).SerializeToString(), headers=PROTOBUF)
        assert ExportTraceServiceResponse.FromString(await response.read()) == ExportTraceServiceResponse()
        assert [row.sink for row in served.intake.spool.rows.values()] == ["col"]
        assert served.counters.otlp == {("traces", "forwarded"): 1}


async def test_log_records_go_whole_to_an_otlp_sink_and_are_not_refused() -> None:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
    async with serving({"kw": "keywordsai"}, ("col",)) as served:
        response = await served.client.post("/v1/logs", data=logs.SerializeToString(), headers=PROTOBUF)
        assert ExportLogsServiceResponse.FromString(await response.read()) == ExportLogsServiceResponse()
        (row,) = served.intake.spool.rows.values()
        assert (row.sink, row.path) == ("col", "/v1/logs")
        assert wire.decode(row.body, wire.JSON, ExportLogsServiceRequest) == logs
        assert served.counters.otlp == {("logs", "forwarded"): 1, ("logs", "passed_over"): 1}


async def test_one_process_serves_the_receiver_on_its_own_unix_socket_with_ingests_mode(tmp_path: Path) -> None:
    intake, counters = Intake(), IngestCounters()
    routing = Routing(frozenset(["kw"]), vendors={"kw": vendor_sink("kw", "keywordsai", intake.spool)})
    ingest = IngestConfig(http="127.0.0.1:0", unix="", max_body_bytes=LIMIT, max_items=MAX_SPANS, unix_mode=0o600)
    path = tmp_path / "otlp.sock"
    otlp = OtlpConfig(unix=str(path), route=("kw",))
    server = otlp_server(
        build_otlp_app(intake, routing, counters, ingest, otlp, Redactor(), InFlight()), ingest, otlp, ()
    )
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and server.addresses == [f"http://unix:{path}:"]
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
            session.post("http://otlp/v1/traces", data=two_spans(), headers=PROTOBUF) as response,
        ):
            assert response.status == 200
    finally:
        await server.stop()
    assert [row.sink for row in intake.spool.rows.values()] == ["kw"] and not path.exists()
