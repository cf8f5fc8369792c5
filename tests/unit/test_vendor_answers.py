"""Every drop-in call is answered with a body the vendor's own SDK reads as that call's response model.

Each route of each adapter is planned as the SDK calls it and its answer is checked against the model the installed
SDK (a test extra) parses that call's response with; a route missing from the table fails the coverage test, so a new
route cannot ship without its answer checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from freeplay.resources.recordings import RecordResponse
from humanloop.types import (
    CreateFlowLogResponse,
    CreatePromptLogResponse,
    CreateToolLogResponse,
    FlowLogResponse,
    PromptLogResponse,
    ToolLogResponse,
)

from shipper.vendors.base import Adapter, Route, Spooled, find_route
from shipper.vendors.freeplay import ROUTES as FREEPLAY_ROUTES
from shipper.vendors.freeplay import Freeplay
from shipper.vendors.humanloop import Humanloop
from shipper.vendors.keywordsai import ROUTES as KEYWORDS_ROUTES
from shipper.vendors.keywordsai import KeywordsAI

P = "/v2/projects/11111111-2222-3333-4444-555555555555"
SID = "08d33bf9-fc92-420d-9d7c-a74d1a2e4440"
TID = "b7006ff4-46d4-4393-afa8-00563cebf7dc"
CID = "25209fa2-e32c-4d86-a615-8e571eaa0d5b"
Check = Callable[[Any], object]


def record_response(answer: Any) -> object:
    """freeplay 0.6.1 reads `json["completion_id"]` into its RecordResponse dataclass."""
    fields = {f.name for f in dataclasses.fields(RecordResponse)}
    assert isinstance(answer, dict) and set(answer) == fields
    return RecordResponse(completion_id=str(answer["completion_id"]))


def ignored(answer: Any) -> object:
    """Answers freeplay ignores (trace, feedback, metadata, delete): still a JSON object, as vendors.md asks."""
    assert answer == {}
    return answer


def keywords_message(answer: Any) -> object:
    """keywordsai 1.0.4 returns the JSON as is; its docs read `response["message"]`."""
    assert isinstance(answer, dict) and isinstance(answer["message"], str)
    return answer


FREEPLAY: list[tuple[str, str, Any, Check]] = [
    ("POST", f"{P}/sessions/{SID}/completions", {"messages": [{"role": "user", "content": "hi"}]}, record_response),
    ("POST", f"{P}/completions/{CID}", {"new_messages": None, "eval_results": None}, record_response),
    ("POST", f"{P}/sessions/{SID}/traces/id/{TID}", {"input": "q", "output": "a"}, ignored),
    ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}", {"output": "a"}, ignored),
    ("POST", f"{P}/completion-feedback/id/{CID}", {"thumbs_up": True}, ignored),
    ("POST", f"{P}/trace-feedback/id/{TID}", {"thumbs_up": True}, ignored),
    ("PATCH", f"{P}/sessions/id/{SID}/metadata", {"ticket": "T-1"}, ignored),
    ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}/metadata", {"k": 1}, ignored),
    ("DELETE", f"{P}/sessions/{SID}", None, ignored),
]
KEYWORDS: list[tuple[str, str, Any, Check]] = [
    ("POST", "/request-logs/create", {"model": "m", "input": "i"}, keywords_message),
    ("POST", "/api/request-logs/", {"model": "m", "input": "i"}, keywords_message),
    ("PATCH", "/api/request-logs/batch-update/", {"logs": [{"unique_id": "u1", "note": "x"}]}, keywords_message),
    ("PATCH", "/api/request-logs/u1/", {"note": "x"}, keywords_message),
]


def _id(value: Any) -> str:
    """Test ids the same in every process (pytest-xdist compares them): a function by name, never by address."""
    return str(getattr(value, "__name__", value))[:60]


def spooled(adapter: Adapter, method: str, path: str, body: Any, query: dict[str, str] | None = None) -> Spooled:
    plan = adapter.plan(method, path, query or {}, body)
    assert isinstance(plan, Spooled), plan
    return plan


@pytest.mark.parametrize(("method", "path", "body", "check"), FREEPLAY + KEYWORDS, ids=_id)
def test_freeplay_and_keywords_answers_are_what_their_sdks_read(
    method: str, path: str, body: Any, check: Check
) -> None:
    adapter: Adapter = Freeplay() if path.startswith("/v2/") else KeywordsAI()
    check(spooled(adapter, method, path, body).answer)


def test_every_freeplay_keywords_and_humanloop_route_has_its_answer_checked() -> None:
    def covered(routes: Sequence[Route], calls: list[tuple[str, str]], strip: str = "") -> set[str]:
        found = {find_route(routes, method, path.rstrip("/").removeprefix(strip)) for method, path in calls}
        return {chosen.pattern.pattern for chosen, _ in (f for f in found if f is not None)}

    assert covered(FREEPLAY_ROUTES, [(m, p) for m, p, _, _ in FREEPLAY]) == {r.pattern.pattern for r in FREEPLAY_ROUTES}
    assert covered(KEYWORDS_ROUTES, [(m, p) for m, p, _, _ in KEYWORDS]) == {r.pattern.pattern for r in KEYWORDS_ROUTES}
    hl_calls = [("POST", f"/v5/{k}/log") for k in ("prompts", "flows", "tools")]
    hl_calls += [("PATCH", "/v5/prompts/pr_1/log/l1"), ("PATCH", "/v5/flows/logs/l1"), ("PATCH", "/v5/tools/t/log/l1")]
    routes = Humanloop().routes
    assert covered(routes, hl_calls, "/v5") == {r.pattern.pattern for r in routes}


PROMPT = {"model": "gpt-4o-mini", "template": [{"role": "system", "content": "Be terse"}], "temperature": 0.2}
HL_CREATES = [
    ("prompts", {"path": "demo/calc-prompt", "prompt": PROMPT, "output": "4", "log_status": "incomplete"},
     CreatePromptLogResponse, PromptLogResponse, {"output": "four", "log_status": "complete"}),
    ("flows", {"path": "demo/calc-flow", "inputs": {"q": "2+2"}, "flow": {"attributes": {"team": "a"}},
               "log_status": "incomplete"},
     CreateFlowLogResponse, FlowLogResponse, {"output": "4", "log_status": "complete"}),
    ("tools", {"path": "demo/add", "tool": {"function": {"name": "add", "parameters": {}}}, "output": "4"},
     CreateToolLogResponse, ToolLogResponse, {"output": "5", "log_status": "complete"}),
]  # fmt: skip


def hl_update_path(kind: str, log: Any, file_id: str) -> str:
    return f"/v5/flows/logs/{log.id}" if kind == "flows" else f"/v5/{kind}/{file_id}/log/{log.id}"


@pytest.mark.parametrize(("kind", "body", "created_model", "updated_model", "update"), HL_CREATES, ids=lambda v: v)
def test_humanloop_log_and_its_update_validate_as_the_sdks_models_with_the_ids_the_app_was_given(
    kind: str, body: dict[str, Any], created_model: Any, updated_model: Any, update: dict[str, Any]
) -> None:
    adapter = Humanloop()
    singular = kind[:-1]
    log = created_model.model_validate(spooled(adapter, "POST", f"/v5/{kind}/log", body).answer)
    file_id = getattr(log, f"{singular}_id")
    answer = spooled(adapter, "PATCH", hl_update_path(kind, log, file_id), update).answer
    updated = updated_model.model_validate(answer)

    assert updated.id == log.id and updated.evaluator_logs == []
    assert updated.output == update["output"] and updated.log_status == "complete"
    file = getattr(updated, singular)
    assert (file.id, file.version_id, file.path, file.name) == (file_id, log.version_id, body["path"], body["path"][5:])
    assert file.version_logs_count == file.total_logs_count == 1 and file.created_at.tzinfo is not None
    if kind == "prompts":
        assert file.model == "gpt-4o-mini"
    elif kind == "flows":
        assert file.attributes == {"team": "a"}
    else:
        assert file.function is not None and file.function.name == "add"


@pytest.mark.parametrize(("kind", "body", "created_model", "updated_model", "update"), HL_CREATES, ids=lambda v: v)
def test_humanloop_update_of_a_log_shipper_never_saw_created_still_validates_with_the_ids_it_names(
    kind: str, body: dict[str, Any], created_model: Any, updated_model: Any, update: dict[str, Any]
) -> None:
    path = "/v5/flows/logs/log_elsewhere" if kind == "flows" else f"/v5/{kind}/real_file_1/log/log_elsewhere"
    updated = updated_model.model_validate(spooled(Humanloop(), "PATCH", path, update).answer)
    assert updated.id == "log_elsewhere" and updated.output == update["output"]
    assert getattr(updated, kind[:-1]).id == ("" if kind == "flows" else "real_file_1")


def test_humanloop_forgets_the_oldest_logs_first_and_stays_bounded() -> None:
    adapter = Humanloop()
    limit = adapter.recent.limit
    ids = [spooled(adapter, "POST", "/v5/prompts/log", {"path": f"p{n}"}).answer for n in range(limit + 1)]
    oldest, newest = ids[0], ids[-1]
    assert adapter.recent.recall(oldest["id"]) is None and len(adapter.recent) == limit
    recalled = adapter.recent.recall(newest["id"])
    assert recalled is not None and recalled.path == f"p{limit}"
