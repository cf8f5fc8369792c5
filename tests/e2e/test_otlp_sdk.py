"""An app instrumented with the real OpenTelemetry SDK exports GenAI spans through the real OTLP/HTTP protobuf
exporter to shipper (a subprocess, in its default shape: a supervisor binding the OTLP listener, an ingest and a
delivery process), and the strict fake Freeplay, Humanloop and Keywords AI receive each LLM call as their own record,
with its messages, model, tokens and timing. The spans are set by hand (with each convention's real attribute names)
or made by the real instrumentations (the official `opentelemetry-instrumentation-openai-v2` and OpenLLMetry's
`opentelemetry-instrumentation-openai`) around the real `openai` client calling a local fake OpenAI. A span
acknowledged is never lost: shipper killed with -9 before any vendor was reachable still delivers it after a restart.
An `otlp` sink gets the exporter's requests whole, retried until the collector takes them.
"""

from __future__ import annotations

import asyncio
import re
import stat
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from shipper.spool.reader import read
from tests.fakes.openai import MODEL, OpenAIFake
from tests.fakes.rig import FP_SINK_KEY, HL_SINK_KEY, KW_SINK_KEY, Rig, vendor_rig
from tests.otlp_spans import NEW_GENERATION, NO_CONTENT, OLD_EVENTS, OLD_GENERATION, OPENINFERENCE, logs_export, span
from tests.otlp_spans import export as export_request
from tests.support import FakeRemote, free_port, metric, scrape, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.supervised]

PROJECT = "11111111-2222-3333-4444-555555555555"
ASKED = [{"role": "system", "content": "Be terse"}, {"role": "user", "content": "What is 2+2?"}]
REPLY = {"role": "assistant", "content": "4"}
CONVENTIONS = {"new": NEW_GENERATION, "old": OLD_GENERATION, "openinference": OPENINFERENCE}
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "calc", "gen_ai.conversation.id": "conv-1"}
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add", "gen_ai.tool.call.arguments": '{"a": 2}'}


@dataclass
class Otlp:
    rig: Rig
    endpoint: str


@pytest.fixture
async def otlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Otlp]:
    endpoint = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("SHIPPER__SINKS__FP__PROJECT_ID", PROJECT)  # the rig writes the sinks; the project comes here
    # A span without messages waits a second for them on the logs signal (5 s by default).
    extra = f'[otlp]\nhttp = "{endpoint}"\nroute = ["fp", "hl", "kw"]\nlogs_wait = 1.0\n'
    async with vendor_rig(tmp_path, start_fakes=False, extra=extra) as rig:
        yield Otlp(rig, endpoint)


def app_spans() -> Sequence[ReadableSpan]:
    """What an instrumented app records: an agent span, and inside it one chat span per convention and a tool call
    (through an HTTP client span no vendor records)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "calc-app"}))
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("calc-app")
    with tracer.start_as_current_span("invoke_agent calc", attributes=AGENT):
        http = {"http.request.method": "POST"}
        with (
            tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=http),
            tracer.start_as_current_span("execute_tool add", attributes=TOOL),
        ):
            pass
        for convention, attrs in CONVENTIONS.items():
            with tracer.start_as_current_span(f"chat {convention}", kind=SpanKind.CLIENT, attributes=attrs):
                pass
        with tracer.start_as_current_span("chat failed", kind=SpanKind.CLIENT, attributes=NEW_GENERATION) as failed:
            failed.set_status(Status(StatusCode.ERROR, "rate limited"))
    provider.shutdown()
    return recorded.get_finished_spans()


async def export(endpoint: str, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    """The SDK's own exporter (protobuf, gzip), off the event loop: it blocks on `requests`."""
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}/v1/traces", compression=Compression.Gzip, timeout=10)
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


