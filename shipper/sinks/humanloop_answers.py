"""The answer Humanloop gives a log update, built locally: the updated log with its file, as the SDK's models want.

Humanloop answers `PATCH …/log/{log}` with the whole log: `PromptLogResponse` / `ToolLogResponse` /
`FlowLogResponse`, each requiring the file (`prompt` / `tool` / `flow`: path, name, id, version, timestamps, counts)
and `evaluator_logs`. `humanloop` 0.8.38 hands that body to the app as a plain dict, so the app reads exactly what
shipper answers. An update names only the log (and, for prompts and tools, the file id), so the file's path, version
and kernel are remembered from the log's create, for the most recent creates this process planned (bounded). A log
shipper never saw created (or one from before a restart) still gets a valid answer: the ids it names, and the fields
only the create knew left empty. What shipper cannot know at all is filled as Humanloop fills it for a fresh log:
no evaluator logs yet, counts of 1, timestamps of now. Not responsible for routing or ids (humanloop.py).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

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
