"""Freeplay as an upstream (`https://<org>.freeplay.ai/api`), strict to the `freeplay==0.6.1` wire contract.

Serves only `/api/v2/projects/...`. Writes answer exactly what the SDK demands: completion create and update 200
with `{"completion_id"}` (the body's id echoed, else a fresh uuid4); trace POST, completion and trace feedback,
session DELETE and test-runs 201; trace PATCH and both metadata PATCHes 200. A write that needs an entity the
fake has never received (a completion update before its create, a trace PATCH before its POST, session metadata
before anything was recorded in the session, any write to a session after its DELETE) is answered 404 and
recorded in `violations`.
Sessions are implicit, as at Freeplay: a session exists once a completion or trace was recorded in it. A
`parent_id` is not an ordering constraint (the SDK posts a parent trace after its children).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeVendor, Reply, Seen, bearer, error, is_object

ID = r"[^/]+"
P = rf"/api/v2/projects/(?P<pid>{ID})"

TRACE_KEYS = frozenset(
    {
        "agent_name",
        "input",
        "output",
        "parent_id",
        "custom_metadata",
        "eval_results",
        "test_run_info",
        "kind",
        "name",
        "start_time",
        "end_time",
    }
)
TRACE_UPDATE_KEYS = frozenset({"output", "metadata", "feedback", "eval_results", "test_run_info"})


def prompt_template(project_id: str, name: str, environment: str) -> dict[str, Any]:
    """A template as `GET .../prompt-templates/name/{name}` returns it (decodes into the SDK's PromptTemplate)."""
    return {
        "prompt_template_id": "tpl-" + name,
        "prompt_template_version_id": "tplv-" + name,
        "prompt_template_name": name,
        "content": [
            {"role": "system", "content": "Be terse.", "media_slots": []},
            {"role": "user", "content": "{{question}}", "media_slots": []},
        ],
        "metadata": {
            "provider": "openai",
            "flavor": "openai_chat",
            "model": "gpt-4o-mini",
            "params": {"temperature": 0.2},
            "provider_info": None,
        },
        "project_id": project_id,
        "format_version": 3,
        "environment": environment,
        "tool_schema": None,
        "output_schema": None,
    }


@dataclass
class Entity:
    project_id: str
    session_id: str
    body: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)


