"""Spans as LLM calls: every convention instrumentations emit reads as the same call, and a span that is no LLM
call (a tool, an agent, an embedding, an HTTP request) is passed over. Table-driven over hand-built spans with the
conventions' real attribute names (tests/otlp_spans.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shipper.otlp.genai import Unmappable, llm_call
from tests.otlp_spans import NEW_GENERATION, OLD_GENERATION, OPENINFERENCE, js, span

ASKED = [{"role": "system", "content": "Be terse"}, {"role": "user", "content": "What is 2+2?"}]
REPLY = {"role": "assistant", "content": "4"}

# The new generation's message content as one event on the span instead of attributes.
DETAILS_EVENT = (
    {k: v for k, v in NEW_GENERATION.items() if not k.endswith(("messages", "instructions"))},
    (
        (
            "gen_ai.client.inference.operation.details",
            {k: v for k, v in NEW_GENERATION.items() if k.endswith(("messages", "instructions"))},
        ),
    ),
)
# The old generation's per-message span events (`gen_ai.*.message`, `gen_ai.choice`).
OLD_EVENTS = (
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.response.finish_reasons": ["stop"],
    },
    (
        ("gen_ai.system.message", {"content": "Be terse"}),
        ("gen_ai.user.message", {"gen_ai.event.content": js({"content": "What is 2+2?"})}),
        ("gen_ai.choice", {"gen_ai.event.content": js({"index": 0, "finish_reason": "stop", "message": REPLY})}),
    ),
)


@pytest.mark.parametrize(
    ("attrs", "events", "session", "finish"),
    [
        (NEW_GENERATION, (), "conv-1", "stop"),
        (*DETAILS_EVENT, "conv-1", "stop"),
        (OLD_GENERATION, (), None, "stop"),
        (*OLD_EVENTS, None, "stop"),
        (OPENINFERENCE, (), "conv-1", None),
    ],
    ids=["new-attributes", "new-details-event", "old-flattened", "old-events", "openinference"],
)
def test_every_convention_reads_as_the_same_call(
    attrs: dict[str, Any], events: tuple[tuple[str, dict[str, Any]], ...], session: str | None, finish: str | None
) -> None:
    call = llm_call(span(attrs, events), "calc-app")
    assert call is not None
    assert (call.messages, call.output) == (ASKED, REPLY)
    assert (call.model, call.provider) == ("gpt-4o-mini-2024-07-18", "openai")
    assert (call.input_tokens, call.output_tokens) == (12, 1)
    assert call.parameters == {"temperature": 0.2}
    assert (call.session, call.finish_reason, call.error) == (session, finish, None)
    assert (call.trace_id, call.span_id, call.parent_id) == (
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173",
    )  # fmt: skip
    assert (call.start, call.end, call.service) == (1795347092.746, 1795347093.246, "calc-app")


def test_tool_calls_and_tool_results_read_in_the_chat_shape() -> None:
    attrs = {
        **NEW_GENERATION,
        "gen_ai.input.messages": js([
            {"role": "user", "parts": [{"type": "text", "content": "2+2?"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 2}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": 4}]},
        ]),
        "gen_ai.system_instructions": js([]),
    }  # fmt: skip
    call = llm_call(span(attrs), "app")
    assert call is not None
    assert call.messages == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":2}'}}
        ]},
        {"role": "tool", "content": "4", "tool_call_id": "c1"},
    ]  # fmt: skip


def test_old_flattened_tool_calls_are_read_too() -> None:
    attrs = {
        **OLD_GENERATION,
        "gen_ai.completion.0.content": "",
        "gen_ai.completion.0.tool_calls.0.id": "c1",
        "gen_ai.completion.0.tool_calls.0.name": "add",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"a": 2}',
    }
    call = llm_call(span(attrs), "app")
    assert call is not None and call.output == {
        "role": "assistant", "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}],
    }  # fmt: skip


def test_openinference_without_messages_falls_back_to_its_input_and_output_values() -> None:
    attrs = {k: v for k, v in OPENINFERENCE.items() if "_messages." not in k}
    call = llm_call(span(attrs), "app")
    assert call is not None
    assert call.messages == [{"role": "user", "content": OPENINFERENCE["input.value"]}]
    assert call.output == REPLY


@pytest.mark.parametrize(
    "attrs",
    [
        {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai", "gen_ai.request.model": "e-3"},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"},
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "calc"},
        {"openinference.span.kind": "TOOL", "tool.name": "add"},
        {"openinference.span.kind": "CHAIN", "input.value": "q"},
        {"llm.request.type": "embedding", "gen_ai.system": "openai"},
        {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"},
        {},
    ],
    ids=["embeddings", "tool", "agent", "oi-tool", "oi-chain", "openllmetry-embedding", "http", "bare"],
)
def test_a_span_that_is_no_llm_call_is_passed_over(attrs: dict[str, Any]) -> None:
    assert llm_call(span(attrs), "app") is None


def test_an_llm_span_without_an_operation_name_is_known_by_its_provider_and_model() -> None:
    attrs = {k: v for k, v in NEW_GENERATION.items() if k != "gen_ai.operation.name"}
    assert llm_call(span(attrs), "app") is not None


def test_an_errored_span_carries_its_status_message_and_unknown_attributes_are_ignored() -> None:
    attrs = {**NEW_GENERATION, "vendor.unknown": "x", "gen_ai.usage.input_tokens": "twelve"}
    call = llm_call(span(attrs, error="rate limited"), "app")
    assert call is not None and call.error == "rate limited" and call.input_tokens is None


@pytest.mark.parametrize(
    "ids",
    [
        {"trace_id": bytes(8)},
        {"span_id": bytes(16)},
        {"parent": bytes(4)},
    ],
)
def test_an_llm_span_with_ids_of_the_wrong_length_is_unmappable(ids: dict[str, bytes]) -> None:
    with pytest.raises(Unmappable, match="16 and 8 bytes"):
        llm_call(span(NEW_GENERATION, **ids), "app")


def test_a_root_span_has_no_parent() -> None:
    call = llm_call(span(NEW_GENERATION, parent=b""), "app")
    assert call is not None and call.parent_id is None


ODD_VALUES = [["a", "list"], 7, float("inf"), -1, True, {"a": {"kv": "list"}}, "", "not json ["]


@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
@pytest.mark.parametrize("convention", [NEW_GENERATION, OLD_GENERATION, OPENINFERENCE], ids=["new", "old", "oi"])
def test_any_known_attribute_holding_any_type_is_read_or_ignored_never_a_crash(
    convention: dict[str, Any], odd: Any
) -> None:
    for name in convention:
        call = llm_call(span({**convention, name: odd}), "app")
        assert call is None or isinstance(call.messages, list)
