"""LLM calls read from spans as each vendor's own record, planned by its adapter exactly as the SDK's call would be
(ids, keys, order), and a whole export request planned for every routed sink: mapped, passed over or refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from shipper.config.sinks import VendorSinkConfig
from shipper.config.transform import EnrichConfig
from shipper.enrich.usage import Enricher
from shipper.otlp.genai import llm_call
from shipper.otlp.plan import plan_spans
from shipper.vendors import VENDORS
from shipper.vendors.base import Adapter, Spooled
from shipper.vendors.llm import LlmCall
from tests.otlp_spans import NEW_GENERATION, OLD_GENERATION, OPENINFERENCE, export, span

PROJECT = "11111111-2222-3333-4444-555555555555"
TRACE = "5b8efff798038103d269b633813fc60c"
ASKED = [{"role": "system", "content": "Be terse"}, {"role": "user", "content": "What is 2+2?"}]
REPLY = {"role": "assistant", "content": "4"}
IDS = {"otel_trace_id": TRACE, "otel_span_id": "eee19b7ec3c1b174", "otel_parent_span_id": "eee19b7ec3c1b173"}


@dataclass(frozen=True)
class Routed:
    name: str
    adapter: Adapter
    config: VendorSinkConfig


def routed(vendor: str) -> Routed:
    project = PROJECT if vendor == "freeplay" else ""
    config = VendorSinkConfig(type=vendor, base_url="http://127.0.0.1:1", api_key_env="KEY", project_id=project)
    return Routed(vendor[:2], VENDORS[vendor], config)


def call_of(attrs: dict[str, Any], **options: Any) -> LlmCall:
    call = llm_call(span(attrs, **options), "calc-app")
    assert call is not None
    return call


def planned(vendor: str, call: LlmCall) -> Spooled:
    sink = routed(vendor)
    request = sink.adapter.from_call(call, sink.config)
    plan = sink.adapter.plan(request.method, request.path, {}, request.body)
    assert isinstance(plan, Spooled)
    return plan


@pytest.mark.parametrize("attrs", [NEW_GENERATION, OLD_GENERATION, OPENINFERENCE], ids=["new", "old", "openinference"])
def test_a_freeplay_completion_holds_all_messages_call_info_and_usage(attrs: dict[str, Any]) -> None:
    plan = planned("freeplay", call_of(attrs))
    body = plan.body
    assert body["messages"] == [*ASKED, REPLY]  # all_messages: the reply last, as the SDK records it
    assert body["call_info"] == {
        "start_time": 1795347092.746, "end_time": 1795347093.246, "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai", "llm_parameters": {"temperature": 0.2},
        "usage": {"prompt_tokens": 12, "completion_tokens": 1},
    }  # fmt: skip
    assert body["custom_metadata"] == IDS
    cid = body["completion_id"]
    assert uuid.UUID(cid) and plan.answer == {"completion_id": cid} and plan.key == f"fp:c:{cid}"
    session = plan.path.split("/")[5]
    assert plan.path == f"/v2/projects/{PROJECT}/sessions/{session}/completions" and plan.scope == f"fp:s:{session}"


def test_a_freeplay_session_is_the_conversation_else_the_trace_and_a_repeat_is_the_same_completion() -> None:
    with_conversation = planned("freeplay", call_of(NEW_GENERATION))
    again = planned("freeplay", call_of(NEW_GENERATION))
    without = planned("freeplay", call_of({k: v for k, v in NEW_GENERATION.items() if k != "gen_ai.conversation.id"}))
    as_uuid = planned("freeplay", call_of({**NEW_GENERATION, "gen_ai.conversation.id": str(uuid.UUID(TRACE))}))
    assert with_conversation.path == again.path and with_conversation.body == again.body
    assert with_conversation.path.split("/")[5] == str(uuid.uuid5(uuid.NAMESPACE_URL, "otel-conversation:conv-1"))
    assert without.path.split("/")[5] == as_uuid.path.split("/")[5] == str(uuid.UUID(TRACE))


def test_a_span_without_usage_leaves_it_to_enrichment() -> None:
    attrs = {k: v for k, v in NEW_GENERATION.items() if "usage" not in k}
    assert "usage" not in planned("freeplay", call_of(attrs)).body["call_info"]
    assert {"prompt_tokens", "output_tokens"}.isdisjoint(planned("humanloop", call_of(attrs)).body)
    assert {"prompt_tokens", "completion_tokens"}.isdisjoint(planned("keywordsai", call_of(attrs)).body)


@pytest.mark.parametrize("attrs", [NEW_GENERATION, OLD_GENERATION, OPENINFERENCE], ids=["new", "old", "openinference"])
def test_a_humanloop_prompt_log_holds_the_kernel_messages_output_and_tokens(attrs: dict[str, Any]) -> None:
    plan = planned("humanloop", call_of(attrs))
    body = plan.body
    assert plan.path == "/prompts/log" and plan.key == f"hl:log:{body['log_id']}" and plan.after is None
    assert body["path"] == "calc-app/chat gpt-4o-mini"
    assert body["prompt"] == {"model": "gpt-4o-mini-2024-07-18", "temperature": 0.2, "provider": "openai"}
    assert (body["messages"], body["output_message"], body["output"]) == (ASKED, REPLY, "4")
    assert (body["prompt_tokens"], body["output_tokens"]) == (12, 1)
    assert (body["start_time"], body["end_time"]) == ("2026-11-22T11:31:32.746000Z", "2026-11-22T11:31:33.246000Z")
    assert body["metadata"] == IDS and body["log_status"] == "complete"
    assert planned("humanloop", call_of(attrs)).body["log_id"] == body["log_id"]


@pytest.mark.parametrize("attrs", [NEW_GENERATION, OLD_GENERATION, OPENINFERENCE], ids=["new", "old", "openinference"])
def test_a_keywordsai_request_log_is_placed_in_its_trace_by_the_spans_ids(attrs: dict[str, Any]) -> None:
    plan = planned("keywordsai", call_of(attrs))
    body = plan.body
    assert plan.path == "/api/request-logs/create/" and plan.kind == "create"
    assert (body["trace_unique_id"], body["span_unique_id"], body["span_parent_id"]) == (
        TRACE, "eee19b7ec3c1b174", "eee19b7ec3c1b173",
    )  # fmt: skip
    assert (body["prompt_messages"], body["completion_message"]) == (ASKED, REPLY)
    assert (body["model"], body["prompt_tokens"], body["completion_tokens"]) == ("gpt-4o-mini-2024-07-18", 12, 1)
    assert (body["latency"], body["status_code"], body["timestamp"]) == (0.5, 200, "2026-11-22T11:31:33.246000Z")


def test_an_errored_span_is_logged_as_failed_where_the_vendor_has_a_place_for_it() -> None:
    call = call_of(NEW_GENERATION, error="rate limited")
    keywords = planned("keywordsai", call).body
    assert (keywords["status_code"], keywords["error_message"]) == (500, "rate limited")
    assert planned("humanloop", call).body["error"] == "rate limited"


def test_an_export_request_is_planned_for_every_routed_sink_and_the_rest_is_counted() -> None:
    sinks = [routed("freeplay"), routed("humanloop"), routed("keywordsai")]
    request = export(
        span(NEW_GENERATION, span_id=bytes.fromhex("0000000000000001")),
        span({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"}, name="embeddings e"),
        span(NEW_GENERATION, trace_id=bytes(4), name="bad ids"),
        span(OPENINFERENCE, span_id=bytes.fromhex("0000000000000002")),
    )
    plan = plan_spans(request, sinks, hold_until=0.0)
    assert (plan.mapped, plan.passed_over, plan.refused, plan.held) == (2, 1, 1, 0)
    assert "16 and 8 bytes" in plan.reason
    assert [(row.sink, row.path.rstrip("/").split("/")[-1]) for row in plan.rows] == [
        ("fr", "completions"), ("hu", "log"), ("ke", "create"),
    ] * 2  # fmt: skip
    assert all(row.credential is None and row.due == 0.0 for row in plan.rows)  # the sink's own key, sent at once
    assert all(orjson.loads(row.body)["metadata" if row.sink != "fr" else "custom_metadata"] for row in plan.rows)


def test_a_refusal_names_the_span_and_the_sink() -> None:
    deep = '[{"role": "user", "content": ' + "[" * 300 + '"x"' + "]" * 300 + "}]"
    request = export(span({**NEW_GENERATION, "gen_ai.input.messages": deep}, name="deep"))
    plan = plan_spans(request, [routed("freeplay"), routed("keywordsai")], hold_until=0.0)
    assert plan.rows == [] and plan.refused == 1
    assert plan.reason.startswith("span 'deep': sink fr: the body cannot be stored as JSON")


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_a_record_from_a_span_without_usage_is_counted_by_enrichment_as_a_drop_in_record_is(vendor: str) -> None:
    attrs = {k: v for k, v in NEW_GENERATION.items() if "usage" not in k}
    row = planned(vendor, call_of(attrs)).row("s", None)
    enriched = orjson.loads(Enricher(EnrichConfig(cost=False)).apply(vendor, row.method, row.path, row.body))
    usage = enriched["call_info"]["usage"] if vendor == "freeplay" else enriched
    assert usage["prompt_tokens"] > 0


def test_a_body_json_cannot_hold_refuses_the_span_not_the_request() -> None:
    deep = '[{"role": "user", "content": ' + "[" * 300 + '"x"' + "]" * 300 + "}]"  # past what orjson writes
    attrs = {**NEW_GENERATION, "gen_ai.input.messages": deep}
    plan = plan_spans(
        export(span(attrs), span(NEW_GENERATION, span_id=bytes(7) + b"\x01")), [routed("keywordsai")], 0.0
    )
    assert (plan.mapped, plan.refused, len(plan.rows)) == (1, 1, 1)
    assert "cannot be stored as JSON" in plan.reason