class FreeplayFake(FakeVendor):
    vendor = "freeplay"
    base_path = "/api"

    def __init__(self, api_keys: tuple[str, ...] = ("fp-test-key-123",), port: int | None = None) -> None:
        super().__init__(api_keys, port)
        self.completions: dict[str, Entity] = {}
        self.traces: dict[str, Entity] = {}
        self.sessions: dict[str, str] = {}  # session id -> project id, once anything was recorded in it
        self.session_metadata: dict[str, list[dict[str, Any]]] = {}
        self.deleted_sessions: set[str] = set()
        self.templates: set[str] = {"calc"}
        self.datasets: dict[str, list[dict[str, Any]]] = {
            "golden": [{"test_case_id": "tc-1", "variables": {"question": "2+2?"}, "output": "4", "history": None}]
        }
        self.test_runs: dict[str, dict[str, Any]] = {}
        self.route("POST", rf"{P}/sessions/(?P<sid>{ID})/completions", self.create_completion)
        self.route("POST", rf"{P}/completions/(?P<cid>{ID})", self.update_completion)
        self.route("POST", rf"{P}/sessions/(?P<sid>{ID})/traces/id/(?P<tid>{ID})", self.record_trace)
        self.route("PATCH", rf"{P}/sessions/(?P<sid>{ID})/traces/id/(?P<tid>{ID})", self.update_trace)
        self.route("POST", rf"{P}/completion-feedback/id/(?P<cid>{ID})", self.completion_feedback)
        self.route("POST", rf"{P}/trace-feedback/id/(?P<tid>{ID})", self.trace_feedback)
        self.route("PATCH", rf"{P}/sessions/id/(?P<sid>{ID})/metadata", self.session_metadata_update)
        self.route("PATCH", rf"{P}/sessions/(?P<sid>{ID})/traces/id/(?P<tid>{ID})/metadata", self.trace_metadata)
        self.route("DELETE", rf"{P}/sessions/(?P<sid>{ID})", self.delete_session)
        self.route("POST", rf"{P}/test-runs", self.create_test_run)
        self.route("GET", rf"{P}/test-runs/id/(?P<rid>{ID})", self.get_test_run)
        self.route("GET", rf"{P}/prompt-templates/name/(?P<name>{ID})", self.get_template)
        self.route("GET", rf"{P}/prompt-templates/all/(?P<env>{ID})", self.get_templates)
        self.route("GET", r"/api/v2/projects/all", self.get_projects)

    def key_from(self, headers: Any) -> str | None:
        return bearer(headers)

    # -- recordings -------------------------------------------------------------------------------------------

    def create_completion(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body):
            return error(400, "body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list")
        if self._deleted(seen, p["sid"]):
            return error(404, "session was deleted")
        cid = body.get("completion_id")
        if cid is None:
            cid = str(uuid.uuid4())
        elif not isinstance(cid, str) or not _is_uuid(cid):
            return error(400, "completion_id must be a UUID")
        if cid in self.completions:
            self.duplicates += 1  # a redelivery: the stored completion (and its updates) stays as it is
        else:
            self.completions[cid] = Entity(p["pid"], p["sid"], body)
        self.sessions.setdefault(p["sid"], p["pid"])
        self.event(seen, "completion.create", cid)
        return Reply(200, {"completion_id": cid})

    def update_completion(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body) or set(body) != {"new_messages", "eval_results"}:
            return error(400, "body must be {new_messages, eval_results}")
        completion = self._completion(seen, p)
        if completion is None:
            return error(404, "completion not found")
        completion.updates.append(body)
        self.event(seen, "completion.update", p["cid"])
        return Reply(200, {"completion_id": p["cid"]})

    def completion_feedback(self, seen: Seen, p: dict[str, str]) -> Reply:
        if not is_object(seen.body):
            return error(400, "feedback must be a JSON object")
        completion = self._completion(seen, p)
        if completion is None:
            return error(404, "completion not found")
        completion.feedback.append(seen.body)
        self.event(seen, "completion.feedback", p["cid"])
        return Reply(201, {})

    def _completion(self, seen: Seen, p: dict[str, str]) -> Entity | None:
        completion = self.completions.get(p["cid"])
        if completion is None:
            self.violate(seen, f"completion {p['cid']} was never created")
        elif completion.project_id != p["pid"]:
            self.violate(seen, f"completion {p['cid']} belongs to project {completion.project_id}")
            return None
        elif self._deleted(seen, completion.session_id):
            return None
        return completion

    # -- traces -----------------------------------------------------------------------------------------------

    def record_trace(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body) or set(body) != TRACE_KEYS:
            return error(400, f"trace body must have exactly the keys {sorted(TRACE_KEYS)}")
        if self._deleted(seen, p["sid"]):
            return error(404, "session was deleted")
        if p["tid"] in self.traces:
            self.duplicates += 1
        else:
            self.traces[p["tid"]] = Entity(p["pid"], p["sid"], body)
        self.sessions.setdefault(p["sid"], p["pid"])
        self.event(seen, "trace.record", p["tid"])
        return Reply(201, {})

    def update_trace(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body) or not body or not set(body) <= TRACE_UPDATE_KEYS:
            return error(400, f"trace update keys must be among {sorted(TRACE_UPDATE_KEYS)}")
        trace = self._trace(seen, p)
        if trace is None:
            return error(404, "trace not found")
        trace.updates.append(body)
        self.event(seen, "trace.update", p["tid"])
        return Reply(200, {})

    def trace_feedback(self, seen: Seen, p: dict[str, str]) -> Reply:
        if not is_object(seen.body):
            return error(400, "feedback must be a JSON object")
        trace = self._trace(seen, p)
        if trace is None:
            return error(404, "trace not found")
        trace.feedback.append(seen.body)
        self.event(seen, "trace.feedback", p["tid"])
        return Reply(201, {})

    def trace_metadata(self, seen: Seen, p: dict[str, str]) -> Reply:
        if not is_object(seen.body):
            return error(400, "metadata must be a JSON object")
        trace = self._trace(seen, p)
        if trace is None:
            return error(404, "trace not found")
        trace.metadata.append(seen.body)
        self.event(seen, "trace.metadata", p["tid"])
        return Reply(200, {})

    def _trace(self, seen: Seen, p: dict[str, str]) -> Entity | None:
        trace = self.traces.get(p["tid"])
        if trace is None:
            self.violate(seen, f"trace {p['tid']} was never recorded")
            return None
        if trace.project_id != p["pid"] or ("sid" in p and trace.session_id != p["sid"]):
            self.violate(seen, f"trace {p['tid']} belongs to {trace.project_id}/{trace.session_id}")
            return None
        if self._deleted(seen, trace.session_id):
            return None
        return trace

    # -- sessions ---------------------------------------------------------------------------------------------

    def session_metadata_update(self, seen: Seen, p: dict[str, str]) -> Reply:
        if not is_object(seen.body):
            return error(400, "metadata must be a JSON object")
        if not self._session(seen, p):
            return error(404, "session not found")
        self.session_metadata.setdefault(p["sid"], []).append(seen.body)
        self.event(seen, "session.metadata", p["sid"])
        return Reply(200, {})

    def delete_session(self, seen: Seen, p: dict[str, str]) -> Reply:
        if not self._session(seen, p):
            return error(404, "session not found")
        self.deleted_sessions.add(p["sid"])
        self.event(seen, "session.delete", p["sid"])
        return Reply(201, {})

    def _deleted(self, seen: Seen, session_id: str) -> bool:
        if session_id in self.deleted_sessions:
            self.violate(seen, f"session {session_id} was already deleted")
            return True
        return False

    def _session(self, seen: Seen, p: dict[str, str]) -> bool:
        if self._deleted(seen, p["sid"]):
            return False
        project = self.sessions.get(p["sid"])
        if project is None:
            self.violate(seen, f"session {p['sid']} has nothing recorded in it")
        elif project != p["pid"]:
            self.violate(seen, f"session {p['sid']} belongs to project {project}")
        return project == p["pid"]

    # -- reads and test runs (proxied by shipper, never spooled) ----------------------------------------------

    def create_test_run(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body) or not isinstance(body.get("dataset_name"), str):
            return error(400, "dataset_name is required")
        cases = self.datasets.get(body["dataset_name"])
        if cases is None:
            return error(404, f"dataset {body['dataset_name']} not found")
        run_id = str(uuid.uuid4())
        self.test_runs[run_id] = {"project_id": p["pid"], **body}
        return Reply(201, {"test_run_id": run_id, "test_cases": cases, "trace_test_cases": []})

    def get_test_run(self, seen: Seen, p: dict[str, str]) -> Reply:
        run = self.test_runs.get(p["rid"])
        if run is None or run["project_id"] != p["pid"]:
            return error(404, "test run not found")
        return Reply(
            200,
            {
                "id": p["rid"],
                "name": run.get("test_run_name"),
                "description": run.get("test_run_description"),
                "summary_statistics": {"auto_evaluation": {}, "human_evaluation": {}},
                "status": "COMPLETED",
            },
        )

    def get_template(self, seen: Seen, p: dict[str, str]) -> Reply:
        if p["name"] not in self.templates:
            return error(404, f"prompt template {p['name']} not found")
        return Reply(200, prompt_template(p["pid"], p["name"], seen.query.get("environment", "latest")))

    def get_templates(self, seen: Seen, p: dict[str, str]) -> Reply:
        return Reply(
            200, {"prompt_templates": [prompt_template(p["pid"], name, p["env"]) for name in sorted(self.templates)]}
        )

    def get_projects(self, seen: Seen, p: dict[str, str]) -> Reply:
        return Reply(200, {"projects": [{"id": pid, "name": pid} for pid in sorted(set(self.sessions.values()))]})


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
