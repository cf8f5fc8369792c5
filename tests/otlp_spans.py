"""OTLP spans, log records and export requests built by hand, as the SDK would put them on the wire: for the OTLP
tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
START_NS = 1_795_347_092_746_000_000
END_NS = START_NS + 500_000_000


def any_value(item: Any) -> AnyValue:
    if isinstance(item, bool):
        return AnyValue(bool_value=item)
    if isinstance(item, int):
        return AnyValue(int_value=item)
    if isinstance(item, float):
        return AnyValue(double_value=item)
    if isinstance(item, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in item)
        return out
    if isinstance(item, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(pairs(item))
        return out
    return AnyValue(string_value=str(item))


def pairs(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def span(
    attrs: Mapping[str, Any],
    events: tuple[tuple[str, Mapping[str, Any]], ...] = (),
    *,
    name: str = "chat gpt-4o-mini",
    trace_id: bytes = TRACE,
    span_id: bytes = SPAN,
    parent: bytes = PARENT,
    error: str | None = None,
    start_ns: int = START_NS,
) -> Span:
    made = Span(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns, end_time_unix_nano=max(END_NS, start_ns), attributes=pairs(attrs),
    )  # fmt: skip
    for event_name, fields in events:
        made.events.add(name=event_name, time_unix_nano=START_NS, attributes=pairs(fields))
    if error is not None:
        made.status.code = Status.STATUS_CODE_ERROR
        made.status.message = error
    return made


def export(*spans: Span, service: str = "calc-app") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(pairs({"service.name": service}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def log_record(
    name: str,
    body: Any = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    trace_id: bytes = TRACE,
    span_id: bytes = SPAN,
    old_sdk: bool = False,
) -> LogRecord:
    """An event on the logs signal, tied to a span; `old_sdk` names it by the `event.name` attribute, as SDKs before
    LogRecord's `event_name` field did."""
    fields = {**(attrs or {}), **({"event.name": name} if old_sdk else {})}
    made = LogRecord(
        time_unix_nano=START_NS, trace_id=trace_id, span_id=span_id, attributes=pairs(fields),
        event_name="" if old_sdk else name,
    )  # fmt: skip
    if body is not None:
        made.body.CopyFrom(any_value(body))
    return made


def logs_export(*records: LogRecord, service: str = "calc-app") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(pairs({"service.name": service}))
    resource_logs.scope_logs.add().log_records.extend(records)
    return request


def js(item: Any) -> str:
    return orjson.dumps(item).decode()


# One chat completion, "What is 2+2?" → "4", in each convention instrumentations emit.
NEW_GENERATION = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.request.temperature": 0.2,
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 1,
    "gen_ai.conversation.id": "conv-1",
    "gen_ai.system_instructions": js([{"type": "text", "content": "Be terse"}]),
    "gen_ai.input.messages": js([{"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]),
    "gen_ai.output.messages": js(
        [{"role": "assistant", "parts": [{"type": "text", "content": "4"}], "finish_reason": "stop"}]
    ),
}
OLD_GENERATION = {
    "llm.request.type": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.request.temperature": 0.2,
    "gen_ai.usage.prompt_tokens": 12,
    "gen_ai.usage.completion_tokens": 1,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "Be terse",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "What is 2+2?",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": "4",
    "gen_ai.completion.0.finish_reason": "stop",
}
OPENINFERENCE = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.provider": "openai",
    "llm.invocation_parameters": js({"temperature": 0.2, "model": "gpt-4o-mini"}),
    "llm.input_messages.0.message.role": "system",
    "llm.input_messages.0.message.content": "Be terse",
    "llm.input_messages.1.message.role": "user",
    "llm.input_messages.1.message.content": "What is 2+2?",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "4",
    "llm.token_count.prompt": 12,
    "llm.token_count.completion": 1,
    "input.value": js({"messages": [{"role": "user", "content": "What is 2+2?"}]}),
    "output.value": "4",
    "session.id": "conv-1",
}

# The same call as the official OpenAI instrumentation puts it on the logs signal: the span without its messages,
# and the messages in log records (the old generation's one event per message, or the new one's details event).
NO_CONTENT = {
    k: v for k, v in NEW_GENERATION.items() if not k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_"))
}
OLD_EVENTS = (
    log_record("gen_ai.system.message", {"content": "Be terse"}, {"gen_ai.system": "openai"}),
    log_record("gen_ai.user.message", {"content": "What is 2+2?"}, {"gen_ai.system": "openai"}, old_sdk=True),
    log_record(
        "gen_ai.choice",
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}},
        {"gen_ai.system": "openai"},
    ),
)
DETAILS_EVENT = log_record(
    "gen_ai.client.inference.operation.details",
    attrs={
        "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": [
            {"role": "system", "parts": [{"type": "text", "content": "Be terse"}]},
            {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]},
        ],
        "gen_ai.output.messages": [
            {"role": "assistant", "parts": [{"type": "text", "content": "4"}], "finish_reason": "stop"}
        ],
    },
)
