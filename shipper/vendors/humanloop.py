"""Humanloop: prompt, flow and tool logs and their updates, as `humanloop` 0.8.38 sends them.

A log's id is the client's `log_id` or one minted here and forwarded, so the remote uses the id the app was told.
The prompt/flow/tool id is the remote's to assign and is only known once the create is delivered: the app gets a
placeholder derived from the file's `path` (`pr_shp_…`), the create's answer teaches the real id (kept in the spool's
id map), and an update's path is rewritten with it before it is sent. Updates share their log's key, so they leave
after the create; a log with `trace_parent_id` waits for its parent flow log. An update is answered with the whole
updated log, as Humanloop answers it (below).

The update's answer is built locally: Humanloop answers `PATCH …/log/{log}` with the whole log
(`PromptLogResponse` / `ToolLogResponse` / `FlowLogResponse`, each requiring the file (`prompt` / `tool` / `flow`:
path, name, id, version, timestamps, counts) and `evaluator_logs`), and `humanloop` 0.8.38 hands that body to the
app as a plain dict, so the app reads exactly what shipper answers. An update names only the log (and, for prompts
and tools, the file id), so the file's path, version and kernel are remembered from the log's create, for the most
recent creates this process planned (bounded). A log shipper never saw created (or one from before a restart) still
gets a valid answer: the ids it names, and the fields only the create knew left empty. What shipper cannot know at
all is filled as Humanloop fills it for a fresh log: no evaluator logs yet, counts of 1, timestamps of now.

As sent: a prompt log's usage goes in `prompt_tokens` / `output_tokens` and its cost in `prompt_cost` /
`output_cost`; shipper's marks go in a log's `metadata` (an update's only when it carries one). Redaction never
touches `path`, `id`, `log_id` or `trace_parent_id`: they name the file, key the log and order it after its parent
(nor a held span's ids, shipper/otlp/join.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.config.sinks import VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.records import BadInput
from shipper.vendors.base import (
    ID,
    Builder,
    Plan,
    Proxied,
    Route,
    Spooled,
    is_id,
    normalize_path,
    plan_routes,
    route,
)
from shipper.vendors.llm import SPAN_IDS_FIELD, LlmCall, Request, Step, derived_id, iso
from shipper.vendors.sent import Sent, Usage, dict_at, obj, sent

# file type → (id field in answers, placeholder prefix for the file, placeholder prefix for its version)
FILES = {"prompts": ("prompt_id", "pr_shp_", "prv_shp_"), "flows": ("flow_id", "fl_shp_", "flv_shp_"),
         "tools": ("tool_id", "tl_shp_", "tlv_shp_")}  # fmt: skip
PLACEHOLDER = re.compile(r"^(pr|fl|tl|prv|flv|tlv)_shp_[0-9a-f]{24}$")


# Enough for every update that follows its create within seconds, at any rate ingest can take; a few MB at most.
REMEMBERED_LOGS = 4096


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a log's create told about its file: the ids the app was given and the kernel fields an answer carries."""

    file_id: str
    version_id: str = ""
    path: str = ""
    kernel: dict[str, Any] = field(default_factory=dict)  # prompt: model; flow: attributes; tool: function


def file_facts(kind: str, file_id: str, version_id: str, body: dict[str, Any]) -> FileFacts:
    """The facts of a create's body worth an update's answer: the path and the few kernel fields models require."""
    path = body.get("path")
    kernel = body.get(kind[:-1])
    kept: dict[str, Any] = {}
    if isinstance(kernel, dict):
        if kind == "prompts" and isinstance(kernel.get("model"), str):
            kept["model"] = kernel["model"]
        elif kind == "flows" and isinstance(kernel.get("attributes"), dict):
            kept["attributes"] = kernel["attributes"]
        elif kind == "tools" and isinstance(fn := kernel.get("function"), dict) and isinstance(fn.get("name"), str):
            # The SDK's model requires a description; a function the app gave without one gets an empty one.
            kept["function"] = {"description": "", **fn}
    return FileFacts(file_id, version_id, path if isinstance(path, str) else "", kept)


class RecentLogs:
    """Log id → its file's facts, for the newest `limit` creates; the oldest is forgotten first."""

    def __init__(self, limit: int = REMEMBERED_LOGS) -> None:
        self.limit = limit
        self._facts: OrderedDict[str, FileFacts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._facts)

    def remember(self, log_id: str, facts: FileFacts) -> None:
        self._facts[log_id] = facts
        self._facts.move_to_end(log_id)
        while len(self._facts) > self.limit:
            self._facts.popitem(last=False)

    def recall(self, log_id: str) -> FileFacts | None:
        return self._facts.get(log_id)


