"""Fill in the usage (and, where the format takes one, the cost) a vendor's log record lacks, before it is forwarded.

Where the counts and cost go is the vendor's to say (`Usage`, read off the body by the row's entry in its vendor
module's `outbound` table); this module counts and prices, the same way for every vendor. Only fields the app left
out (absent or null) are filled; a value it sent is never replaced; a record that names no model is left alone (no
tokenizer to choose, no price to find, and the vendor may count better). Prompt tokens come from the messages (and
tool schemas) by chat.py's formula, or a plain prompt text counted as text; completion tokens from the reply; a
record without a reply gets no completion count. A cost is filled only when every cost field is absent and both
counts are known (sent or just estimated). No vendor format has a field for the API style, so shipper reads the one
convention from the record's metadata: `metadata.api_style = "batch"` prices at the batch rate. What was estimated
is listed in the record's metadata as `shipper_estimated` ("usage", "cost"; marks.py says which field).

`enrich_body` is pure but for the pricer's counters: body dict in, set of estimates out (the dict is updated).
`Enricher` wraps it for the forwarder: bytes in, bytes out, on the event loop when cheap, else in a worker thread,
never failing a delivery.
Not responsible for the counting formula (chat.py), prices (cost.py) or vendor field names (shipper/vendors/).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.config.transform import EnrichConfig
from shipper.enrich.chat import count_completion, count_prompt
from shipper.enrich.cost import Price, PriceCounters, Pricer
from shipper.enrich.marks import mark
from shipper.enrich.tokens import Counter, TokenCounter, WouldBlock
from shipper.vendors import outbound
from shipper.vendors.sent import Usage, UsageReader, obj

log = logging.getLogger(__name__)

# One warning per interval when enrichment keeps failing (a malformed record, a broken install), never per record.
_WARN_INTERVAL = 60.0


@dataclass(slots=True)
class Context:
    counter: Counter
    pricer: Pricer | None  # None: cost is off
    tokens: bool
    on_loop: bool = False  # on the event loop: a price (genai-prices, ~80 µs) waits for a worker thread


def _named(model: Any) -> bool:
    return isinstance(model, str) and bool(model.strip())


def _read_at(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The dict at `path` as it is (an empty one when absent), without changing the body."""
    node = body
    for name in path:
        node = obj(node.get(name))
    return node


def _place_at(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The dict at `path`, created (or put in place of a non-object) on the way."""
    node = body
    for name in path:
        value = node.get(name)
        if not isinstance(value, dict):
            value = node[name] = {}
        node = value
    return node


def _counts(slots: Usage, model: str, have: dict[str, Any], ctx: Context) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not ctx.tokens:
        return counts
    prompt = slots.prompt
    if have.get(slots.prompt_tokens) is None and prompt is not None:
        counts[slots.prompt_tokens] = (
            count_prompt(ctx.counter, prompt, model, slots.tools)
            if isinstance(prompt, list)
            else count_completion(ctx.counter, prompt, model)  # a plain input text: no chat framing
        )
    if have.get(slots.completion_tokens) is None and slots.completion is not None:
        counts[slots.completion_tokens] = count_completion(ctx.counter, slots.completion, model)
    return counts


def _price(ctx: Context, slots: Usage, model: str, have: dict[str, Any], batch: bool) -> Price | None:
    """A price when the format has cost fields, every one is absent, and the token counts are known."""
    if ctx.pricer is None or not slots.cost or any(have.get(name) is not None for name in slots.cost):
        return None
    tokens_in, tokens_out = have.get(slots.prompt_tokens), have.get(slots.completion_tokens)
    if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        return None
    if ctx.on_loop:
        raise WouldBlock("a price")
    provider = slots.provider if isinstance(slots.provider, str) else None
    return ctx.pricer.price(model, tokens_in, tokens_out, provider=provider, batch=batch)


def fill(slots: Usage, body: dict[str, Any], ctx: Context) -> set[str]:
    """Count and price what the record lacks into the dict its vendor named; returns what was estimated."""
    model = slots.model
    if not _named(model):
        return set()
    have = _read_at(body, slots.at)
    filled: dict[str, Any] = _counts(slots, model, have, ctx)
    done = {"usage"} if filled else set()
    price = _price(ctx, slots, model, {**have, **filled}, obj(body.get("metadata")).get("api_style") == "batch")
    if price is not None:
        if len(slots.cost) == 2:  # input and output priced apart
            filled[slots.cost[0]], filled[slots.cost[1]] = price.input, price.output
        else:
            filled[slots.cost[0]] = price.total
        done.add("cost")
    if filled:
        _place_at(body, slots.at).update(filled)
    return done


def reader_for(vendor: str | None, method: str, path: str) -> UsageReader | None:
    found = outbound(vendor, method, path)
    return None if found is None else found.usage


def enrich_body(vendor: str | None, method: str, path: str, body: Any, ctx: Context) -> set[str]:
    """Fill what the record lacks, in place, and mark it; returns what was estimated ("usage", "cost")."""
    reader = reader_for(vendor, method, path)
    if reader is None or not isinstance(body, dict):
        return set()
    slots = reader(body)
    done = set() if slots is None else fill(slots, body, ctx)
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
        return self.active and reader_for(vendor, method, path) is not None

    async def enrich(self, vendor: str | None, method: str, path: str, raw: bytes) -> bytes:
        """On the event loop when that is cheap (counts from the cache, a little new text), else in a worker thread:
        a long conversation seen for the first time, a price or an encoding's first load take a while, but the
        trip to a thread and back costs ~1 ms on a busy daemon, longer than the usual count, and on the vendor path
        that latency held each send's slot (one request per record)."""
        if not self.wants(vendor, method, path):
            return raw
        try:
            return self.apply(vendor, method, path, raw, on_loop=True)
        except WouldBlock:
            return await asyncio.to_thread(self.apply, vendor, method, path, raw)

    def apply(self, vendor: str | None, method: str, path: str, raw: bytes, on_loop: bool = False) -> bytes:
        """`on_loop`: raise WouldBlock, having changed nothing, where the work would hold the event loop."""
        ctx = self._ctx
        if on_loop:
            ctx = Context(self._counter.on_loop(), ctx.pricer, ctx.tokens, on_loop=True)
        try:
            body = orjson.loads(raw)
            done = enrich_body(vendor, method, path, body, ctx)
            out = orjson.dumps(body) if done else raw
        except WouldBlock:
            raise
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
