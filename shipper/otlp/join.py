"""An LLM span joined to the message content its instrumentation put on the logs signal, through the spool.

The official OpenAI instrumentation (and others) can write a call's messages only as log records tied to the span by
trace and span id (`gen_ai.client.inference.operation.details`, or the old `gen_ai.user.message` ... `gen_ai.choice`
events), exported in requests of their own, in either order, each acknowledged only once committed. So neither half
waits in memory: both are spool rows of each routed vendor sink, and the join happens when the span's row is sent.

- A **held span**: an LLM span read with no input messages. Its row has the key, scope and `after` the vendor's own
  record of it will have (planned now, from the call with a stand-in message), so it keeps its place in the
  vendor's order, but its body is the span itself (as plain JSON, path SPAN_PATH, with the parent links resolved
  from its export request, tree.py, and the session it inherited), and it is not handed out before `[otlp]
  logs_wait` has passed: time for the logs to arrive.
- A **part**: one content log record, a row of kind PART_KIND keyed by its span (`part_key`), never sent by itself:
  it is held for PART_KEEP seconds, and only one still queued then is handed out, and dead-lettered as an orphan
  (its span never came, or came and left before it).

When the held span is sent (shipper/sinks/vendor.py), its sink's parts are read from the queue, the call is read
again with them (genai.py), and the vendor's adapter plans the record the span would have given with its messages
on it; the parts leave the queue with that delivery. Without any part by then, the record goes without messages, as
the span said it (a vendor that needs messages refuses it, and the row is dead-lettered, saying why). Not
responsible for reading spans (genai.py), for I/O, or for what a vendor record holds (the vendor modules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shipper.config.sinks import VendorSinkConfig
from shipper.otlp.genai import Event, Unmappable, attributes, key_values, llm_call
from shipper.records import BadInput, NewRow
from shipper.vendors.base import Adapter, Spooled
from shipper.vendors.llm import SPAN_IDS_FIELD, LlmCall, Step

SPAN_PATH = "/otel/span"  # a held span's row: its body the span, sent as the vendor record it becomes
PART_PATH = "/otel/part"
PART_KIND = "otel-part"
# How long a part waits for its span to be sent before it counts as an orphan: long enough for a vendor outage of
# the usual kind to delay the span's row, short enough that log records of spans that never come do not pile up.
PART_KEEP = 3600.0
# What a held span is planned with, so its record's key, scope and order are known before its messages are.
STAND_IN = ({"role": "user", "content": ""},)
LINKS = ("parent_step", "parent_agent", "session")  # what the export request told of the span (plan.py)


def part_key(trace_id: str, span_id: str) -> str:
    return f"otel:{trace_id}:{span_id}"


@dataclass(frozen=True, slots=True)
class Held:
    """A held span as its row's body gives it back, with the parent links its export request gave it."""

    span: Span
    service: str
    links: Mapping[str, str | None]

    @property
    def key(self) -> str:
        return part_key(self.span.trace_id.hex(), self.span.span_id.hex())


def held_row(planned: NewRow, span: Span, service: str, due: float, links: Mapping[str, str | None]) -> NewRow:
    """The row that holds `span` until `due` in the place of its vendor record (`planned`, with a stand-in message).

    Its body is plain JSON, so redaction reads it as it reads any record: the span's name, status message,
    attributes and events, whose strings the patterns scrub; and, under SPAN_IDS_FIELD (which every vendor protects from
    redaction, as it protects the ids that route a record), its ids, times, service and the links its request gave
    it. Not OTLP/JSON: there, int64s are strings, and a 13-19 digit timestamp that passes the Luhn check would be
    masked as a card number, leaving a span that no longer parses."""
    body = {
        SPAN_IDS_FIELD: {
            "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(), "parent_span_id": span.parent_span_id.hex(),
            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano, "status": span.status.code,
            "service": service, **links,
        },
        "name": span.name, "status_message": span.status.message, "attributes": attributes(span.attributes),
        "events": [[event.name, attributes(event.attributes)] for event in span.events],
    }  # fmt: skip
    return planned._replace(path=SPAN_PATH, query=None, body=orjson.dumps(body), due=due)


def part_row(sink: str, trace_id: str, span_id: str, event: Event, keep_until: float) -> NewRow:
    name, fields = event
    body = orjson.dumps({"name": name, "fields": fields})
    return NewRow(sink, "POST", PART_PATH, None, body, part_key(trace_id, span_id), kind=PART_KIND, due=keep_until)


def read_held(body: bytes) -> Held:
    """BadInput for a body that is no held span."""
    try:
        found: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        found = None
    ids = found.get(SPAN_IDS_FIELD) if isinstance(found, dict) else None
    if not isinstance(ids, dict) or not isinstance(found.get("attributes"), dict):
        raise BadInput("invalid_body", f"the held span's row is not {{{SPAN_IDS_FIELD}, name, attributes, events}}")
    try:
        span = Span(
            trace_id=bytes.fromhex(ids["trace_id"]), span_id=bytes.fromhex(ids["span_id"]),
            parent_span_id=bytes.fromhex(ids["parent_span_id"]), start_time_unix_nano=ids["start"],
            end_time_unix_nano=ids["end"], name=str(found.get("name", "")),
            attributes=key_values(found["attributes"]),
        )  # fmt: skip
        span.status.code = ids["status"]
        span.status.message = str(found.get("status_message") or "")
        for name, fields in found.get("events") or []:
            span.events.add(name=name, attributes=key_values(fields))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput("invalid_body", f"the held span's row does not read as a span: {exc!r}") from None
    links = {name: ids[name] for name in LINKS if isinstance(ids.get(name), str)}
    service = ids.get("service")
    return Held(span, service if isinstance(service, str) else "unknown_service", links)


def read_part(body: bytes) -> Event | None:
    try:
        found: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(found, dict) and isinstance(found.get("name"), str) and isinstance(found.get("fields"), dict):
        return found["name"], found["fields"]
    return None


def joined_call(held: Held, parts: Sequence[bytes]) -> LlmCall:
    """The call the span records, with the content its parts brought; BadInput when it is none after all."""
    events = [event for event in map(read_part, parts) if event is not None]
    try:
        call = llm_call(held.span, held.service, events)
    except Unmappable as exc:
        raise BadInput("invalid_body", str(exc)) from None
    if call is None:
        raise BadInput("invalid_body", f"span {held.span.name!r} is no LLM call")
    links = held.links
    return dataclasses.replace(
        call,
        parent_step=links.get("parent_step"),
        parent_agent=links.get("parent_agent"),
        session=links.get("session") or call.session,
    )


def plan_record(record: LlmCall | Step, adapter: Adapter, sink: VendorSinkConfig) -> Spooled:
    """The vendor record of a call or step, planned as the vendor's SDK call is; BadInput for one it cannot take."""
    request = adapter.from_call(record, sink) if isinstance(record, LlmCall) else adapter.from_step(record, sink)
    planned = adapter.plan(request.method, request.path, {}, request.body)
    if not isinstance(planned, Spooled):  # every from_call names one of its vendor's log routes
        raise BadInput("invalid_body", f"{request.method} {request.path} is not a log route")
    return planned
