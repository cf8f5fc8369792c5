"""Humanloop as an upstream (`https://api.humanloop.com/v5`), strict to the `humanloop==0.8.38` wire contract.

Creates: `POST /v5/{prompts,flows,tools}/log` (the `version_id` / `environment` query is kept with the log). The
server owns the file ids: a Prompt, Flow or Tool gets `pr_`/`fl_`/`tl_` + random hex the first time its `path` is
seen, and a version id per (path, kernel); these never equal anything a client made up. A client-supplied
`log_id` becomes the log's id; without one the server mints `log_` + hex.
Updates: `PATCH /v5/prompts/{prompt_id}/log/{log_id}`, `/v5/flows/logs/{log_id}`, `/v5/tools/{tool_id}/log/{log_id}`.
A PATCH for a log the server never received, or whose file id is not the one the server assigned to that log,
is answered 404 and recorded in `violations`: this is how tests see an update sent before its create, or a path
left with a placeholder id. Reads: `GET /v5/prompts` (paginated list).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes.base import FakeVendor, Reply, Seen, error, is_object

ID = r"[^/]+"
KINDS = {"prompts": "prompt", "flows": "flow", "tools": "tool"}
PREFIX = {"prompt": ("pr_", "prv_"), "flow": ("fl_", "flv_"), "tool": ("tl_", "tlv_")}
KERNEL = {"prompt": "prompt", "flow": "flow", "tool": "tool"}


@dataclass
class File:
    kind: str
    id: str
    path: str
    versions: dict[bytes, str] = field(default_factory=dict)  # kernel JSON -> version id


@dataclass
class Log:
    kind: str
    id: str
    file_id: str
    version_id: str
    query: dict[str, str]
    body: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        fields = {**self.body}
        for update in self.updates:
            fields.update(update)
        fields.pop("log_id", None)
        return {**fields, "id": self.id, f"{self.kind}_id": self.file_id, "version_id": self.version_id}


class HumanloopFake(FakeVendor):
    vendor = "humanloop"
    base_path = "/v5"

    def __init__(self, api_keys: tuple[str, ...] = ("hl_sk_test_123",), port: int | None = None) -> None:
        super().__init__(api_keys, port)
        self.files: dict[tuple[str, str], File] = {}  # (kind, path) -> file
        self.logs: dict[str, Log] = {}
        self.unknown_trace_parents: list[str] = []  # logs whose trace_parent_id the server had not seen (yet)
        for plural in KINDS:
            self.route("POST", rf"/v5/{plural}/log", self.create_log)
        self.route("PATCH", rf"/v5/prompts/(?P<file_id>{ID})/log/(?P<log_id>{ID})", self.update_prompt_log)
        self.route("PATCH", rf"/v5/flows/logs/(?P<log_id>{ID})", self.update_flow_log)
        self.route("PATCH", rf"/v5/tools/(?P<file_id>{ID})/log/(?P<log_id>{ID})", self.update_tool_log)
        self.route("GET", r"/v5/prompts", self.list_prompts)

    def key_from(self, headers: Any) -> str | None:
        return headers.get("X-API-KEY") or None

    # -- ids the server owns ----------------------------------------------------------------------------------

    def file_id(self, kind: str, path: str) -> str | None:
        found = self.files.get((kind, path))
        return found.id if found else None

    def _file(self, kind: str, body: dict[str, Any]) -> File | Reply:
        if isinstance(body.get("path"), str) and body["path"]:
            key = (kind, body["path"])
            if key not in self.files:
                self.files[key] = File(kind, PREFIX[kind][0] + secrets.token_hex(8), body["path"])
            return self.files[key]
        if isinstance(body.get("id"), str):
            for found in self.files.values():
                if found.kind == kind and found.id == body["id"]:
                    return found
            return error(404, f"{kind} {body['id']} not found")
        return error(422, f"{kind} log needs a path or an id")

    def _version(self, found: File, body: dict[str, Any]) -> str:
        kernel = orjson.dumps(body.get(KERNEL[found.kind]), option=orjson.OPT_SORT_KEYS)
        if kernel not in found.versions:
            found.versions[kernel] = PREFIX[found.kind][1] + secrets.token_hex(8)
        return found.versions[kernel]

    # -- creates ----------------------------------------------------------------------------------------------

    def create_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        kind = KINDS[seen.path.split("/")[2]]
        body = seen.body
        if not is_object(body):
            return error(422, "body must be a JSON object")
        if set(seen.query) - {"version_id", "environment"}:
            return error(422, f"unexpected query parameters {sorted(seen.query)}")
        found = self._file(kind, body)
        if isinstance(found, Reply):
            return found
        log_id = body.get("log_id")
        if log_id is None:
            log_id = "log_" + secrets.token_hex(12)
        elif not isinstance(log_id, str) or not log_id:
            return error(422, "log_id must be a non-empty string")
        existing = self.logs.get(log_id)
        if existing is not None:
            if existing.kind != kind or existing.file_id != found.id:
                return error(409, f"log {log_id} already exists for {existing.kind} {existing.file_id}")
            self.duplicates += 1
        else:
            parent = body.get("trace_parent_id")
            if parent is not None and parent not in self.logs:
                self.unknown_trace_parents.append(log_id)
            self.logs[log_id] = Log(kind, log_id, found.id, self._version(found, body), dict(seen.query), body)
        self.event(seen, f"{kind}.create", log_id)
        log = self.logs[log_id]
        answer = {"id": log.id, f"{kind}_id": log.file_id, "version_id": log.version_id}
        if kind == "flow":
            answer["log_status"] = body.get("log_status")
        return Reply(200, answer)

    # -- updates ----------------------------------------------------------------------------------------------

    def update_prompt_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        return self._update(seen, "prompt", p["log_id"], p["file_id"])

    def update_flow_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        return self._update(seen, "flow", p["log_id"], None)

    def update_tool_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        return self._update(seen, "tool", p["log_id"], p["file_id"])

    def _update(self, seen: Seen, kind: str, log_id: str, file_id: str | None) -> Reply:
        body = seen.body
        if not is_object(body):
            return error(422, "body must be a JSON object")
        if seen.query:
            return error(422, "updates take no query parameters")
        log = self.logs.get(log_id)
        if log is None:
            self.violate(seen, f"log {log_id} was never created")
            return error(404, f"log {log_id} not found")
        if log.kind != kind:
            self.violate(seen, f"log {log_id} is a {log.kind} log")
            return error(404, f"{kind} log {log_id} not found")
        if file_id is not None and file_id != log.file_id:
            self.violate(seen, f"log {log_id} belongs to {kind} {log.file_id}, not {file_id}")
            return error(404, f"{kind} {file_id} has no log {log_id}")
        log.updates.append(body)
        self.event(seen, f"{kind}.update", log_id)
        return Reply(200, log.answer())

    # -- reads (proxied by shipper) ---------------------------------------------------------------------------

    def list_prompts(self, seen: Seen, p: dict[str, str]) -> Reply:
        try:
            page = int(seen.query.get("page", "1"))
            size = int(seen.query.get("size", "10"))
        except ValueError:
            return error(422, "page and size must be integers")
        if page < 1 or size < 1:
            return error(422, "page and size must be positive")
        prompts = sorted((f for f in self.files.values() if f.kind == "prompt"), key=lambda f: f.path)
        records = [
            {
                "id": f.id,
                "path": f.path,
                "name": f.path.rsplit("/", 1)[-1],
                "type": "prompt",
                "version_id": next(reversed(f.versions.values()), None),
            }
            for f in prompts[(page - 1) * size : page * size]
        ]
        return Reply(200, {"records": records, "page": page, "size": size, "total": len(prompts)})
