"""One LLM call (or one tool or agent step) as shipper read it from an OpenTelemetry span: the vendor-neutral shapes
each vendor maps to its records.

Whatever convention the span followed (GenAI, old or new, OpenInference, OpenLLMetry: shipper/otlp/genai.py reads
them all), it arrives here as the same fields, with messages in the OpenAI chat shape every vendor's log takes
(`role`, `content`, `tool_calls`, `tool_call_id`). A vendor module's `from_call` turns it into the very drop-in
request its SDK would have sent, so it is planned (ids, keys, order) exactly as that call is. Not responsible for
reading spans (shipper/otlp/) or for any vendor's fields (the vendor modules).

Parent links: a span's direct parent (`parent_id`, OpenTelemetry's) may be a span no vendor records (an HTTP
request), or be exported in a later request. So the links a vendor record makes are resolved within the export
request: `parent_step` is the nearest ancestor in the request that became a record (an LLM call, a tool, an agent),
`parent_agent` the nearest agent; None when the chain leaves the request first. A record whose parent is sent in the
same request is planned after it (shipper/otlp/plan.py), so a vendor that needs its parent first (Humanloop's
`trace_parent_id`) gets it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The field of a held span's row (shipper/otlp/join.py) with its ids and times: every vendor protects it from
# redaction, as it protects the ids that route its records.
SPAN_IDS_FIELD = "otel_span"
# Ids shipper derives from a span's own ids: the same span exported twice gets the same vendor id.
_NAMESPACE = uuid.UUID("5f0c1c8e-3d52-4e57-9a57-0b6d4f1c7e21")


@dataclass(frozen=True, slots=True)
class LlmCall:
    """`trace_id` / `span_id` / `parent_id` are the span's own, in lower-case hex (32 / 16 digits); times are epoch
    seconds; counts are None when the span gave none (enrichment may count them later)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start: float
    end: float
    model: str | None
    provider: str | None
    messages: Sequence[Mapping[str, Any]]
    output: Mapping[str, Any] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    session: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    parent_step: str | None = None
    parent_agent: str | None = None

    def derived_id(self, what: str) -> str:
        """A uuid of this span's ids (and what it names), stable across repeats of the same export."""
        return derived_id(what, self.trace_id, self.span_id)

    def otel_ids(self) -> dict[str, str]:
        return otel_ids(self.trace_id, self.span_id, self.parent_id)

    @property
    def output_text(self) -> str | None:
        content = self.output.get("content") if self.output is not None else None
        return content if isinstance(content, str) else None


def otel_ids(trace_id: str, span_id: str, parent_id: str | None) -> dict[str, str]:
    """A span's ids as metadata, so a record can be found from the trace in any OpenTelemetry backend."""
    ids = {"otel_trace_id": trace_id, "otel_span_id": span_id}
    if parent_id:
        ids["otel_parent_span_id"] = parent_id
    return ids


def derived_id(what: str, trace_id: str, span_id: str) -> str:
    """A uuid of a span's ids and what it names: how a record finds its parent's id from the parent's span id."""
    return str(uuid.uuid5(_NAMESPACE, f"{what}:{trace_id}:{span_id}"))


@dataclass(frozen=True, slots=True)
class Step:
    """A tool call or an agent run read from a span: `kind` is "tool" or "agent", `entity` the tool's or agent's
    own name (the span's name when it gave none); `input` / `output` as the span gave them (JSON text read as
    JSON); ids, times, session, error and parent links as for LlmCall."""

    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    entity: str
    service: str
    start: float
    end: float
    input: Any = None
    output: Any = None
    description: str | None = None
    session: str | None = None
    error: str | None = None
    parent_step: str | None = None
    parent_agent: str | None = None

    def derived_id(self, what: str) -> str:
        return derived_id(what, self.trace_id, self.span_id)

    def otel_ids(self) -> dict[str, str]:
        return otel_ids(self.trace_id, self.span_id, self.parent_id)


def iso(seconds: float) -> str:
    """ISO-8601 in UTC with a `Z`, as the SDKs write times."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Request:
    """A drop-in call a vendor's SDK could have made: planned by the adapter like any other."""

    method: str
    path: str
    body: dict[str, Any]
