"""Freeplay: completions, traces, feedback, metadata and session deletes, as `freeplay` 0.6.1 sends them.

Ids are the client's (sessions and traces are uuid4s made in the SDK); a completion id is echoed when the body has
one, else minted here and written into the forwarded body so the remote stores the same id the app was told.
Sessions exist implicitly, so session metadata and deletes wait for the session's earlier rows (scope
`fp:s:<id>`; an update joins the scope of the entity it updates). A child (`parent_id`) does not wait for its parent
trace: the SDK itself records the parent last, and Freeplay accepts children first. Freeplay's SDK insists on
exact codes (201 for records and feedback, 200 for PATCHes): so do we.

As sent: a completion's usage goes in `call_info.usage` (no cost: Freeplay prices usage itself) and shipper's marks
in `call_info.provider_info` (per call; session metadata would mark every completion of the session); a trace's
in `custom_metadata`, a trace update's in its `metadata` only when it carries one (a PATCH may replace it whole),
a metadata PATCH's in the body itself. Feedback and completion updates have no metadata field and carry no mark.
Redaction never touches `completion_id` or `parent_id`: they key the rows and their order (nor a held span's ids,
shipper/otlp/join.py).

From OpenTelemetry spans (shipper/otlp/): an LLM call is a completion, a tool call or agent run a trace (`kind`
"tool" / "agent"), in the session of the span's conversation or trace. Every span's Freeplay id (a completion's
`completion_id`, a trace's id) is one uuid derived from its span, so a record names its parent's (`parent_id`, the
nearest ancestor recorded from the same export request) without having seen it.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from shipper.config.sinks import VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.records import BadInput
from shipper.vendors.base import (
    ID,
    ClientIds,
    Plan,
    Proxied,
    Route,
    Spooled,
    bearer,
    is_id,
    normalize_path,
    plan_routes,
    route,
    uuid4_text,
)
from shipper.vendors.base import success_for as _success_for
from shipper.vendors.llm import SPAN_IDS_FIELD, LlmCall, Request, Step, derived_id
from shipper.vendors.sent import Sent, Usage, dict_at, itself, obj, sent

P = rf"/v2/projects/{ID}"
COMPLETIONS = rf"{P}/sessions/{ID}/completions"
TRACE = rf"{P}/sessions/{ID}/traces/id/{ID}"
SESSION_METADATA = rf"{P}/sessions/id/{ID}/metadata"
TRACE_METADATA = rf"{TRACE}/metadata"
CREATED = frozenset({201})
OK = frozenset({200})


def _completion(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInput("invalid_body", "messages must be a non-empty list", field="messages")
    cid = body.get("completion_id") or uuid4_text()
    if not is_id(cid):
        raise BadInput("invalid_body", "completion_id must be an id string", field="completion_id")
    return Spooled(
        "POST", m.group(0), {**body, "completion_id": cid}, 200, {"completion_id": cid},
        key=f"fp:c:{cid}", scope=f"fp:s:{m.group(2)}", kind="create",
    )  # fmt: skip


def _completion_update(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
    cid = m.group(2)
    return Spooled("POST", m.group(0), body, 200, {"completion_id": cid}, key=f"fp:c:{cid}", kind="update")


def _trace(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
    return Spooled(
        "POST", m.group(0), body, 201, {}, key=f"fp:t:{m.group(3)}", scope=f"fp:s:{m.group(2)}", kind="create",
    )  # fmt: skip


def _update(status: int, key_of: str, group: int, method: str = "POST") -> Any:
    def build(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
        return Spooled(method, m.group(0), body, status, {}, key=f"{key_of}:{m.group(group)}", kind="update")

    return build


def _session_metadata(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
    sid = m.group(2)
    return Spooled(
        "PATCH", m.group(0), body, 200, {}, key=f"fp:s:{sid}:meta", scope=f"fp:s:{sid}", after=f"fp:s:{sid}",
        kind="update",
    )  # fmt: skip


def _session_delete(m: re.Match[str], q: Mapping[str, str], body: Any) -> Spooled:
    sid = m.group(2)
    return Spooled("DELETE", m.group(0), None, 201, {}, key=f"fp:s:{sid}:delete", after=f"fp:s:{sid}", kind="update")


ROUTES: Sequence[Route] = (
    route("POST", COMPLETIONS, _completion),
    route("POST", rf"{P}/completions/{ID}", _completion_update),
    route("POST", TRACE, _trace, CREATED),
    route("PATCH", TRACE, _update(200, "fp:t", 3, "PATCH"), OK),
    route("POST", rf"{P}/completion-feedback/id/{ID}", _update(201, "fp:c", 2), CREATED),
    route("POST", rf"{P}/trace-feedback/id/{ID}", _update(201, "fp:t", 2), CREATED),
    route("PATCH", SESSION_METADATA, _session_metadata, OK),
    route("PATCH", TRACE_METADATA, _update(200, "fp:t", 3, "PATCH"), OK),
    route("DELETE", rf"{P}/sessions/{ID}", _session_delete, CREATED, needs_object=False),
)


def _usage(body: dict[str, Any]) -> Usage | None:
    """`messages` is all_messages: it ends with the reply when the call produced one."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    call = obj(body.get("call_info"))
    last = messages[-1]
    replied = isinstance(last, dict) and last.get("role") == "assistant"
    return Usage(
        call.get("model"), messages[:-1] if replied else messages,
        # No reply is an empty one: Freeplay's usage wants both halves, so it counts 0 rather than staying absent.
        last if replied else "", body.get("tool_schema"), at=("call_info", "usage"),
    )  # fmt: skip


