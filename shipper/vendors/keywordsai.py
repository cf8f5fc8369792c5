"""Keywords AI: request-log creates (SDK `keywordsai` 1.0.4 and raw REST) and the documented metadata updates.

The SDK posts to `/request-logs/create` (it strips `/api` from its base URL); the documented endpoint is
`/api/request-logs/create/`, and that is where rows are forwarded. A create carries no id and its answer none
either, so creates are independent; an update names the server's `unique_id`, learnt by the app from a proxied read.

As sent: a create's usage goes in `prompt_tokens` / `completion_tokens` and its cost in `cost`, unless the app sent
unit prices (then Keywords AI computes the cost itself); shipper's marks go in `metadata` (of each log of a batch
update; an update's only when it carries one). No body field of a drop-in call needs protecting from redaction: a
create carries no id, and an update names its log in the path (a held span's ids are protected, shipper/otlp/join.py).

From OpenTelemetry spans (shipper/otlp/): an LLM call is a request log with its messages, a tool call or agent run a
request log with `log_type` "tool" / "agent" and its `input` / `output` (Keywords AI's documented universal
fields; no token counts are estimated for it), each placed in its trace by the span's own ids (`trace_unique_id`,
`span_unique_id`, `span_parent_id`: OpenTelemetry's direct parent, as Keywords AI infers the tree from them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from shipper.config.sinks import VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.vendors.base import (
    ID,
    ClientIds,
    Plan,
    Proxied,
    Route,
    Spooled,
    bearer,
    collapse_slashes,
    normalize_path,
    plan_routes,
    route,
)
from shipper.vendors.llm import SPAN_IDS_FIELD, LlmCall, Request, Step, iso
from shipper.vendors.sent import Sent, Usage, dict_at, sent

LOGGED = {"message": "log successful"}


def _create(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    return Spooled("POST", "/api/request-logs/create/", body, 200, LOGGED, kind="create")


def _update(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    unique_id = m.group(1)
    return Spooled(
        "PATCH", f"/api/request-logs/{unique_id}/", body, 200, {"message": "log updated"},
        key=f"kw:{unique_id}", kind="update",
    )  # fmt: skip


def _batch_update(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    return Spooled("PATCH", "/api/request-logs/batch-update/", body, 200, {"message": "logs updated"}, kind="update")


ROUTES: Sequence[Route] = (
    route("POST", r"(?:/api)?/request-logs/create", _create),
    route("POST", r"/api/request-logs", _create),
    route("PATCH", r"/api/request-logs/batch-update", _batch_update),
    route("PATCH", rf"/api/request-logs/{ID}", _update),
)


STEP_TYPES = frozenset({"tool", "agent"})


def _usage(body: dict[str, Any]) -> Usage | None:
    """The prompt is a message list (`prompt_messages`) or a plain `input` text, the reply either kind too. A tool or
    agent step is no model call: nothing to count."""
    if body.get("log_type") in STEP_TYPES:
        return None
    messages = body.get("prompt_messages")
    completion = body.get("completion_message")
    unit_prices = body.get("prompt_unit_price") is not None or body.get("completion_unit_price") is not None
    return Usage(
        body.get("model"), messages if messages is not None else body.get("input"),
        completion if completion is not None else body.get("output"), body.get("tools"),
        cost=() if unit_prices else ("cost",),
    )  # fmt: skip


def _each_log(body: dict[str, Any]) -> list[dict[str, Any]]:
    logs = body.get("logs")
    if not isinstance(logs, list):
        return []
    return [log["metadata"] for log in logs if isinstance(log, dict) and isinstance(log.get("metadata"), dict)]


OUTBOUND: Sequence[Sent] = (
    sent("POST", r"/api/request-logs/create/", dict_at("metadata"), _usage),
    sent("PATCH", r"/api/request-logs/batch-update/", _each_log),
    sent("PATCH", rf"/api/request-logs/{ID}/", dict_at("metadata", create=False)),
)


def from_call(call: LlmCall, sink: VendorSinkConfig) -> Request:
    """A request log as the documented create takes it, placed in its trace by the span's own ids
    (`trace_unique_id` / `span_unique_id` / `span_parent_id`); an errored span is logged with status 500."""
    body: dict[str, Any] = {
        "model": call.model or "", "prompt_messages": list(call.messages), "timestamp": iso(call.end),
        "latency": max(0.0, call.end - call.start), "status_code": 500 if call.error else 200,
        "trace_unique_id": call.trace_id, "span_unique_id": call.span_id, "span_name": call.name,
        "metadata": call.otel_ids(),
    }  # fmt: skip
    optional = {
        "completion_message": call.output, "prompt_tokens": call.input_tokens, "completion_tokens": call.output_tokens,
        "span_parent_id": call.parent_id, "session_identifier": call.session, "error_message": call.error,
    }  # fmt: skip
    body.update({name: value for name, value in optional.items() if value is not None})
    for name in ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty"):
        if name in call.parameters:
            body[name] = call.parameters[name]
    return Request("POST", "/api/request-logs/create", body)


def from_step(step: Step, sink: VendorSinkConfig) -> Request:
    """A request log of `log_type` "tool" or "agent", placed in its trace as an LLM call's is."""
    body: dict[str, Any] = {
        "log_type": step.kind, "timestamp": iso(step.end), "latency": max(0.0, step.end - step.start),
        "status_code": 500 if step.error else 200, "trace_unique_id": step.trace_id, "span_unique_id": step.span_id,
        "span_name": step.name, "metadata": step.otel_ids(),
    }  # fmt: skip
    optional = {
        "input": step.input, "output": step.output, "span_parent_id": step.parent_id,
        "session_identifier": step.session, "error_message": step.error,
    }  # fmt: skip
    body.update({name: value for name, value in optional.items() if value is not None})
    return Request("POST", "/api/request-logs/create", body)


class KeywordsAI(ClientIds):
    type = "keywordsai"
    auth_header = "Authorization"
    routes = ROUTES
    outbound = OUTBOUND
    protected = frozenset({SPAN_IDS_FIELD})
    from_call = staticmethod(from_call)
    from_step = staticmethod(from_step)

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        collapsed = collapse_slashes(path)
        normal = normalize_path(path)
        if not normal.startswith(("/request-logs", "/api/request-logs")):
            return None
        planned = plan_routes(self.routes, method, normal, query, body)
        if planned is not None:
            return planned
        return Proxied(collapsed if collapsed.startswith("/api/") else "/api" + collapsed)

    def key_from(self, headers: Mapping[str, str]) -> str | None:
        return bearer(headers)

    def auth_value(self, key: str) -> str:
        return f"Bearer {key}"

    def success(self, row: SpoolRow) -> frozenset[int] | None:
        return None
