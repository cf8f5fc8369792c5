"""An OpenTelemetry span as an LLM call: the GenAI conventions (both generations), OpenInference and OpenLLMetry.

The GenAI semantic conventions are still in development and instrumentations emit two generations: the old one
(`gen_ai.system`, `gen_ai.usage.prompt_tokens`, flattened `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*`, or
per-message span events such as `gen_ai.user.message`) and the new one (`gen_ai.provider.name`,
`gen_ai.usage.input_tokens`, the JSON `gen_ai.input.messages` / `gen_ai.output.messages`, or one
`gen_ai.client.inference.operation.details` event). OpenInference (Arize, Phoenix, Freeplay's own OTLP) has its
own names (`openinference.span.kind`, `llm.model_name`, `llm.input_messages.{i}.message.*`, `llm.token_count.*`).
Each field is read from the first name that holds it, so a span mixing conventions reads too. Messages come out in
the OpenAI chat shape (shipper/vendors/llm.py). A span that is no LLM call (a tool, an agent, an HTTP request, an
embedding) is None: passed over. Not responsible for decoding the export request (wire.py) or for any vendor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from shipper.vendors.llm import LlmCall

# `gen_ai.operation.name` values that are a model call; any other operation (embeddings, execute_tool,
# invoke_agent, create_agent) is passed over, as is an OpenInference kind other than LLM.
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
OPENLLMETRY_LLM_TYPES = frozenset({"chat", "completion"})
PARAMETERS = ("temperature", "max_tokens", "top_p", "top_k", "frequency_penalty", "presence_penalty", "seed")
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
# Events that carry a call's messages, as span events or as log records (the logs signal) tied to the span.
CONTENT_EVENTS = frozenset({*MESSAGE_EVENTS, "gen_ai.choice", DETAILS_EVENT})
Event = tuple[str, dict[str, Any]]
_FLAT = re.compile(r"^(gen_ai\.prompt|gen_ai\.completion|llm\.input_messages|llm\.output_messages)\.(\d+)\.(.+)$")


class Unmappable(ValueError):
    """An LLM span shipper cannot record (ids of the wrong length): refused, and said so in the answer."""


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return None if kind is None else getattr(any_value, kind)


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def any_value(item: Any) -> AnyValue:
    """The inverse of `value` for what it gives (a bytes value comes back as its hex text): how a span kept as plain
    JSON (join.py) is a Span again."""
    if isinstance(item, bool):
        return AnyValue(bool_value=item)
    if isinstance(item, int):
        return AnyValue(int_value=item)
    if isinstance(item, float):
        return AnyValue(double_value=item)
    out = AnyValue()
    if isinstance(item, list):
        out.array_value.values.extend(any_value(entry) for entry in item)
    elif isinstance(item, dict):
        out.kvlist_value.values.extend(key_values(item))
    elif item is not None:
        out.string_value = str(item)
    return out


def key_values(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(item)) for key, item in attrs.items()]


def is_llm(attrs: Mapping[str, Any]) -> bool:
    """Any attribute may hold any type (a list where a name belongs): only the expected text counts."""
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return isinstance(operation, str) and operation in LLM_OPERATIONS
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return isinstance(kind, str) and kind.upper() == "LLM"
    if "llm.request.type" in attrs:
        return isinstance(attrs["llm.request.type"], str) and attrs["llm.request.type"] in OPENLLMETRY_LLM_TYPES
    return first(attrs, "gen_ai.provider.name", "gen_ai.system") is not None and "gen_ai.request.model" in attrs


def content_event(record: LogRecord) -> tuple[str, str, Event] | None:
    """A log record that carries an LLM call's messages, as (trace id, span id, event) in hex and the span event
    shape: its name (`event_name`, or the `event.name` attribute older SDKs set) and its attributes with its body's
    fields over them (the old generation puts `content` / `message` in the body). None for any other record, and for
    one tied to no span (its ids absent or of the wrong length): nothing could join it."""
    fields = attributes(record.attributes)
    name = record.event_name or fields.get("event.name")
    if name not in CONTENT_EVENTS or len(record.trace_id) != 16 or len(record.span_id) != 8:
        return None
    body = value(record.body)
    if isinstance(body, dict):
        fields.update(body)
    elif isinstance(body, str) and body:
        fields.setdefault("content", body)
    return record.trace_id.hex(), record.span_id.hex(), (str(name), fields)


def llm_call(span: Span, service: str, joined: Iterable[Event] = ()) -> LlmCall | None:
    """The LLM call the span records, or None when it records none; Unmappable for one with unusable ids. `joined`:
    the content events that came for it on the logs signal (content_event), read after the span's own events."""
    attrs = attributes(span.attributes)
    if not is_llm(attrs):
        return None
    if len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8):
        raise Unmappable(f"span {span.name!r}: trace and span ids must be 16 and 8 bytes")
    events = [(event.name, attributes(event.attributes)) for event in span.events]
    events += joined
    for name, fields in events:
        if name == DETAILS_EVENT:  # the new generation's one event holds what the span's attributes would
            attrs = {**fields, **attrs}
    messages, output = _messages(attrs, events)
    reasons = attrs.get("gen_ai.response.finish_reasons")
    finish = (output or {}).pop("finish_reason", None)  # a chat message has no such field: the call's, not the reply's
    finish = reasons[0] if isinstance(reasons, list) and reasons else finish
    return LlmCall(
        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex() or None,
        name=span.name, service=service,
        start=seconds(span.start_time_unix_nano),
        end=seconds(max(span.end_time_unix_nano, span.start_time_unix_nano)),
        model=text(first(attrs, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name",
                           "llm.response.model", "llm.request.model")),
        provider=text(first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")),
        messages=messages, output=output,
        input_tokens=_count(first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                                   "llm.token_count.prompt", "llm.usage.prompt_tokens")),
        output_tokens=_count(first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                                    "llm.token_count.completion", "llm.usage.completion_tokens")),
        parameters=_parameters(attrs), session=text(first(attrs, "gen_ai.conversation.id", "session.id")),
        error=error_of(span, attrs), finish_reason=text(finish),
    )  # fmt: skip