def by_span(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def check_timing(span: ReadableSpan, start: float, end: float) -> None:
    assert span.start_time is not None and span.end_time is not None
    assert abs(start - span.start_time / 1e9) < 1e-5 and abs(end - span.end_time / 1e9) < 1e-5


def keywords_log(rig: Rig, span: ReadableSpan) -> Mapping[str, Any]:
    span_id = format(span.context.span_id, "016x")
    (seen,) = [s for s in rig.kw.accepted("POST", "/api/request-logs/create/") if s.body["span_unique_id"] == span_id]
    assert seen.headers["Authorization"] == f"Bearer {KW_SINK_KEY}"
    return dict(seen.body)


async def delivered(rig: Rig, count: int) -> None:
    await wait_for(lambda: all(len(fake.accepted("POST")) >= count for fake in rig.fakes), timeout=60)


async def test_an_apps_llm_spans_reach_every_vendor_as_its_own_record(otlp: Otlp) -> None:
    rig = otlp.rig
    for fake in rig.fakes:
        await fake.start()
    spans = app_spans()
    assert await export(otlp.endpoint, spans) == SpanExportResult.SUCCESS
    await delivered(rig, 6)
    named = by_span(spans)
    agent = named["invoke_agent calc"]
    for convention in CONVENTIONS:
        span = named[f"chat {convention}"]
        log = keywords_log(rig, span)
        assert (log["prompt_messages"], log["completion_message"]) == (ASKED, REPLY)
        assert (log["model"], log["prompt_tokens"], log["completion_tokens"]) == ("gpt-4o-mini-2024-07-18", 12, 1)
        assert log["trace_unique_id"] == format(span.context.trace_id, "032x")
        assert log["span_parent_id"] == format(agent.context.span_id, "016x")
        assert log["status_code"] == 200
    assert keywords_log(rig, named["chat failed"])["error_message"] == "rate limited"
    tool_log = keywords_log(rig, named["execute_tool add"])
    assert (tool_log["log_type"], tool_log["input"], tool_log["span_parent_id"]) == (
        "tool", {"a": 2}, format(named["POST"].context.span_id, "016x"),
    )  # fmt: skip
    assert keywords_log(rig, agent)["log_type"] == "agent" and "prompt_tokens" not in tool_log

    completions = rig.fp.accepted("POST", re.compile(rf"/api/v2/projects/{PROJECT}/sessions/[0-9a-f-]+/completions"))
    assert len(completions) == 4 and all(s.headers["Authorization"] == f"Bearer {FP_SINK_KEY}" for s in completions)
    traces = {seen.body["kind"]: seen for seen in rig.fp.accepted("POST", re.compile(r".*/traces/id/[0-9a-f-]+"))}
    agent_trace = traces["agent"].path.rsplit("/", 1)[1]
    assert (traces["agent"].body["agent_name"], traces["tool"].body["name"]) == ("calc", "add")
    assert traces["tool"].body["parent_id"] == agent_trace  # through the HTTP span between them
    assert all(seen.body["parent_id"] == agent_trace for seen in completions)
    for seen in completions:
        assert seen.body["messages"] == [*ASKED, REPLY]
        call = seen.body["call_info"]
        assert (call["model"], call["provider"], call["usage"]) == (
            "gpt-4o-mini-2024-07-18", "openai", {"prompt_tokens": 12, "completion_tokens": 1},
        )  # fmt: skip
        span = next(
            s for s in spans if format(s.context.span_id, "016x") == seen.body["custom_metadata"]["otel_span_id"]
        )
        check_timing(span, call["start_time"], call["end_time"])
        assert uuid.UUID(seen.body["completion_id"])

    logs = rig.hl.accepted("POST", "/v5/prompts/log")
    assert len(logs) == 4 and all(s.headers["X-API-KEY"] == HL_SINK_KEY for s in logs)
    (flow,) = rig.hl.accepted("POST", "/v5/flows/log")
    (tool,) = rig.hl.accepted("POST", "/v5/tools/log")
    assert (tool.body["inputs"], tool.body["trace_parent_id"]) == ({"a": 2}, flow.body["log_id"])
    assert all(seen.body["trace_parent_id"] == flow.body["log_id"] for seen in logs)
    assert rig.hl.unknown_trace_parents == []  # each flow log reached Humanloop before the logs inside it
    for seen in logs:
        body = seen.body
        assert (body["messages"], body["output_message"]) == (ASKED, REPLY)
        assert (body["prompt"]["model"], body["prompt_tokens"], body["output_tokens"]) == (
            "gpt-4o-mini-2024-07-18",
            12,
            1,
        )
        assert body["path"].startswith("calc-app/chat ")

    async with aiohttp.ClientSession() as session:
        _, samples = await scrape(session, f"http://{rig.host}")
    assert metric(samples, "shipper_otlp_items_total", signal="traces", outcome="mapped") == 6
    assert metric(samples, "shipper_otlp_items_total", signal="traces", outcome="passed_over") == 1


async def test_an_acknowledged_export_survives_a_kill_9_before_any_vendor_was_reachable(otlp: Otlp) -> None:
    rig = otlp.rig
    spans = app_spans()
    assert await export(otlp.endpoint, spans) == SpanExportResult.SUCCESS  # the vendors are all down
    await rig.daemon.kill9()
    for fake in rig.fakes:
        await fake.start()
    await rig.restart()
    await delivered(rig, 6)
    assert {keywords_log(rig, span)["span_name"] for span in spans if span.name.startswith("chat")} == {
        "chat new", "chat old", "chat openinference", "chat failed",
    }  # fmt: skip
    assert all(len(fake.accepted("POST")) == 6 for fake in rig.fakes)  # and nothing twice


async def test_an_export_that_does_not_parse_is_a_400_without_retry_after_on_the_supervised_listener(
    otlp: Otlp,
) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-protobuf"}
        async with session.post(f"http://{otlp.endpoint}/v1/traces", data=b"\x0a\xff", headers=headers) as response:
            assert response.status == 400 and "Retry-After" not in response.headers


def instrumented_call(
    instrumentation: str, base_url: str, endpoint: str, logs_first: bool = True, encoding: str = "protobuf"
) -> bool:
    """An app as its instrumentation's docs set it up: a BatchSpanProcessor with the OTLP exporter (and a
    BatchLogRecordProcessor with the OTLP log exporter, for what the instrumentation writes on the logs signal), the
    instrumentor, one chat completion; True when both processors flushed (every export answered 200), the logs
    first or the spans first. `encoding`: the SDK's protobuf exporters, or its OTLP/JSON ones."""
    import openai
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2

    spans, records = (
        (OTLPSpanExporter, OTLPLogExporter) if encoding == "protobuf" else (JsonSpanExporter, JsonLogExporter)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "calc-app"}))
    provider.add_span_processor(BatchSpanProcessor(spans(endpoint=f"http://{endpoint}/v1/traces")))
    logs = LoggerProvider(resource=Resource.create({"service.name": "calc-app"}))
    logs.add_log_record_processor(BatchLogRecordProcessor(records(endpoint=f"http://{endpoint}/v1/logs")))
    instrumentor = OpenAIV2() if instrumentation == "openai-v2" else OpenLLMetry()
    instrumentor.instrument(tracer_provider=provider, logger_provider=logs)
    try:
        client = openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        with client:
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=ASKED, temperature=0.2)
        assert reply.choices[0].message.content == "4"
        flushes = (logs.force_flush, provider.force_flush) if logs_first else (provider.force_flush, logs.force_flush)
        return all([flush(10_000) for flush in flushes])
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        logs.shutdown()


