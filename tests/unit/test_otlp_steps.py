"""Tool and agent spans, in each convention, as each vendor's own record (a Freeplay trace, a Humanloop tool or flow
log, a Keywords AI log of type tool or agent), and every record linked to its nearest recorded ancestor in the
export request: planned ancestors first, through spans no vendor records, never to one refused or not held."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shipper.otlp.join import SPAN_PATH, joined_call, plan_record, read_held
from shipper.otlp.plan import plan_logs, plan_spans
from shipper.otlp.steps import step_of
from shipper.records import NewRow
from shipper.vendors.freeplay import span_record_id
from shipper.vendors.humanloop import span_log_id
from tests.otlp_spans import DETAILS_EVENT, NEW_GENERATION, NO_CONTENT, TRACE, export, js, logs_export, span
from tests.unit.test_otlp_records import routed

SINKS = [routed("freeplay"), routed("humanloop"), routed("keywordsai")]
AGENT, HTTP, LLM, TOOL = (bytes(7) + bytes([n]) for n in (1, 2, 3, 4))
OUTSIDE = bytes(7) + b"\x09"  # a span some other export request holds
TRACE_KEYS = {"agent_name", "input", "output", "parent_id", "custom_metadata", "eval_results", "test_run_info", "kind",
              "name", "start_time", "end_time"}  # fmt: skip

GENAI_TOOL = {
    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add", "gen_ai.tool.description": "Adds two numbers",
    "gen_ai.tool.call.arguments": js({"a": 2, "b": 2}), "gen_ai.tool.call.result": "4",
}  # fmt: skip
GENAI_AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "calc", "gen_ai.conversation.id": "conv-1"}


@pytest.mark.parametrize(
    ("attrs", "kind", "entity", "given", "result"),
    [
        (GENAI_TOOL, "tool", "add", {"a": 2, "b": 2}, 4),
        (
            {"openinference.span.kind": "TOOL", "tool.name": "add", "input.value": js({"a": 2}), "output.value": "x"},
            "tool",
            "add",
            {"a": 2},
            "x",
        ),
        (
            {"traceloop.span.kind": "tool", "traceloop.entity.name": "add", "traceloop.entity.input": "2 and 2"},
            "tool",
            "add",
            "2 and 2",
            None,
        ),
        (GENAI_AGENT, "agent", "calc", None, None),
        (
            {"openinference.span.kind": "AGENT", "input.value": "What is 2+2?", "output.value": "4"},
            "agent",
            "the span",
            "What is 2+2?",
            4,
        ),
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "calc-flow"}, "agent", "calc-flow", None, None),
    ],
    ids=["genai-tool", "openinference-tool", "openllmetry-tool", "genai-agent", "openinference-agent", "workflow"],
)
def test_tool_and_agent_spans_are_read_in_every_convention(
    attrs: dict[str, Any], kind: str, entity: str, given: Any, result: Any
) -> None:
    step = step_of(span(attrs, name="the span"), "calc-app")
    assert step is not None
    assert (step.kind, step.entity, step.input, step.output) == (kind, entity, given, result)


@pytest.mark.parametrize(
    "attrs",
    [{"gen_ai.operation.name": "embeddings"}, {"openinference.span.kind": "CHAIN"}, {"traceloop.span.kind": ["tool"]}],
)
def test_other_spans_are_no_step(attrs: dict[str, Any]) -> None:
    assert step_of(span(attrs), "calc-app") is None


def agent_run(**agent: Any) -> list[Span]:
    """As the SDK exports one agent run: the children first (they end first). The LLM call sits under an HTTP span
    no vendor records."""
    return [
        span(NEW_GENERATION, span_id=LLM, parent=HTTP),
        span(GENAI_TOOL, name="execute_tool add", span_id=TOOL, parent=AGENT),
        span({"http.request.method": "POST"}, name="POST", span_id=HTTP, parent=AGENT),
        span({**GENAI_AGENT, **agent}, name="invoke_agent calc", span_id=AGENT, parent=b""),
    ]


def bodies(rows: list[NewRow], sink: str) -> list[dict[str, Any]]:
    return [orjson.loads(row.body) for row in rows if row.sink == sink]


def test_an_agent_run_is_recorded_parents_first_with_every_record_linked_to_its_nearest_recorded_ancestor() -> None:
    plan = plan_spans(export(*agent_run()), SINKS, hold_until=0.0)
    assert (plan.mapped, plan.passed_over, plan.refused) == (3, 1, 0)
    agent_trace = span_record_id(TRACE.hex(), AGENT.hex())
    agent, tool, completion = bodies(
        plan.rows, "fr"
    )  # by depth: the agent, the tool, then the call under the HTTP span
    assert set(agent) == TRACE_KEYS and set(tool) == TRACE_KEYS  # what Freeplay's SDK sends: every key
    assert (agent["kind"], agent["agent_name"], agent["name"], agent["parent_id"]) == (
        "agent", "calc", "invoke_agent calc", None,
    )  # fmt: skip
    assert agent["start_time"].endswith("+00:00")
    assert (tool["kind"], tool["name"], tool["input"], tool["output"], tool["parent_id"]) == (
        "tool", "add", {"a": 2, "b": 2}, 4, agent_trace,
    )  # fmt: skip
    assert completion["parent_id"] == agent_trace  # through the HTTP span between them
    fr_rows = [row for row in plan.rows if row.sink == "fr"]
    assert fr_rows[0].path.endswith(f"/traces/id/{agent_trace}") and fr_rows[0].key == f"fp:t:{agent_trace}"
    assert len({row.scope for row in fr_rows}) == 1  # one session: the conversation's, which the tool inherits
    assert [body.get("session_identifier") for body in bodies(plan.rows, "ke")] == ["conv-1"] * 3

    flow_log = span_log_id(TRACE.hex(), AGENT.hex())
    hl_rows = [row for row in plan.rows if row.sink == "hu"]
    assert [row.path for row in hl_rows] == ["/flows/log", "/tools/log", "/prompts/log"]
    flow, tool_log, prompt = bodies(plan.rows, "hu")
    assert (flow["log_id"], flow["path"], flow["flow"]) == (
        flow_log,
        "calc-app/calc",
        {"attributes": {"agent": "calc"}},
    )
    assert tool_log["tool"] == {"function": {"name": "add", "description": "Adds two numbers", "parameters": {}}}
    assert (tool_log["inputs"], tool_log["output"]) == ({"a": 2, "b": 2}, "4")
    assert prompt["trace_parent_id"] == tool_log["trace_parent_id"] == flow_log
    assert [row.after for row in hl_rows] == [None, f"hl:log:{flow_log}", f"hl:log:{flow_log}"]  # the flow goes first

    kinds = [(body.get("log_type"), body.get("span_parent_id")) for body in bodies(plan.rows, "ke")]
    assert kinds == [("agent", None), ("tool", AGENT.hex()), (None, HTTP.hex())]  # OpenTelemetry's own parent


def test_a_record_whose_ancestors_another_request_holds_or_were_refused_links_to_none() -> None:
    alone = plan_spans(export(span(GENAI_TOOL, span_id=TOOL, parent=OUTSIDE)), SINKS, hold_until=0.0)
    deep = "[" * 300 + "]" * 300  # an input no JSON body can hold: the agent is refused, its children stand alone
    refused = plan_spans(export(*agent_run(**{"input.value": deep})), SINKS, hold_until=0.0)
    assert (refused.mapped, refused.refused) == (2, 1)
    for plan in (alone, refused):
        assert all(body["parent_id"] is None for body in bodies(plan.rows, "fr") if "kind" in body)
        assert all("parent_id" not in body for body in bodies(plan.rows, "fr") if "kind" not in body)
        assert all("trace_parent_id" not in body for body in bodies(plan.rows, "hu"))
        assert all(row.after is None for row in plan.rows)


def test_ids_that_loop_are_walked_no_further_than_the_request() -> None:
    looped = [span(GENAI_TOOL, span_id=TOOL, parent=AGENT), span(GENAI_AGENT, span_id=AGENT, parent=TOOL)]
    assert plan_spans(export(*looped), SINKS, hold_until=0.0).mapped == 2


def test_a_span_held_for_its_logs_keeps_the_links_and_session_its_request_gave_it() -> None:
    run = [span(NO_CONTENT_NO_CONVERSATION, span_id=LLM, parent=AGENT), span(GENAI_AGENT, span_id=AGENT, parent=b"")]
    plan = plan_spans(export(*run), SINKS, hold_until=1.0)
    assert (plan.mapped, plan.held) == (2, 1)
    for sink in SINKS:
        agent_row, held_row = [row for row in plan.rows if row.sink == sink.name]
        assert held_row.path == SPAN_PATH
        planned = plan_record(joined_call(read_held(held_row.body), parts(sink.name)), sink.adapter, sink.config)
        assert (planned.key, planned.scope, planned.after) == (held_row.key, held_row.scope, held_row.after)
        body = planned.body
        if sink.name == "fr":
            assert body["parent_id"] == span_record_id(TRACE.hex(), AGENT.hex())
            assert planned.scope == agent_row.scope  # the agent's conversation, inherited
        elif sink.name == "hu":
            assert body["trace_parent_id"] == span_log_id(TRACE.hex(), AGENT.hex())
        else:
            assert (body["session_identifier"], body["prompt_messages"][1]["content"]) == ("conv-1", "What is 2+2?")


NO_CONTENT_NO_CONVERSATION = {k: v for k, v in NO_CONTENT.items() if k != "gen_ai.conversation.id"}


def parts(sink: str) -> list[bytes]:
    # The details event of the LLM span (its ids).
    record = type(DETAILS_EVENT).FromString(DETAILS_EVENT.SerializeToString())
    record.span_id = LLM
    plan = plan_logs(logs_export(record), SINKS, 2.0)
    return [row.body for row in plan.rows if row.sink == sink]


def test_a_request_whose_resource_holds_no_spans_plans_nothing() -> None:
    request = export()
    assert len(request.resource_spans) == 1
    plan = plan_spans(request, SINKS, hold_until=0.0)
    assert (plan.rows, plan.mapped, plan.passed_over, plan.refused) == ([], 0, 0, 0)