def seconds(nanoseconds: int) -> float:
    return round(nanoseconds / 1e9, 6)  # microseconds, as the SDKs' own times: no 0.7459998 from float division


def first(attrs: Mapping[str, Any], *names: str) -> Any:
    return next((attrs[name] for name in names if attrs.get(name) is not None), None)


def text(found: Any) -> str | None:
    if found is None or isinstance(found, str):
        return found
    return orjson.dumps(found).decode()


def _count(found: Any) -> int | None:
    if isinstance(found, bool):
        return None
    if isinstance(found, int | float) and math.isfinite(found) and found >= 0:
        return int(found)
    return int(found) if isinstance(found, str) and found.isdigit() else None


def json_or_text(found: Any) -> Any:
    """JSON text read as JSON (a tool's arguments, an agent's input); any other value as it is."""
    parsed = _json(found)
    return found if parsed is None else parsed


def _json(found: Any) -> Any:
    if isinstance(found, str):
        try:
            return orjson.loads(found)
        except orjson.JSONDecodeError:
            return None
    return found


def _parameters(attrs: Mapping[str, Any]) -> dict[str, Any]:
    invocation = _json(attrs.get("llm.invocation_parameters"))  # OpenInference: the request's parameters as JSON
    found = {k: v for k, v in invocation.items() if k in PARAMETERS} if isinstance(invocation, dict) else {}
    for name in PARAMETERS:
        if attrs.get(f"gen_ai.request.{name}") is not None:
            found[name] = attrs[f"gen_ai.request.{name}"]
    return found


def error_of(span: Span, attrs: Mapping[str, Any]) -> str | None:
    if span.status.code != Status.STATUS_CODE_ERROR:
        return None
    return span.status.message or text(first(attrs, "error.type", "exception.message")) or "error"