def _file(kind: str, facts: FileFacts, now: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "path": facts.path, "id": facts.file_id, "name": facts.path.rsplit("/", 1)[-1], "type": kind[:-1],
        "version_id": facts.version_id, "created_at": now, "updated_at": now, "last_used_at": now,
        "version_logs_count": 1, "total_logs_count": 1, "inputs": [],
    }  # fmt: skip
    if kind == "prompts":
        answer["model"] = facts.kernel.get("model", "")
    elif kind == "flows":
        answer["attributes"] = facts.kernel.get("attributes", {})
    elif "function" in facts.kernel:
        answer["function"] = facts.kernel["function"]
    return answer


def update_answer(kind: str, log_id: str, file_id: str | None, body: dict[str, Any], facts: FileFacts | None) -> Any:
    """The updated log: the fields this update set, its ids, its file, and no evaluator logs yet."""
    if facts is None or (file_id is not None and facts.file_id != file_id):
        facts = FileFacts(file_id or "")
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    singular = kind[:-1]
    return {
        **body, "id": log_id, f"{singular}_id": facts.file_id, "version_id": facts.version_id,
        singular: _file(kind, facts, now), "evaluator_logs": [],
    }  # fmt: skip


def _usage(body: dict[str, Any]) -> Usage:
    prompt = obj(body.get("prompt"))
    messages = body.get("messages")
    output = body.get("output_message") if body.get("output_message") is not None else body.get("output")
    return Usage(
        prompt.get("model"), messages if isinstance(messages, list) else None, output, prompt.get("tools"),
        prompt.get("provider"), completion_tokens="output_tokens", cost=("prompt_cost", "output_cost"),
    )  # fmt: skip


OUTBOUND: Sequence[Sent] = (
    sent("POST", r"/prompts/log", dict_at("metadata"), _usage),
    sent("POST", r"/(?:flows|tools)/log", dict_at("metadata")),
    sent("PATCH", rf"/(?:prompts|tools)/{ID}/log/{ID}", dict_at("metadata", create=False)),
)


def _placeholder(prefix: str, path: str) -> str:
    return prefix + hashlib.sha256(path.encode()).hexdigest()[:24]


def _file_ids(kind: str, body: dict[str, Any], query: Mapping[str, str]) -> tuple[str, str]:
    """The file and version ids to tell the app: its own when it named them, placeholders otherwise."""
    _, file_prefix, version_prefix = FILES[kind]
    path = body.get("path")
    given = body.get("id")
    file_id = given if isinstance(given, str) else _placeholder(file_prefix, str(path))
    version_id = query.get("version_id") or _placeholder(version_prefix, f"{file_id}:{path}")
    return file_id, version_id


def span_log_id(trace_id: str, span_id: str) -> str:
    """The log id of the log a span became: its children name it as their `trace_parent_id`."""
    return "log_" + derived_id("log", trace_id, span_id).replace("-", "")


def _trace_parent(record: LlmCall | Step) -> str | None:
    return span_log_id(record.trace_id, record.parent_agent) if record.parent_agent else None


def from_call(call: LlmCall, sink: VendorSinkConfig) -> Request:
    """A prompt log as `prompts.log` sends it. The Prompt file is `<service.name>/<span name>` (Humanloop versions it
    by its kernel: model, provider and parameters); the log id is derived from the span, so a repeated export is the
    same log. The span's ids go in `metadata`."""
    prompt: dict[str, Any] = {"model": call.model or "", **call.parameters}
    if call.provider:
        prompt["provider"] = call.provider
    body: dict[str, Any] = {
        "path": f"{call.service}/{call.name}", "log_id": span_log_id(call.trace_id, call.span_id),
        "prompt": prompt, "messages": list(call.messages), "start_time": iso(call.start), "end_time": iso(call.end),
        "metadata": call.otel_ids(), "log_status": "complete",
    }  # fmt: skip
    optional = {
        "output_message": call.output, "output": call.output_text, "prompt_tokens": call.input_tokens,
        "output_tokens": call.output_tokens, "finish_reason": call.finish_reason, "error": call.error,
        "trace_parent_id": _trace_parent(call),
    }  # fmt: skip
    body.update({name: value for name, value in optional.items() if value is not None})
    return Request("POST", "/v5/prompts/log", body)


def from_step(step: Step, sink: VendorSinkConfig) -> Request:
    """A tool log as `tools.log` sends it (the kernel a function of the tool's name and description), or a flow log
    as `flows.log` does; `inputs` a dict (arguments that are not one go in as `input`), `output` text."""
    body: dict[str, Any] = {
        "path": f"{step.service}/{step.entity}", "log_id": span_log_id(step.trace_id, step.span_id),
        "start_time": iso(step.start), "end_time": iso(step.end), "metadata": step.otel_ids(),
        "log_status": "complete",
    }  # fmt: skip
    if step.kind == "tool":
        function = {"name": step.entity, "description": step.description or "", "parameters": {}}
        body["tool"] = {"function": function}
    else:
        body["flow"] = {"attributes": {"agent": step.entity}}
    inputs = step.input if isinstance(step.input, dict) else {"input": step.input}
    output = step.output if isinstance(step.output, str) or step.output is None else orjson.dumps(step.output).decode()
    optional = {
        "inputs": inputs if step.input is not None else None, "output": output, "error": step.error,
        "trace_parent_id": _trace_parent(step),
    }  # fmt: skip
    body.update({name: value for name, value in optional.items() if value is not None})
    return Request("POST", "/v5/tools/log" if step.kind == "tool" else "/v5/flows/log", body)


