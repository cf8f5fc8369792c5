"""The vendor adapters are pure: each drop-in call maps to one row (or a proxy) exactly as the contracts say."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shipper.core.rows import SpoolRow
from shipper.ingest.responses import status_of
from shipper.records import BadInput
from shipper.vendors.base import Proxied, Spooled, normalize_path
from shipper.vendors.freeplay import Freeplay
from shipper.vendors.humanloop import PLACEHOLDER, Humanloop
from shipper.vendors.keywordsai import KeywordsAI

P = "/v2/projects/11111111-2222-3333-4444-555555555555"
SID = "08d33bf9-fc92-420d-9d7c-a74d1a2e4440"
TID = "b7006ff4-46d4-4393-afa8-00563cebf7dc"
CID = "25209fa2-e32c-4d86-a615-8e571eaa0d5b"
MSGS = {"messages": [{"role": "user", "content": "hi"}]}


def spooled(plan: Any) -> Spooled:
    assert isinstance(plan, Spooled), plan
    return plan


def as_row(plan: Spooled, attempts: int = 1) -> SpoolRow:
    row = plan.row("s", None)
    return SpoolRow(
        1, "s", row.key, row.method, row.path, row.query, row.body, 0.0, attempts, row.scope, row.after, row.kind
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "key", "kind", "success"),
    [
        ("POST", f"{P}/sessions/{SID}/completions", {**MSGS, "completion_id": CID}, 200, f"fp:c:{CID}", "create", None),
        (
            "POST",
            f"{P}/completions/{CID}",
            {"new_messages": None, "eval_results": None},
            200,
            f"fp:c:{CID}",
            "update",
            None,
        ),
        ("POST", f"{P}/sessions/{SID}/traces/id/{TID}", {"input": "q"}, 201, f"fp:t:{TID}", "create", {201}),
        ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}", {"output": "a"}, 200, f"fp:t:{TID}", "update", {200}),
        ("POST", f"{P}/completion-feedback/id/{CID}", {"thumbs_up": True}, 201, f"fp:c:{CID}", "update", {201}),
        ("POST", f"{P}/trace-feedback/id/{TID}", {"thumbs_up": True}, 201, f"fp:t:{TID}", "update", {201}),
        ("PATCH", f"{P}/sessions/id/{SID}/metadata", {"ticket": "T-1"}, 200, f"fp:s:{SID}:meta", "update", {200}),
        ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}/metadata", {"k": 1}, 200, f"fp:t:{TID}", "update", {200}),
        ("DELETE", f"{P}/sessions/{SID}", None, 201, f"fp:s:{SID}:delete", "update", {201}),
    ],
)
def test_freeplay_routes_map_to_rows_with_the_contract_status_and_success_codes(
    method: str, path: str, body: Any, status: int, key: str, kind: str, success: set[int] | None
) -> None:
    adapter = Freeplay()
    for prefix in ("/api", "", "//api/", "/"):
        plan = spooled(adapter.plan(method, prefix + path + "/", {}, body))
        assert (plan.path, plan.status, plan.key, plan.kind) == (path, status, key, kind)
        assert adapter.success(as_row(plan)) == (None if success is None else frozenset(success))


def test_freeplay_completion_echoes_or_mints_its_id_and_forwards_it() -> None:
    adapter = Freeplay()
    echoed = spooled(adapter.plan("POST", f"/api{P}/sessions/{SID}/completions", {}, {**MSGS, "completion_id": CID}))
    assert echoed.answer == {"completion_id": CID}
    minted = spooled(adapter.plan("POST", f"/api{P}/sessions/{SID}/completions", {}, dict(MSGS)))
    cid = minted.answer["completion_id"]
    assert len(cid) == 36 and minted.body["completion_id"] == cid and minted.key == f"fp:c:{cid}"
    assert minted.scope == f"fp:s:{SID}"


def test_freeplay_session_rows_wait_for_the_session_but_children_do_not_wait_for_parents() -> None:
    adapter = Freeplay()
    meta = spooled(adapter.plan("PATCH", f"/api{P}/sessions/id/{SID}/metadata", {}, {"a": 1}))
    assert meta.after == f"fp:s:{SID}"
    child = spooled(adapter.plan("POST", f"/api{P}/sessions/{SID}/completions", {}, {**MSGS, "parent_id": TID}))
    assert child.after is None  # the SDK records the parent trace last; Freeplay takes children first


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "messages"), ({"messages": []}, "messages"), ({**MSGS, "completion_id": "../x"}, "completion_id")],
)
def test_freeplay_rejects_a_completion_the_remote_would_refuse(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput) as caught:
        Freeplay().plan("POST", f"/api{P}/sessions/{SID}/completions", {}, body)
    assert status_of(caught.value) == 422 and caught.value.detail["field"] == field


def test_freeplay_reads_are_proxied_and_foreign_paths_are_not_claimed() -> None:
    adapter = Freeplay()
    assert adapter.plan("GET", f"/api{P}/prompt-templates/name/x", {}, None) == Proxied(f"{P}/prompt-templates/name/x")
    assert adapter.plan("POST", f"/api{P}/test-runs", {}, {}) == Proxied(f"{P}/test-runs")
    assert adapter.plan("POST", "/v5/prompts/log", {}, {}) is None


def test_humanloop_log_mints_a_log_id_and_placeholders_then_learns_the_upstream_ids() -> None:
    adapter = Humanloop()
    query = {"environment": "production"}
    plan = spooled(adapter.plan("POST", "/v5/prompts/log", query, {"path": "demo/p", "output": "4"}))
    log_id = plan.answer["id"]
    assert plan.body["log_id"] == log_id and plan.key == f"hl:log:{log_id}" and plan.kind == "create"
    assert PLACEHOLDER.match(plan.answer["prompt_id"]) and PLACEHOLDER.match(plan.answer["version_id"])
    assert plan.query == query
    learned = adapter.learn(as_row(plan), {"id": log_id, "prompt_id": "pr_real", "version_id": "prv_real"})
    assert dict(learned) == {plan.answer["prompt_id"]: "pr_real", plan.answer["version_id"]: "prv_real"}


def test_humanloop_update_path_is_rewritten_with_the_upstream_prompt_id() -> None:
    adapter = Humanloop()
    create = spooled(adapter.plan("POST", "/prompts/log", {}, {"path": "demo/p", "log_id": "log_1"}))
    pid = create.answer["prompt_id"]
    update = spooled(adapter.plan("PATCH", f"/v5/prompts/{pid}/log/log_1", {}, {"output": "x"}))
    assert update.key == create.key == "hl:log:log_1" and update.kind == "update"
    row = as_row(update)
    assert adapter.placeholders(row) == [pid]
    assert adapter.rewrite(row, {pid: "pr_real"}) == ("/prompts/pr_real/log/log_1", None)
    with pytest.raises(KeyError):
        adapter.rewrite(row, {})


def test_humanloop_keeps_real_ids_and_orders_children_after_their_flow() -> None:
    adapter = Humanloop()
    plan = spooled(
        adapter.plan("POST", "/v5/tools/log", {"version_id": "tv_1"}, {"id": "tl_1", "trace_parent_id": "log_f"})
    )
    assert plan.answer["tool_id"] == "tl_1" and plan.answer["version_id"] == "tv_1"
    assert plan.after == "hl:log:log_f"
    assert adapter.placeholders(as_row(plan)) == []
    flow_update = spooled(adapter.plan("PATCH", "/v5/flows/logs/log_f", {}, {"log_status": "complete"}))
    assert (flow_update.path, flow_update.key) == ("/flows/logs/log_f", "hl:log:log_f")
    assert flow_update.answer["id"] == "log_f"


def test_humanloop_drops_an_unknown_version_placeholder_rather_than_send_it() -> None:
    adapter = Humanloop()
    first = spooled(adapter.plan("POST", "/v5/prompts/log", {}, {"path": "p"}))
    version = first.answer["version_id"]
    again = spooled(adapter.plan("POST", "/v5/prompts/log", {"version_id": version}, {"path": "p"}))
    row = as_row(again)
    assert adapter.placeholders(row) == [version]
    assert adapter.rewrite(row, {}) == ("/prompts/log", None)
    assert adapter.rewrite(row, {version: "prv_x"}) == ("/prompts/log", orjson.dumps({"version_id": "prv_x"}))


def test_humanloop_requires_a_path_or_id_and_proxies_other_v5_calls() -> None:
    with pytest.raises(BadInput) as caught:
        Humanloop().plan("POST", "/v5/prompts/log", {}, {"output": "x"})
    assert caught.value.detail["field"] == "path"
    assert Humanloop().plan("POST", "/v5/prompts/call", {}, {}) == Proxied("/prompts/call")
    assert Humanloop().plan("GET", "/prompts", {}, None) is None


@pytest.mark.parametrize(
    "path", ["/request-logs/create", "/api/request-logs/create/", "/api/request-logs", "/api/request-logs/"]
)
def test_keywordsai_create_paths_all_forward_to_the_documented_endpoint(path: str) -> None:
    plan = spooled(KeywordsAI().plan("POST", path, {}, {"model": "m"}))
    assert (plan.path, plan.status, plan.answer) == ("/api/request-logs/create/", 200, {"message": "log successful"})
    assert plan.key is None


def test_keywordsai_updates_and_reads() -> None:
    adapter = KeywordsAI()
    update = spooled(adapter.plan("PATCH", "/api/request-logs/abc123/", {}, {"note": "x"}))
    assert (update.path, update.key) == ("/api/request-logs/abc123/", "kw:abc123")
    assert adapter.plan("GET", "/request-logs/list", {}, None) == Proxied("/api/request-logs/list")
    assert adapter.plan("GET", "/api/request-logs/abc", {}, None) == Proxied("/api/request-logs/abc")
    assert adapter.plan("POST", "/v1/records", {}, {}) is None


def test_bearer_and_api_key_headers_are_read_per_vendor() -> None:
    assert Freeplay().key_from({"Authorization": "Bearer fp-1"}) == "fp-1"
    assert Freeplay().key_from({"Authorization": "Basic x"}) is None
    assert Humanloop().key_from({"X-API-KEY": "hl-1"}) == "hl-1"
    assert KeywordsAI().auth_value("kw") == "Bearer kw"


def test_a_completion_without_an_id_is_given_a_fresh_uuid4_in_its_row_and_its_answer() -> None:
    plans = [spooled(Freeplay().plan("POST", f"{P}/sessions/{SID}/completions", {}, dict(MSGS))) for _ in range(200)]
    minted = [plan.answer["completion_id"] for plan in plans]
    assert len(set(minted)) == len(minted)
    for plan, cid in zip(plans, minted, strict=True):
        assert str(uuid.UUID(cid)) == cid and uuid.UUID(cid).version == 4 and uuid.UUID(cid).variant == uuid.RFC_4122
        assert plan.body["completion_id"] == cid and plan.key == f"fp:c:{cid}"


@pytest.mark.parametrize("cid", ["", None, 0])
def test_an_empty_completion_id_is_minted_as_none_would_be(cid: Any) -> None:
    plan = spooled(Freeplay().plan("POST", f"{P}/sessions/{SID}/completions", {}, {**MSGS, "completion_id": cid}))
    assert uuid.UUID(plan.answer["completion_id"]).version == 4


@pytest.mark.parametrize("cid", ["a/b", "../x", "x" * 129, 7, ["x"], "-leading-dash"])
def test_a_completion_id_that_is_not_an_id_string_is_refused(cid: Any) -> None:
    with pytest.raises(BadInput) as refused:
        Freeplay().plan("POST", f"{P}/sessions/{SID}/completions", {}, {**MSGS, "completion_id": cid})
    assert refused.value.code == "invalid_body" and refused.value.detail == {"field": "completion_id"}


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/a/b", "/a/b"), ("//a///b//", "/a/b"), ("/a/b/", "/a/b"), ("/", "/"), ("", "/"), ("///", "/")],
)
def test_a_path_is_normalized_whether_or_not_it_doubles_slashes(path: str, normal: str) -> None:
    assert normalize_path(path) == normal