def _messages(attrs: Mapping[str, Any], events: list[Event]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Input messages and the reply, from the first convention that has them."""
    inputs = _json(attrs.get("gen_ai.input.messages"))
    if isinstance(inputs, list):
        system = _json(attrs.get("gen_ai.system_instructions"))
        messages = [{"role": "system", "content": _joined(system)}] if isinstance(system, list) and system else []
        messages += [_from_parts(m) for m in inputs if isinstance(m, dict)]
        outputs = _json(attrs.get("gen_ai.output.messages"))
        output = (
            _from_parts(outputs[0]) if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) else None
        )
        return messages, output
    flat = _flattened(attrs)
    for prompt, completion in (("gen_ai.prompt", "gen_ai.completion"), ("llm.input_messages", "llm.output_messages")):
        if flat.get(prompt):
            replies = flat.get(completion, [])
            return flat[prompt], replies[0] if replies else None
    if events:
        messages, output = _from_events(events)
        if messages:
            return messages, output
    return _from_values(attrs)


def _from_parts(message: Mapping[str, Any]) -> dict[str, Any]:
    """A new-generation message (`role` and typed `parts`), or an older one with `content`, in the chat shape."""
    out: dict[str, Any] = {"role": message.get("role") or "user"}
    if "parts" not in message:
        out.update({k: v for k, v in message.items() if k in ("content", "tool_calls", "tool_call_id", "name")})
        return out
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in message.get("parts") or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(text(part.get("content")) or "")
        elif kind == "tool_call":
            function = {"name": part.get("name"), "arguments": text(part.get("arguments")) or "{}"}
            calls.append({"id": part.get("id"), "type": "function", "function": function})
        elif kind == "tool_call_response":
            out["tool_call_id"] = part.get("id")
            texts.append(text(part.get("response")) or "")
    out["content"] = "".join(texts)
    if calls:
        out["tool_calls"] = calls
    if message.get("finish_reason") is not None:
        out["finish_reason"] = message["finish_reason"]
    return out


def _joined(parts: list[Any]) -> str:
    return "".join(text(p.get("content")) or "" for p in parts if isinstance(p, dict) and p.get("type") == "text")


def _flattened(attrs: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """`gen_ai.prompt.0.role` / `llm.input_messages.0.message.role` and their tool calls, as message lists."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for name, item in attrs.items():
        match = _FLAT.match(name)
        if match is not None:
            field = match.group(3).removeprefix("message.")
            found.setdefault(match.group(1), {}).setdefault(int(match.group(2)), {})[field] = item
    return {
        prefix: [_flat_message(fields) for _, fields in sorted(by_index.items())] for prefix, by_index in found.items()
    }


def _flat_message(fields: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": fields.get("role") or "user", "content": text(fields.get("content")) or ""}
    calls: dict[int, dict[str, Any]] = {}
    for name, item in fields.items():
        match = re.match(r"^tool_calls\.(\d+)\.(?:tool_call\.)?(?:function\.)?(id|name|arguments)$", name)
        if match is not None:
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = item
    if calls:
        message["tool_calls"] = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {"name": c.get("name"), "arguments": c.get("arguments")},
            }
            for _, c in sorted(calls.items())
        ]
    for name in ("tool_call_id", "finish_reason", "name"):
        if fields.get(name) is not None:
            message[name] = fields[name]
    return message


def _from_events(events: list[Event]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Old-generation span events: one per message, then `gen_ai.choice` with the reply (content in the event's
    `content` attribute, or a JSON `gen_ai.event.content`)."""
    messages: list[dict[str, Any]] = []
    output: dict[str, Any] | None = None
    for name, fields in events:
        body = _json(fields.get("gen_ai.event.content"))
        body = body if isinstance(body, dict) else fields
        if name in MESSAGE_EVENTS:
            messages.append({"role": MESSAGE_EVENTS[name], "content": text(body.get("content")) or ""})
        elif name == "gen_ai.choice" and output is None:
            reply = body.get("message")
            reply = reply if isinstance(reply, dict) else body
            output = {"role": reply.get("role") or "assistant", "content": text(reply.get("content")) or ""}
    return messages, output


def _from_values(attrs: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """OpenInference's `input.value` / `output.value` when a span lists no messages: the text as one turn each."""
    given, reply = text(attrs.get("input.value")), text(attrs.get("output.value"))
    messages = [{"role": "user", "content": given}] if given else []
    return messages, {"role": "assistant", "content": reply} if reply else None