OUTBOUND: Sequence[Sent] = (
    sent("POST", COMPLETIONS, dict_at("call_info", "provider_info"), _usage),
    sent("POST", TRACE, dict_at("custom_metadata")),
    sent("PATCH", TRACE, dict_at("metadata", create=False)),
    sent("PATCH", SESSION_METADATA, itself),
    sent("PATCH", TRACE_METADATA, itself),
)


def _session_of(call: LlmCall | Step) -> str:
    """Freeplay's sessions are uuids: the span's conversation id when it is one, else a uuid derived from it (so a
    conversation stays one session), else the trace's id read as a uuid."""
    if not call.session:
        return str(uuid.UUID(call.trace_id))
    try:
        return str(uuid.UUID(call.session))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"otel-conversation:{call.session}"))


def span_record_id(trace_id: str, span_id: str) -> str:
    """The Freeplay id of the record a span became, completion or trace: its parent's children name it so."""
    return derived_id("completion", trace_id, span_id)


def _parent(record: LlmCall | Step) -> dict[str, str]:
    return {"parent_id": span_record_id(record.trace_id, record.parent_step)} if record.parent_step else {}


def from_call(call: LlmCall, sink: VendorSinkConfig) -> Request:
    """A completion as `recordings.create` records it: all messages (the reply last), call info and usage. The
    completion id is derived from the span, so a repeated export records the same completion. The span's ids go in
    `custom_metadata`."""
    session = _session_of(call)
    call_info: dict[str, Any] = {
        "start_time": call.start, "end_time": call.end, "model": call.model, "provider": call.provider,
        "llm_parameters": dict(call.parameters) or None,
    }  # fmt: skip
    if call.input_tokens is not None and call.output_tokens is not None:
        call_info["usage"] = {"prompt_tokens": call.input_tokens, "completion_tokens": call.output_tokens}
    body = {
        "messages": [*call.messages, *([call.output] if call.output is not None else [])],
        "completion_id": span_record_id(call.trace_id, call.span_id), "call_info": call_info,
        "custom_metadata": call.otel_ids(), **_parent(call),
    }  # fmt: skip
    return Request("POST", f"/v2/projects/{sink.project_id}/sessions/{session}/completions", body)


def _time(seconds: float) -> str:
    """ISO-8601 with `+00:00`, as the SDK writes a trace's times."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def from_step(step: Step, sink: VendorSinkConfig) -> Request:
    """A trace as `TraceInfo.record_output` records it (every key present), its id derived from the span. An agent's
    name is `agent_name` (the span's name is the trace's), a tool's is the trace's `name`; an error goes in
    `custom_metadata` (`otel_error`), the trace having no field for it."""
    metadata: dict[str, Any] = step.otel_ids()
    if step.error:
        metadata["otel_error"] = step.error
    body = {
        "agent_name": step.entity if step.kind == "agent" else None, "input": step.input, "output": step.output,
        "parent_id": _parent(step).get("parent_id"), "custom_metadata": metadata, "eval_results": None,
        "test_run_info": None, "kind": step.kind, "name": step.name if step.kind == "agent" else step.entity,
        "start_time": _time(step.start), "end_time": _time(step.end),
    }  # fmt: skip
    trace = span_record_id(step.trace_id, step.span_id)
    return Request("POST", f"/v2/projects/{sink.project_id}/sessions/{_session_of(step)}/traces/id/{trace}", body)


class Freeplay(ClientIds):
    type = "freeplay"
    auth_header = "Authorization"
    routes = ROUTES
    outbound = OUTBOUND
    protected = frozenset({"completion_id", "parent_id", SPAN_IDS_FIELD})
    from_call = staticmethod(from_call)
    from_step = staticmethod(from_step)

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        path = normalize_path(path)
        if path.startswith("/api/v2/"):
            path = path[len("/api") :]
        if not path.startswith("/v2/"):
            return None
        return plan_routes(self.routes, method, path, query, body) or Proxied(path)

    def key_from(self, headers: Mapping[str, str]) -> str | None:
        return bearer(headers)

    def auth_value(self, key: str) -> str:
        return f"Bearer {key}"

    def success(self, row: SpoolRow) -> frozenset[int] | None:
        return _success_for(self.routes, row)