@pytest.mark.parametrize("instrumentation", ["openai-v2", "openllmetry"])
async def test_a_chat_completion_an_instrumented_app_makes_reaches_every_vendor(
    otlp: Otlp, instrumentation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # openai-v2 puts message content on its span only in the new convention, and only when asked to.
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    rig = otlp.rig
    for fake in rig.fakes:
        await fake.start()
    async with OpenAIFake() as openai_fake:
        started = time.time()
        assert await asyncio.to_thread(instrumented_call, instrumentation, openai_fake.base_url, otlp.endpoint)
        ended = time.time()
    assert openai_fake.requests[0]["messages"] == ASKED
    await delivered(rig, 1)
    (log,) = [seen.body for seen in rig.kw.accepted("POST", "/api/request-logs/create/")]
    assert (log["prompt_messages"], log["completion_message"]) == (ASKED, REPLY)
    assert (log["model"], log["prompt_tokens"], log["completion_tokens"]) == (MODEL, 12, 1)
    assert "span_parent_id" not in log and len(log["trace_unique_id"]) == 32
    (completion,) = [seen.body for seen in rig.fp.accepted("POST")]
    assert completion["messages"] == [*ASKED, REPLY]
    call = completion["call_info"]
    assert (call["model"], call["provider"], call["usage"]) == (
        MODEL, "openai", {"prompt_tokens": 12, "completion_tokens": 1},
    )  # fmt: skip
    assert started <= call["start_time"] <= call["end_time"] <= ended
    assert call["llm_parameters"] == {"temperature": 0.2}
    (prompt_log,) = [seen.body for seen in rig.hl.accepted("POST", "/v5/prompts/log")]
    assert (prompt_log["messages"], prompt_log["output"], prompt_log["output_tokens"]) == (ASKED, "4", 1)


@pytest.mark.parametrize(
    ("logs_first", "encoding"),
    [(True, "protobuf"), (False, "protobuf"), (True, "json")],
    ids=["logs-first", "spans-first", "otlp-json"],
)
async def test_a_chat_completion_whose_messages_openai_v2_puts_on_the_logs_signal_reaches_every_vendor_with_them(
    otlp: Otlp, logs_first: bool, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`EVENT_ONLY`: the span carries no messages, one `gen_ai.client.inference.operation.details` log record tied to
    it carries them, in an export request of its own; shipper joins the two, whichever came first, sent by the SDK's
    protobuf exporters or its OTLP/JSON ones."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    rig = otlp.rig
    for fake in rig.fakes:
        await fake.start()
    async with OpenAIFake() as openai_fake:
        called = instrumented_call, "openai-v2", openai_fake.base_url, otlp.endpoint, logs_first, encoding
        assert await asyncio.to_thread(*called)
    await delivered(rig, 1)
    (log,) = [seen.body for seen in rig.kw.accepted("POST", "/api/request-logs/create/")]
    assert (log["prompt_messages"], log["completion_message"]) == (ASKED, REPLY)
    assert (log["model"], log["prompt_tokens"], log["completion_tokens"]) == (MODEL, 12, 1)
    (completion,) = [seen.body for seen in rig.fp.accepted("POST")]
    assert completion["messages"] == [*ASKED, REPLY]
    (prompt_log,) = [seen.body for seen in rig.hl.accepted("POST", "/v5/prompts/log")]
    assert (prompt_log["messages"], prompt_log["output"]) == (ASKED, "4")
    async with aiohttp.ClientSession() as session:
        _, samples = await scrape(session, f"http://{rig.host}")
    assert metric(samples, "shipper_otlp_items_total", signal="traces", outcome="held") == 1
    assert metric(samples, "shipper_otlp_items_total", signal="logs", outcome="held") == 1
    # The log record left the spool with the records it was joined to, and nothing was dead-lettered.
    await wait_for(lambda: read(rig.spool, lambda spool: spool.waiting()) == 0, timeout=30)
    assert rig.dead_letters() == []


async def test_the_sdks_otlp_json_exporter_is_read_with_its_hex_ids_and_int64_strings(otlp: Otlp) -> None:
    """The SDK's OTLP/JSON exporter, as it writes a request (checked on a plain remote first), into shipper."""
    spans = app_spans()
    remote = FakeRemote()
    await remote.start()
    try:
        assert await asyncio.to_thread(JsonSpanExporter(endpoint=f"{remote.url}/v1/traces").export, spans) == (
            SpanExportResult.SUCCESS
        )
    finally:
        await remote.stop()
    (sent,) = remote.received
    assert sent.headers["Content-Type"] == "application/json"
    wire_span = sent.json()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert re.fullmatch("[0-9a-f]{32}", wire_span["traceId"]) and re.fullmatch("[0-9a-f]{16}", wire_span["spanId"])
    assert isinstance(wire_span["startTimeUnixNano"], str)  # int64 as a string, as OTLP/JSON has it

    rig = otlp.rig
    for fake in rig.fakes:
        await fake.start()
    exporter = JsonSpanExporter(endpoint=f"http://{otlp.endpoint}/v1/traces")
    assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
    await delivered(rig, 6)
    named = by_span(spans)
    log = keywords_log(rig, named["chat new"])
    assert (log["prompt_messages"], log["prompt_tokens"]) == (ASKED, 12)
    assert log["trace_unique_id"] == format(named["chat new"].context.trace_id, "032x")


async def post(endpoint: str, signal: str, body: bytes) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-protobuf"}
        async with session.post(f"http://{endpoint}/v1/{signal}", data=body, headers=headers) as response:
            assert response.status == 200


async def test_the_log_records_acknowledged_before_a_kill_9_are_joined_to_their_span_after_the_restart(
    otlp: Otlp,
) -> None:
    """Each half is acknowledged only once in the spool: the logs before the crash, the span after it."""
    rig = otlp.rig
    await post(otlp.endpoint, "logs", logs_export(*OLD_EVENTS).SerializeToString())
    await rig.daemon.kill9()
    for fake in rig.fakes:
        await fake.start()
    await rig.restart()
    await post(otlp.endpoint, "traces", export_request(span(NO_CONTENT)).SerializeToString())
    await delivered(rig, 1)
    (log,) = [seen.body for seen in rig.kw.accepted("POST", "/api/request-logs/create/")]
    assert (log["prompt_messages"], log["completion_message"]) == (ASKED, REPLY)
    assert [seen.body["messages"] for seen in rig.fp.accepted("POST")] == [[*ASKED, REPLY]]


async def test_the_receiver_listens_on_a_unix_socket_of_its_own_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[otlp] unix`: bound by the supervisor with ingest's socket mode, and served by the ingest process."""
    monkeypatch.setenv("SHIPPER__SINKS__FP__PROJECT_ID", PROJECT)
    path = tmp_path / "otlp.sock"
    extra = f'[otlp]\nunix = "{path}"\nroute = ["kw"]\n'
    async with vendor_rig(tmp_path, extra=extra) as rig:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        body = export_request(span(NEW_GENERATION)).SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
            session.post("http://otlp/v1/traces", data=body, headers=headers) as response,
        ):
            assert response.status == 200
        await wait_for(lambda: len(rig.kw.accepted("POST")) == 1, timeout=30)
        (log,) = [seen.body for seen in rig.kw.accepted("POST", "/api/request-logs/create/")]
        assert (log["prompt_messages"], log["completion_message"]) == (ASKED, REPLY)
    assert not path.exists()  # removed with the rest at the stop


async def test_an_otlp_sink_gets_the_export_request_whole_and_retries_until_the_collector_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    collector = FakeRemote()
    refusals = iter([web.json_response({}, status=503, headers={"Retry-After": "0"})])
    collector.behaviour = lambda request, body: next(refusals, None)
    await collector.start()
    monkeypatch.setenv("COLLECTOR_AUTH", "Bearer col-key")
    extra = (
        f'[otlp]\nhttp = "{endpoint}"\nroute = ["col"]\n'
        f'[sinks.col]\ntype = "otlp"\nbase_url = "{collector.url}/otlp"\nauth_env = "COLLECTOR_AUTH"\n'
        "retry_initial_backoff = 0.05\n"
    )
    try:
        async with vendor_rig(tmp_path, start_fakes=False, extra=extra):
            spans = app_spans()
            assert await export(endpoint, spans) == SpanExportResult.SUCCESS
            await wait_for(lambda: len(collector.received) == 1, timeout=30)
    finally:
        await collector.stop()
    (got,) = collector.received
    assert (got.path, got.headers["Content-Type"], got.headers["Authorization"]) == (
        "/otlp/v1/traces", "application/x-protobuf", "Bearer col-key",
    )  # fmt: skip
    received = ExportTraceServiceRequest.FromString(got.body).resource_spans[0].scope_spans[0].spans
    assert [(s.name, s.span_id) for s in received] == [(s.name, s.context.span_id.to_bytes(8, "big")) for s in spans]
    assert collector.attempts == 2
