"""Per vendor: fill in the usage (and, where the format takes one, the cost) a log record lacks.

| record                  | usage filled when absent                     | cost filled when absent (model known)    |
|-------------------------|----------------------------------------------|------------------------------------------|
| Freeplay completion     | `call_info.usage.{prompt,completion}_tokens` | none: Freeplay prices usage itself       |
| Humanloop prompt log    | `prompt_tokens`, `output_tokens`             | `prompt_cost`, `output_cost`             |
| Keywords AI log create  | `prompt_tokens`, `completion_tokens`         | `cost`, unless the app sent unit prices  |
Only fields the app left out (absent or null) are filled; a value it sent is never replaced; a record that names
no model is left alone (no tokenizer to choose, no price to find, and the vendor may count better). Prompt tokens come
from the messages (and tool schemas) by chat.py's formula, completion tokens from the reply; a record without a
reply gets no completion count. Neither Humanloop nor Keywords AI has a field for the API style, so shipper reads
Freeplay's convention from the record's metadata: `metadata.api_style = "batch"` prices at the batch rate. What was
estimated is listed in the record's metadata as `shipper_estimated` ("usage", "cost"; marks.py says which field).

`enrich_body` is pure but for the pricer's counters: body dict in, set of estimates out (the dict is updated).
`Enricher` wraps it for the forwarder: bytes in, bytes out, in a worker thread, never failing a delivery.
Not responsible for the counting formula (chat.py) or prices (cost.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.config import EnrichConfig
from shipper.enrich.chat import count_completion, count_prompt
from shipper.enrich.cost import Price, PriceCounters, Pricer
from shipper.enrich.marks import mark
from shipper.enrich.tokens import TokenCounter

log = logging.getLogger(__name__)

# One warning per interval when enrichment keeps failing (a malformed record, a broken install), never per record.
_WARN_INTERVAL = 60.0


@dataclass(slots=True)
class Context:
    counter: TokenCounter
    pricer: Pricer | None  # None: cost is off
    tokens: bool


def _absent(mapping: dict[str, Any], *names: str) -> list[str]:
    return [name for name in names if mapping.get(name) is None]


def _named(model: Any) -> bool:
    return isinstance(model, str) and bool(model.strip())


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _freeplay(body: dict[str, Any], ctx: Context) -> set[str]:
    messages = body.get("messages")
    call = body.get("call_info")
    call = call if isinstance(call, dict) else {}
    usage = _obj(call.get("usage"))
    missing = _absent(usage, "prompt_tokens", "completion_tokens")
    model = call.get("model")
    if not ctx.tokens or not missing or not _named(model) or not isinstance(messages, list) or not messages:
        return set()
    # all_messages ends with the reply when the call produced one.
    last = messages[-1]
    replied = isinstance(last, dict) and last.get("role") == "assistant"
    prompt = messages[:-1] if replied else messages
    counts = {
        "prompt_tokens": count_prompt(ctx.counter, prompt, model, body.get("tool_schema")),
        "completion_tokens": count_completion(ctx.counter, last, model) if replied else 0,
    }
    body["call_info"] = call
    call["usage"] = {**usage, **{name: counts[name] for name in missing}}
    return {"usage"}


def _humanloop(body: dict[str, Any], ctx: Context) -> set[str]:
    prompt = _obj(body.get("prompt"))
    model, provider = prompt.get("model"), prompt.get("provider")
    if not _named(model):
        return set()
    output = body.get("output_message") if body.get("output_message") is not None else body.get("output")
    done: set[str] = set()
    if ctx.tokens:
        messages = body.get("messages")
        if body.get("prompt_tokens") is None and isinstance(messages, list):
            body["prompt_tokens"] = count_prompt(ctx.counter, messages, model, prompt.get("tools"))
            done.add("usage")
        if body.get("output_tokens") is None and output is not None:
            body["output_tokens"] = count_completion(ctx.counter, output, model)
            done.add("usage")
    price = _price(ctx, body, ("prompt_cost", "output_cost"), "prompt_tokens", "output_tokens", model, provider)
    if price is not None:
        body["prompt_cost"], body["output_cost"] = price.input, price.output
        done.add("cost")
    return done


def _keywordsai(body: dict[str, Any], ctx: Context) -> set[str]:
    model = body.get("model")
    if not _named(model):
        return set()
    prompt_messages = body.get("prompt_messages")
    prompt: Any = prompt_messages if prompt_messages is not None else body.get("input")
    completion = body.get("completion_message")
    output = completion if completion is not None else body.get("output")
    done: set[str] = set()
    if ctx.tokens:
        if body.get("prompt_tokens") is None and prompt is not None:
            body["prompt_tokens"] = (
                count_prompt(ctx.counter, prompt, model, body.get("tools"))
                if isinstance(prompt, list)
                else count_completion(ctx.counter, prompt, model)  # a plain input text: no chat framing
            )
            done.add("usage")
        if body.get("completion_tokens") is None and output is not None:
            body["completion_tokens"] = count_completion(ctx.counter, output, model)
            done.add("usage")
    unit_prices = body.get("prompt_unit_price") is not None or body.get("completion_unit_price") is not None
    if not unit_prices:  # with unit prices of its own, Keywords AI computes the cost itself
        price = _price(ctx, body, ("cost",), "prompt_tokens", "completion_tokens", model, None)
        if price is not None:
            body["cost"] = price.total
            done.add("cost")
    return done


def _price(
    ctx: Context, body: dict[str, Any], costs: tuple[str, ...], inp: str, out: str, model: Any, provider: Any
) -> Price | None:
    """A price when every cost field is absent and the token counts are known (sent or just estimated)."""
    if ctx.pricer is None or _absent(body, *costs) != list(costs):
        return None
    tokens_in, tokens_out = body.get(inp), body.get(out)
    if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        return None
    batch = _obj(body.get("metadata")).get("api_style") == "batch"
    return ctx.pricer.price(
        model if isinstance(model, str) else None,
        tokens_in,
        tokens_out,
        provider=provider if isinstance(provider, str) else None,
        batch=batch,
    )


Filler = Callable[[dict[str, Any], Context], set[str]]
ROUTES: dict[str, tuple[str, re.Pattern[str], Filler]] = {
    "freeplay": ("POST", re.compile(r"/v2/projects/[^/]+/sessions/[^/]+/completions"), _freeplay),
    "humanloop": ("POST", re.compile(r"/prompts/log"), _humanloop),
    "keywordsai": ("POST", re.compile(r"/api/request-logs/create/"), _keywordsai),
}


def route_for(vendor: str | None, method: str, path: str) -> Filler | None:
    found = ROUTES.get(vendor or "")
    if found is None or found[0] != method or not found[1].fullmatch(path):
        return None
    return found[2]


def enrich_body(vendor: str | None, method: str, path: str, body: Any, ctx: Context) -> set[str]:
    """Fill what the record lacks, in place, and mark it; returns what was estimated ("usage", "cost")."""
    filler = route_for(vendor, method, path)
    if filler is None or not isinstance(body, dict):
        return set()
    done = filler(body, ctx)
    if done:
        mark(vendor, method, path, body, "estimated", done)
    return done


@dataclass(slots=True)
class EnrichCounters:
    """Plain ints for the metrics collector (written under a lock: enrichment runs in worker threads)."""

    usage_estimated: int = 0
    cost_estimated: int = 0
    failed: int = 0
    price: PriceCounters = field(default_factory=PriceCounters)


class Enricher:
    """Enrichment as the forwarder uses it: raw body in, raw body out; unchanged bytes when nothing was filled."""

    def __init__(self, config: EnrichConfig | None = None, counter: TokenCounter | None = None) -> None:
        self.counters = EnrichCounters()
        self._counter = counter or TokenCounter()
        self._pricer = Pricer(self.counters.price)
        self._lock = threading.Lock()
        self._warned_at = 0.0
        self.reconfigure(config or EnrichConfig())

    def reconfigure(self, config: EnrichConfig) -> None:
        """New settings (a SIGHUP reload): one reference swap, so a worker sees the old context or the new."""
        self.config = config
        self._ctx = Context(self._counter, self._pricer if config.cost else None, config.tokens)

    @property
    def active(self) -> bool:
        return self.config.tokens or self.config.cost

    def wants(self, vendor: str | None, method: str, path: str) -> bool:
        return self.active and route_for(vendor, method, path) is not None

    async def enrich(self, vendor: str | None, method: str, path: str, raw: bytes) -> bytes:
        """Off the event loop: counting a long conversation, or loading an encoding the first time, takes a while."""
        if not self.wants(vendor, method, path):
            return raw
        return await asyncio.to_thread(self.apply, vendor, method, path, raw)

    def apply(self, vendor: str | None, method: str, path: str, raw: bytes) -> bytes:
        try:
            body = orjson.loads(raw)
            done = enrich_body(vendor, method, path, body, self._ctx)
            out = orjson.dumps(body) if done else raw
        except Exception as exc:  # a record must never become undeliverable because an estimate failed
            self._failed(exc)
            return raw
        with self._lock:
            self.counters.usage_estimated += "usage" in done
            self.counters.cost_estimated += "cost" in done
        return out

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.counters.failed += 1
            now = time.monotonic()
            warn = now - self._warned_at >= _WARN_INTERVAL
            if warn:
                self._warned_at = now
        if warn:
            log.warning("enrichment failed, record sent as it came (%d failures so far): %s", self.counters.failed, exc)
