"""An LLM span whose messages came on the logs signal: the span held in its vendor record's place, the content log
records as parts keyed by their span, and the two joined into the record the span would have given with its
messages on it, in either convention's events."""

from __future__ import annotations

import re

import orjson
import pytest

from shipper.config.transform import RedactConfig
from shipper.enrich.redact import Redactor
from shipper.otlp.genai import attributes, content_event
from shipper.otlp.join import PART_KIND, PART_PATH, SPAN_PATH, joined_call, part_key, plan_record, read_held
from shipper.otlp.plan import plan_logs, plan_spans
from shipper.records import BadInput, NewRow
from tests.otlp_spans import (
    DETAILS_EVENT,
    NO_CONTENT,
    OLD_EVENTS,
    PARENT,
    SPAN,
    TRACE,
    export,
    log_record,
    logs_export,
    span,
)
from tests.unit.test_otlp_records import ASKED, REPLY, Routed, routed

SINKS = [routed("freeplay"), routed("humanloop"), routed("keywordsai")]
KEY = part_key(TRACE.hex(), SPAN.hex())


def held_rows() -> list[NewRow]:
    plan = plan_spans(export(span(NO_CONTENT)), SINKS, hold_until=1234.5)
    assert (plan.mapped, plan.held, plan.refused) == (1, 1, 0)
    return plan.rows


def parts(*records: object) -> list[NewRow]:
    plan = plan_logs(logs_export(*records), SINKS, keep_until=9999.0)  # type: ignore[arg-type]
    return plan.rows


def test_content_log_records_are_read_as_the_span_events_they_stand_for() -> None:
    system, user, choice = (content_event(record) for record in OLD_EVENTS)
    assert system == (
        TRACE.hex(),
        SPAN.hex(),
        ("gen_ai.system.message", {"gen_ai.system": "openai", "content": "Be terse"}),
    )
    assert user is not None and user[2][0] == "gen_ai.user.message"  # named by the old SDKs' `event.name` attribute
    assert choice is not None and choice[2][1]["message"] == {"role": "assistant", "content": "4"}
    details = content_event(DETAILS_EVENT)
    assert details is not None and details[2][1]["gen_ai.input.messages"][1]["role"] == "user"


@pytest.mark.parametrize(
    "record",
    [
        log_record("http.request", {"content": "GET /"}),  # no GenAI content event
        log_record("gen_ai.user.message", {"content": "hi"}, span_id=b""),  # tied to no span: nothing could join it
        log_record("gen_ai.user.message", {"content": "hi"}, trace_id=bytes(4)),
    ],
)
def test_other_log_records_are_passed_over(record: object) -> None:
    plan = plan_logs(logs_export(record), SINKS, keep_until=1.0)  # type: ignore[arg-type]
    assert (plan.rows, plan.held, plan.passed_over) == ([], 0, 1)


def test_a_span_without_messages_is_held_in_the_place_its_vendor_record_takes() -> None:
    by_sink = {row.sink: row for row in held_rows()}
    assert all(
        (row.path, row.due, row.kind, row.credential) == (SPAN_PATH, 1234.5, "create", None) for row in by_sink.values()
    )
    assert by_sink["fr"].key is not None and by_sink["fr"].key.startswith("fp:c:")
    assert by_sink["fr"].scope is not None and by_sink["fr"].scope.startswith("fp:s:")  # its session, as the record's
    assert by_sink["hu"].key is not None and by_sink["hu"].key.startswith("hl:log:log_")
    assert by_sink["ke"].key is None
    held = read_held(by_sink["ke"].body)
    assert (held.span.span_id, held.span.parent_span_id, held.service, held.key) == (SPAN, PARENT, "calc-app", KEY)


def test_a_content_log_record_is_a_part_for_every_routed_vendor_sink() -> None:
    rows = parts(*OLD_EVENTS)
    assert [row.sink for row in rows] == ["fr", "hu", "ke"] * 3
    assert all((row.path, row.key, row.kind, row.due) == (PART_PATH, KEY, PART_KIND, 9999.0) for row in rows)


def joined(sink: Routed, records: tuple[object, ...]) -> dict[str, object]:
    (row,) = [row for row in held_rows() if row.sink == sink.name]
    bodies = [part.body for part in parts(*records) if part.sink == sink.name]
    planned = plan_record(joined_call(read_held(row.body), bodies), sink.adapter, sink.config)
    assert (planned.key, planned.scope) == (row.key, row.scope)  # the place it was held in is the record's own
    return dict(planned.body)


@pytest.mark.parametrize("records", [OLD_EVENTS, (DETAILS_EVENT,)], ids=["old-events", "details-event"])
def test_the_held_span_joined_to_its_parts_is_the_record_with_its_messages(records: tuple[object, ...]) -> None:
    freeplay, humanloop, keywords = (joined(sink, records) for sink in SINKS)
    assert freeplay["messages"] == [*ASKED, REPLY]
    assert (humanloop["messages"], humanloop["output_message"]) == (ASKED, REPLY)
    assert (keywords["prompt_messages"], keywords["completion_message"]) == (ASKED, REPLY)
    assert (keywords["model"], keywords["prompt_tokens"], keywords["span_parent_id"]) == (
        "gpt-4o-mini-2024-07-18", 12, PARENT.hex(),
    )  # fmt: skip


def test_a_held_span_no_content_came_for_goes_as_it_is_or_is_refused_by_a_vendor_that_needs_messages() -> None:
    assert joined(SINKS[2], ())["prompt_messages"] == []
    with pytest.raises(BadInput, match="messages must be a non-empty list"):
        joined(SINKS[0], ())


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{}", "is not {otel_span, name, attributes, events}"),
        (b"[1", "is not {otel_span, name, attributes, events}"),
        (orjson.dumps({"otel_span": {"trace_id": "zz"}, "attributes": {}}), "does not read as a span"),
        (orjson.dumps({"otel_span": {}, "attributes": {}}), "does not read as a span"),
    ],
)
def test_a_held_span_row_that_no_longer_reads_is_refused_by_name(body: bytes, said: str) -> None:
    with pytest.raises(BadInput, match=re.escape(said)):
        read_held(body)


def test_redaction_scrubs_a_held_span_and_its_parts_but_never_its_ids_and_times() -> None:
    """A 19-digit timestamp that passes the Luhn check is a "card" to the pattern: kept apart, it is never masked."""
    redactor = Redactor(RedactConfig(builtin=("cards", "emails")))
    attrs = {**NO_CONTENT, "user.email": "ann@example.com", "timer_ns": LUHN_NS}
    (row,) = plan_spans(export(span(attrs, start_ns=LUHN_NS)), [SINKS[2]], hold_until=0.0).rows
    redacted = redactor.redact_row(row, "keywordsai")
    held = read_held(redacted.body)
    assert held.span.start_time_unix_nano == LUHN_NS and held.span.trace_id == TRACE
    assert attributes(held.span.attributes)["user.email"] == "[REDACTED_EMAIL]"
    assert attributes(held.span.attributes)["timer_ns"] == LUHN_NS  # a number, not a string: no pattern reads it
    (part,) = plan_logs(
        logs_export(log_record("gen_ai.user.message", {"content": "ann@example.com"})), [SINKS[2]], 1.0
    ).rows
    assert b"ann@example.com" not in redactor.redact_row(part, "keywordsai").body


LUHN_NS = 1795347092746001000
