"""Per-vendor enrichment: missing usage counted, missing cost priced, what the app sent kept, estimates marked."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.config.transform import EnrichConfig
from shipper.enrich.chat import count_completion, count_prompt
from shipper.enrich.cost import Pricer
from shipper.enrich.tokens import Encodings, TokenCounter, WouldBlock
from shipper.enrich.usage import Context, Enricher, enrich_body

COUNTER = TokenCounter()
FP_PATH = "/v2/projects/p1/sessions/s1/completions"
HL_PATH = "/prompts/log"
KW_PATH = "/api/request-logs/create/"
PROMPT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}]
REPLY = {"role": "assistant", "content": "4, of course."}
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {}}}]


def ctx(tokens: bool = True, cost: bool = True) -> Context:
    return Context(COUNTER, Pricer() if cost else None, tokens)


def prompt_tokens(model: str, tools: Any = None) -> int:
    return count_prompt(COUNTER, PROMPT, model, tools)


def reply_tokens(model: str) -> int:
    return count_completion(COUNTER, REPLY, model)


def fp_body(**call_info: Any) -> dict[str, Any]:
    return {
        "messages": [*PROMPT, REPLY],
        "tool_schema": TOOLS,
        "session_info": {"custom_metadata": {"user": "u1"}},
        "call_info": {"model": "gpt-4o-mini", "provider": "openai", "provider_info": None, **call_info},
        "completion_id": "c1",
    }


def test_freeplay_missing_usage_is_counted_and_marked_on_the_call() -> None:
    body = fp_body(usage=None)
    assert enrich_body("freeplay", "POST", FP_PATH, body, ctx()) == {"usage"}
    assert body["call_info"]["usage"] == {
        "prompt_tokens": prompt_tokens("gpt-4o-mini", TOOLS),
        "completion_tokens": reply_tokens("gpt-4o-mini"),
    }
    assert body["call_info"]["provider_info"] == {"shipper_estimated": "usage"}
    assert body["session_info"] == {"custom_metadata": {"user": "u1"}}  # the session is not marked
    assert "cost" not in body and "cost" not in body["call_info"]  # Freeplay prices usage itself


def test_freeplay_usage_the_app_sent_is_kept_and_only_a_missing_half_is_filled() -> None:
    full = fp_body(usage={"prompt_tokens": 12, "completion_tokens": 1})
    before = copy.deepcopy(full)
    assert enrich_body("freeplay", "POST", FP_PATH, full, ctx()) == set()
    assert full == before
    half = fp_body(usage={"prompt_tokens": 12})
    enrich_body("freeplay", "POST", FP_PATH, half, ctx())
    assert half["call_info"]["usage"] == {"prompt_tokens": 12, "completion_tokens": reply_tokens("gpt-4o-mini")}


def test_freeplay_without_a_reply_counts_no_completion_tokens() -> None:
    body = fp_body(usage=None)
    body["messages"] = PROMPT
    enrich_body("freeplay", "POST", FP_PATH, body, ctx())
    assert body["call_info"]["usage"] == {"prompt_tokens": prompt_tokens("gpt-4o-mini", TOOLS), "completion_tokens": 0}


@pytest.mark.parametrize(
    ("vendor", "path", "body"),
    [
        ("freeplay", FP_PATH, {"messages": PROMPT}),  # no call_info at all
        ("freeplay", FP_PATH, {"messages": PROMPT, "call_info": {"model": " "}}),
        ("humanloop", HL_PATH, {"path": "p", "output": "o3", "log_status": "incomplete"}),  # the SDK's bare log
        ("keywordsai", KW_PATH, {"input": "hi", "output": "hello"}),
    ],
)
def test_a_record_that_names_no_model_is_left_alone(vendor: str, path: str, body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    context = ctx()
    assert enrich_body(vendor, "POST", path, body, context) == set()
    assert body == before
    assert context.pricer is not None and context.pricer.counters.unknown_model == 0


def test_other_freeplay_routes_are_left_alone() -> None:
    body = {"new_messages": PROMPT, "eval_results": None}
    before = copy.deepcopy(body)
    assert enrich_body("freeplay", "POST", "/v2/projects/p1/completions/c1", body, ctx()) == set()
    assert body == before


def hl_body(**extra: Any) -> dict[str, Any]:
    return {
        "path": "demo/calc",
        "prompt": {"model": "gpt-4o", "provider": "openai", "tools": [TOOLS[0]["function"]]},
        "messages": PROMPT,
        "output_message": REPLY,
        "metadata": {"user": "u1"},
        **extra,
    }


def test_humanloop_missing_usage_and_cost_are_filled_and_marked() -> None:
    body = hl_body()
    assert enrich_body("humanloop", "POST", HL_PATH, body, ctx()) == {"usage", "cost"}
    p, c = prompt_tokens("gpt-4o", TOOLS), reply_tokens("gpt-4o")
    assert (body["prompt_tokens"], body["output_tokens"]) == (p, c)
    assert body["prompt_cost"] == pytest.approx(p * 2.5e-6)
    assert body["output_cost"] == pytest.approx(c * 10e-6)
    assert body["metadata"] == {"user": "u1", "shipper_estimated": "cost,usage"}


def test_humanloop_usage_the_app_sent_is_priced_and_only_cost_is_marked() -> None:
    body = hl_body(prompt_tokens=1000, output_tokens=100)
    assert enrich_body("humanloop", "POST", HL_PATH, body, ctx()) == {"cost"}
    assert (body["prompt_tokens"], body["output_tokens"]) == (1000, 100)
    assert body["prompt_cost"] == pytest.approx(1000 * 2.5e-6)
    assert body["metadata"]["shipper_estimated"] == "cost"


def test_humanloop_cost_the_app_sent_is_kept() -> None:
    body = hl_body(prompt_tokens=1000, output_tokens=100, prompt_cost=0.5)
    assert enrich_body("humanloop", "POST", HL_PATH, body, ctx()) == set()
    assert "output_cost" not in body
    assert body["metadata"] == {"user": "u1"}


def test_humanloop_batch_api_style_in_metadata_prices_at_the_batch_rate() -> None:
    body = hl_body(prompt_tokens=1000, output_tokens=100, metadata={"api_style": "batch"})
    enrich_body("humanloop", "POST", HL_PATH, body, ctx())
    assert body["prompt_cost"] == pytest.approx(1000 * 1.25e-6)
    assert body["output_cost"] == pytest.approx(100 * 5e-6)


def test_humanloop_an_incomplete_log_gets_prompt_tokens_only_and_no_cost() -> None:
    body = hl_body(output_message=None, log_status="incomplete")
    assert enrich_body("humanloop", "POST", HL_PATH, body, ctx()) == {"usage"}
    assert body["prompt_tokens"] == prompt_tokens("gpt-4o", TOOLS)
    assert "output_tokens" not in body and "prompt_cost" not in body


def test_humanloop_an_output_string_is_counted() -> None:
    body = hl_body(output_message=None, output="4, of course.")
    enrich_body("humanloop", "POST", HL_PATH, body, ctx())
    assert body["output_tokens"] == COUNTER.text("4, of course.", "gpt-4o")


def test_an_unknown_model_gets_usage_but_no_cost_and_is_counted() -> None:
    context = ctx()
    body = hl_body(prompt={"model": "my-finetune"})
    assert enrich_body("humanloop", "POST", HL_PATH, body, context) == {"usage"}
    assert "prompt_cost" not in body and "output_cost" not in body
    assert context.pricer is not None and context.pricer.counters.unknown_model == 1


def kw_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "prompt_messages": PROMPT, "completion_message": REPLY, "tools": TOOLS, **extra}


def test_keywordsai_missing_usage_and_cost_are_filled_and_marked() -> None:
    body = kw_body(metadata={"env": "test"})
    assert enrich_body("keywordsai", "POST", KW_PATH, body, ctx()) == {"usage", "cost"}
    p, c = prompt_tokens("gpt-4o-mini", TOOLS), reply_tokens("gpt-4o-mini")
    assert (body["prompt_tokens"], body["completion_tokens"]) == (p, c)
    assert body["cost"] == pytest.approx(p * 0.15e-6 + c * 0.6e-6)
    assert body["metadata"] == {"env": "test", "shipper_estimated": "cost,usage"}


def test_keywordsai_input_output_strings_are_counted_as_text() -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "output": "hello"}
    enrich_body("keywordsai", "POST", KW_PATH, body, ctx())
    assert (body["prompt_tokens"], body["completion_tokens"]) == (1, 1)
    assert body["metadata"] == {"shipper_estimated": "cost,usage"}  # created: the create had no metadata


def test_keywordsai_unit_prices_leave_the_cost_to_keywordsai() -> None:
    body = kw_body(prompt_unit_price=0.001)
    assert enrich_body("keywordsai", "POST", KW_PATH, body, ctx()) == {"usage"}
    assert "cost" not in body


def test_keywordsai_a_cost_of_zero_the_app_sent_is_kept() -> None:
    body = kw_body(prompt_tokens=10, completion_tokens=1, cost=0)
    assert enrich_body("keywordsai", "POST", KW_PATH, body, ctx()) == set()
    assert body["cost"] == 0


@pytest.mark.parametrize(("tokens", "cost", "expected"), [(False, True, {"cost"}), (True, False, {"usage"})])
def test_each_enrichment_can_be_switched_off(tokens: bool, cost: bool, expected: set[str]) -> None:
    body = kw_body(prompt_tokens=10, completion_tokens=None)
    assert enrich_body("keywordsai", "POST", KW_PATH, body, ctx(tokens, cost)) == expected - (
        set() if tokens else {"cost"}  # no completion count without tokens, so nothing to price either
    )


# -- Enricher: bytes in, bytes out, as the forwarder calls it -----------------------------------------------------


def test_the_enricher_returns_the_same_bytes_when_nothing_is_missing() -> None:
    enricher = Enricher(EnrichConfig())
    raw = orjson.dumps(kw_body(prompt_tokens=10, completion_tokens=1, cost=0.1))
    assert enricher.apply("keywordsai", "POST", KW_PATH, raw) is raw
    assert enricher.counters.usage_estimated == 0


async def test_the_enricher_fills_a_vendor_record_off_the_event_loop() -> None:
    enricher = Enricher(EnrichConfig())
    out = orjson.loads(await enricher.enrich("keywordsai", "POST", KW_PATH, orjson.dumps(kw_body())))
    assert out["prompt_tokens"] == prompt_tokens("gpt-4o-mini", TOOLS)
    assert out["metadata"]["shipper_estimated"] == "cost,usage"
    assert (enricher.counters.usage_estimated, enricher.counters.cost_estimated) == (1, 1)
    assert enricher.counters.price.priced == 1


async def test_a_cheap_record_is_enriched_on_the_loop_and_the_rest_in_a_thread_with_the_same_bytes() -> None:
    """A Freeplay call takes no cost and its texts are short: on the loop. A Keywords AI call wants a price: in a
    thread. Either way the bytes are what `apply` makes, and each record is counted once."""
    enricher = Enricher(EnrichConfig())
    freeplay, keywordsai = orjson.dumps(fp_body()), orjson.dumps(kw_body())
    on_loop = enricher.apply("freeplay", "POST", FP_PATH, freeplay, on_loop=True)
    with pytest.raises(WouldBlock):
        enricher.apply("keywordsai", "POST", KW_PATH, keywordsai, on_loop=True)
    assert enricher.counters.usage_estimated == 1  # the record that went to a thread was not counted twice
    assert await enricher.enrich("freeplay", "POST", FP_PATH, freeplay) == on_loop
    assert await enricher.enrich("keywordsai", "POST", KW_PATH, keywordsai) == enricher.apply(
        "keywordsai", "POST", KW_PATH, keywordsai
    )
    assert (enricher.counters.usage_estimated, enricher.counters.cost_estimated) == (4, 2)


async def test_records_of_other_sinks_and_routes_pass_untouched() -> None:
    enricher = Enricher(EnrichConfig())
    raw = orjson.dumps(kw_body())
    assert await enricher.enrich(None, "POST", KW_PATH, raw) is raw
    assert await enricher.enrich("keywordsai", "PATCH", "/api/request-logs/abc/", raw) is raw
    assert await Enricher(EnrichConfig(tokens=False, cost=False)).enrich("keywordsai", "POST", KW_PATH, raw) is raw


def test_a_record_that_cannot_be_enriched_is_sent_as_it_came_and_counted(tmp_path: Path) -> None:
    broken = Enricher(EnrichConfig(), TokenCounter(Encodings(tmp_path)))  # no rank files there: counting fails
    raw = orjson.dumps(kw_body())
    assert broken.apply("keywordsai", "POST", KW_PATH, raw) is raw
    assert broken.apply("keywordsai", "POST", KW_PATH, b"not json") == b"not json"
    assert broken.counters.failed == 2
    assert broken.counters.usage_estimated == 0


def test_odd_shapes_are_estimated_not_fatal() -> None:
    enricher = Enricher(EnrichConfig())
    raw = b'{"model": "gpt-4o", "prompt_messages": 12, "completion_message": {"content": ["x", {"text": 5}]}}'
    out = orjson.loads(enricher.apply("keywordsai", "POST", KW_PATH, raw))
    assert (out["prompt_tokens"], out["completion_tokens"]) == (1, 1)
    assert enricher.counters.failed == 0


def test_reconfigure_switches_enrichment_at_once() -> None:
    enricher = Enricher(EnrichConfig())
    enricher.reconfigure(EnrichConfig(tokens=False, cost=False))
    raw = orjson.dumps(kw_body())
    assert enricher.apply("keywordsai", "POST", KW_PATH, raw) is raw
