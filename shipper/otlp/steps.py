"""An OpenTelemetry span as a tool call or an agent run: the GenAI conventions, OpenInference and OpenLLMetry.

GenAI marks them by `gen_ai.operation.name` (`execute_tool`, `invoke_agent`) with `gen_ai.tool.name` /
`gen_ai.tool.call.arguments` / `gen_ai.tool.call.result` and `gen_ai.agent.name`; OpenInference by
`openinference.span.kind` (`TOOL`, `AGENT`) with `tool.name` and `input.value` / `output.value`; OpenLLMetry by
`traceloop.span.kind` (`tool`; `agent` or `workflow`) with `traceloop.entity.name` / `.input` / `.output`. Each
field is read from the first name that holds it, as for LLM calls (genai.py). Any other span is None. Not
responsible for LLM calls (genai.py) or for any vendor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shipper.otlp.genai import Unmappable, attributes, error_of, first, json_or_text, seconds, text
from shipper.vendors.llm import Step

TOOL = "tool"
AGENT = "agent"
_OPERATIONS = {"execute_tool": TOOL, "invoke_agent": AGENT}
_OPENINFERENCE = {"TOOL": TOOL, "AGENT": AGENT}
_TRACELOOP = {"tool": TOOL, "agent": AGENT, "workflow": AGENT}
_NAMES = {
    TOOL: ("gen_ai.tool.name", "tool.name", "traceloop.entity.name"),
    AGENT: ("gen_ai.agent.name", "agent.name", "traceloop.entity.name"),
}
_INPUTS = {
    TOOL: ("gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input", "tool.parameters"),
    AGENT: ("input.value", "traceloop.entity.input", "gen_ai.input.messages"),
}
_OUTPUTS = {
    TOOL: ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output"),
    AGENT: ("output.value", "traceloop.entity.output", "gen_ai.output.messages"),
}


def kind_of(attrs: Mapping[str, Any]) -> str | None:
    """ "tool", "agent" or None, by the first convention the span names itself in (a list where a name belongs
    counts as none)."""
    for name, kinds in (
        ("gen_ai.operation.name", _OPERATIONS),
        ("openinference.span.kind", _OPENINFERENCE),
        ("traceloop.span.kind", _TRACELOOP),
    ):
        found = attrs.get(name)
        if found is not None:
            return kinds.get(found) if isinstance(found, str) else None
    return None


def step_of(span: Span, service: str) -> Step | None:
    """The tool call or agent run the span records, or None; Unmappable for one with unusable ids."""
    attrs = attributes(span.attributes)
    kind = kind_of(attrs)
    if kind is None:
        return None
    if len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8):
        raise Unmappable(f"span {span.name!r}: trace and span ids must be 16 and 8 bytes")
    return Step(
        kind=kind, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex() or None, name=span.name,
        entity=text(first(attrs, *_NAMES[kind])) or span.name, service=service,
        start=seconds(span.start_time_unix_nano),
        end=seconds(max(span.end_time_unix_nano, span.start_time_unix_nano)),
        input=json_or_text(first(attrs, *_INPUTS[kind])), output=json_or_text(first(attrs, *_OUTPUTS[kind])),
        description=text(first(attrs, "gen_ai.tool.description", "tool.description")),
        session=text(first(attrs, "gen_ai.conversation.id", "session.id")), error=error_of(span, attrs),
    )  # fmt: skip
