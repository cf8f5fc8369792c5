"""Humanloop: prompt, flow and tool logs and their updates, as `humanloop` 0.8.38 sends them.

A log's id is the client's `log_id` or one minted here and forwarded, so the remote uses the id the app was told.
The prompt/flow/tool id is the remote's to assign and is only known once the create is delivered: the app gets a
placeholder derived from the file's `path` (`pr_shp_…`), the create's answer teaches the real id (kept in the spool's
id map), and an update's path is rewritten with it before it is sent. Updates share their log's key, so they leave
after the create; a log with `trace_parent_id` waits for its parent flow log. An update is answered with the whole
updated log, as Humanloop answers it (humanloop_answers.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shipper.core.rows import SpoolRow
from shipper.records import BadInput
from shipper.sinks.humanloop_answers import RecentLogs, file_facts, update_answer
from shipper.sinks.vendor import ID, Builder, Plan, Proxied, Route, Spooled, normalize_path, plan_routes, route

# file type → (id field in answers, placeholder prefix for the file, placeholder prefix for its version)
FILES = {"prompts": ("prompt_id", "pr_shp_", "prv_shp_"), "flows": ("flow_id", "fl_shp_", "flv_shp_"),
         "tools": ("tool_id", "tl_shp_", "tlv_shp_")}  # fmt: skip
PLACEHOLDER = re.compile(r"^(pr|fl|tl|prv|flv|tlv)_shp_[0-9a-f]{24}$")


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


class Humanloop:
    """Holds the recent logs' file facts, so an update is answered with its file as Humanloop answers it."""

    type = "humanloop"
    auth_header = "X-API-KEY"

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
                raise BadInput(422, "invalid_body", f"a {kind[:-1]} log needs `path` or `id`", field="path")
            log_id = body.get("log_id") or f"log_{uuid.uuid4().hex}"
            if not isinstance(log_id, str) or not re.fullmatch(ID, log_id):
                raise BadInput(422, "invalid_body", "log_id must be an id string", field="log_id")
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