class Humanloop:
    """Holds the recent logs' file facts, so an update is answered with its file as Humanloop answers it."""

    type = "humanloop"
    auth_header = "X-API-KEY"
    outbound = OUTBOUND
    protected = frozenset({"path", "id", "log_id", "trace_parent_id", SPAN_IDS_FIELD})
    from_call = staticmethod(from_call)
    from_step = staticmethod(from_step)

    def __init__(self) -> None:
        self.recent = RecentLogs()
        self.routes: Sequence[Route] = (
            route("POST", r"/prompts/log", self._log("prompts")),
            route("POST", r"/flows/log", self._log("flows")),
            route("POST", r"/tools/log", self._log("tools")),
            route("PATCH", rf"/prompts/{ID}/log/{ID}", self._update("prompts", True)),
            route("PATCH", rf"/flows/logs/{ID}", self._update("flows", False)),
            route("PATCH", rf"/tools/{ID}/log/{ID}", self._update("tools", True)),
        )

    def _log(self, kind: str) -> Builder:
        def build(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
            if not isinstance(body.get("path"), str) and not isinstance(body.get("id"), str):
                raise BadInput("invalid_body", f"a {kind[:-1]} log needs `path` or `id`", field="path")
            log_id = body.get("log_id") or f"log_{uuid.uuid4().hex}"
            if not is_id(log_id):
                raise BadInput("invalid_body", "log_id must be an id string", field="log_id")
            file_id, version_id = _file_ids(kind, body, query)
            self.recent.remember(log_id, file_facts(kind, file_id, version_id, body))
            parent = body.get("trace_parent_id")
            answer: dict[str, Any] = {"id": log_id, FILES[kind][0]: file_id, "version_id": version_id}
            if kind == "flows" and "log_status" in body:
                answer["log_status"] = body["log_status"]
            return Spooled(
                "POST", f"/{kind}/log", {**body, "log_id": log_id}, 200, answer, key=f"hl:log:{log_id}",
                after=f"hl:log:{parent}" if isinstance(parent, str) and parent else None, kind="create",
                query={k: v for k, v in query.items() if k in ("version_id", "environment")},
            )  # fmt: skip

        return build

    def _update(self, kind: str, with_file_id: bool) -> Builder:
        def build(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
            log_id = m.group(2) if with_file_id else m.group(1)
            file_id = m.group(1) if with_file_id else None
            answer = update_answer(kind, log_id, file_id, body, self.recent.recall(log_id))
            return Spooled("PATCH", m.group(0), body, 200, answer, key=f"hl:log:{log_id}", kind="update")

        return build

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        path = normalize_path(path)
        versioned = path.startswith("/v5/")
        if versioned:
            path = path[len("/v5") :]
        planned = plan_routes(self.routes, method, path, query, body)
        if planned is None and versioned:
            return Proxied(path)
        return planned

    def key_from(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("X-API-KEY") or None

    def auth_value(self, key: str) -> str:
        return key

    def success(self, row: SpoolRow) -> frozenset[int] | None:
        return None

    def learn(self, row: SpoolRow, answer: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(answer, dict):
            return ()
        kind = row.path.split("/")[1]
        body = orjson.loads(row.body)
        query = orjson.loads(row.query) if row.query else {}
        file_id, version_id = _file_ids(kind, body, query)
        pairs = [(file_id, answer.get(FILES[kind][0])), (version_id, answer.get("version_id"))]
        return tuple((local, remote) for local, remote in pairs if PLACEHOLDER.match(local) and isinstance(remote, str))

    def placeholders(self, row: SpoolRow) -> Sequence[str]:
        found = [segment for segment in row.path.split("/") if PLACEHOLDER.match(segment)]
        version = orjson.loads(row.query).get("version_id") if row.query else None
        if isinstance(version, str) and PLACEHOLDER.match(version):
            found.append(version)
        return found

    def rewrite(self, row: SpoolRow, upstream: Mapping[str, str]) -> tuple[str, bytes | None]:
        """A file id in the path must be known; an unknown version placeholder is dropped (the path names it)."""
        path = "/".join(upstream[s] if PLACEHOLDER.match(s) else s for s in row.path.split("/"))
        if not row.query:
            return path, None
        query = orjson.loads(row.query)
        version = query.get("version_id")
        if isinstance(version, str) and PLACEHOLDER.match(version):
            if version in upstream:
                query["version_id"] = upstream[version]
            else:
                del query["version_id"]
        return path, orjson.dumps(query) if query else None
