"""An export request's spans as vendor calls: each LLM, tool or agent span becomes, for every routed sink, the drop-in
call its vendor's SDK would have made, planned by that vendor's adapter exactly as that call is (ids, keys, order,
answers), linked to its parent's record where the request holds it (tree.py).
An LLM span with no input messages may have them on the logs signal: it is held for them (join.py), and an export
request of log records gives the rows that carry their content to it (`plan_logs`).

A span either reaches every routed sink or none: one a vendor refuses (its adapter's BadInput, such as a span with no
messages for a vendor that needs some) is refused as a whole and counted, with the first reason kept for the
answer's `partial_success`. A span that is no LLM call is passed over and counted. Not responsible for HTTP, the
spool, or keys (shipper/ingest/otlp.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shipper.config.sinks import VendorSinkConfig
from shipper.otlp.genai import Unmappable, attributes, content_event, llm_call
from shipper.otlp.join import STAND_IN, held_row, part_row, plan_record
from shipper.otlp.steps import AGENT, step_of
from shipper.otlp.tree import Id, Tree, ancestors_first
from shipper.records import BadInput, NewRow
from shipper.vendors.base import Adapter
from shipper.vendors.llm import LlmCall, Step

# What a resource without `service.name` is called, as the SDKs name it.
UNKNOWN_SERVICE = "unknown_service"


class VendorSink(Protocol):
    """A routed sink as planning sees it (sinks/vendor.py's VendorSink): its name, vendor and configuration."""

    @property
    def name(self) -> str: ...

    @property
    def adapter(self) -> Adapter: ...

    @property
    def config(self) -> VendorSinkConfig: ...


@dataclass(slots=True)
class SpanPlan:
    rows: list[NewRow] = field(default_factory=list)  # for the sink's own key (credential None): see ingest/otlp.py
    mapped: int = 0  # LLM, tool and agent spans planned for every routed sink
    passed_over: int = 0  # spans that are none of those
    refused: int = 0  # such spans no row was planned for
    held: int = 0  # of the mapped, LLM spans held for their messages on the logs signal (join.py)
    reason: str = ""  # the first refusal's, for the answer

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reason = self.reason or reason


def plan_spans(request: ExportTraceServiceRequest, sinks: Sequence[VendorSink], hold_until: float) -> SpanPlan:
    """`hold_until`: when a span held for its logs may be sent (epoch seconds). Spans are planned ancestors first,
    each linked to its nearest ancestor recorded so far (tree.py)."""
    plan = SpanPlan()
    read = list(_spans(request))
    spans = [span for _, span in read]
    tree = Tree(spans)
    recorded: dict[Id, str | None] = {}  # each span recorded so far, with its session
    agents: set[Id] = set()
    for index in ancestors_first(spans, tree):
        service, span = read[index]
        try:
            record = _read(span, service)
        except Unmappable as exc:
            plan.refuse(str(exc))
            continue
        if record is None:
            plan.passed_over += 1
            continue
        parent, agent = tree.nearest(span, recorded.__contains__), tree.nearest(span, agents.__contains__)
        # A record with no conversation of its own is in its parent's: one agent run, one session.
        session = record.session or (recorded[span.trace_id, bytes.fromhex(parent)] if parent else None)
        record = dataclasses.replace(record, parent_step=parent, parent_agent=agent, session=session)
        held = isinstance(record, LlmCall) and not record.messages
        planned = _for_every_sink(_stand_in(record) if held else record, sinks)
        if isinstance(planned, str):
            plan.refuse(f"span {span.name!r}: {planned}")
            continue
        if held:
            links = {"parent_step": parent, "parent_agent": agent, "session": session}
            plan.rows.extend(held_row(row, span, service, hold_until, links) for row in planned)
        else:
            plan.rows.extend(planned)
        recorded[span.trace_id, span.span_id] = record.session
        if isinstance(record, Step) and record.kind == AGENT:
            agents.add((span.trace_id, span.span_id))
        plan.mapped += 1
        plan.held += held
    return plan


def _stand_in(record: LlmCall | Step) -> LlmCall | Step:
    """What a held span is planned with: its place (key, scope, order) known before its messages are."""
    return dataclasses.replace(record, messages=STAND_IN) if isinstance(record, LlmCall) else record


def _read(span: Span, service: str) -> LlmCall | Step | None:
    """The LLM call, tool call or agent run the span records; Unmappable for one with unusable ids."""
    return llm_call(span, service) or step_of(span, service)


@dataclass(slots=True)
class LogPlan:
    rows: list[NewRow] = field(default_factory=list)
    held: int = 0  # log records with an LLM call's content, kept for their span
    passed_over: int = 0  # any other log record


def plan_logs(request: ExportLogsServiceRequest, sinks: Sequence[VendorSink], keep_until: float) -> LogPlan:
    """Each content log record as a part (join.py) for every routed vendor sink, kept until `keep_until`."""
    plan = LogPlan()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                found = content_event(record)
                if found is None or not sinks:
                    plan.passed_over += 1
                    continue
                trace_id, span_id, event = found
                plan.rows.extend(part_row(sink.name, trace_id, span_id, event, keep_until) for sink in sinks)
                plan.held += 1
    return plan


def _spans(request: ExportTraceServiceRequest) -> Iterator[tuple[str, Span]]:
    """Every span with its resource's `service.name`."""
    for resource_spans in request.resource_spans:
        service = attributes(resource_spans.resource.attributes).get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield service if isinstance(service, str) and service else UNKNOWN_SERVICE, span


def _for_every_sink(record: LlmCall | Step, sinks: Sequence[VendorSink]) -> list[NewRow] | str:
    """The record's row for each sink, or why one of them refused it (its adapter; or a body JSON cannot hold)."""
    planned: list[NewRow] = []
    for sink in sinks:
        try:
            planned.append(plan_record(record, sink.adapter, sink.config).row(sink.name, None))
        except BadInput as exc:
            return f"sink {sink.name}: {exc}"
    return planned
