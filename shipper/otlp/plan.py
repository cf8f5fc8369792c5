"""An export request's spans as vendor calls: each LLM span becomes, for every routed sink, the drop-in call its
vendor's SDK would have made, planned by that vendor's adapter exactly as that call is (ids, keys, order, answers).
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
from shipper.otlp.join import STAND_IN, held_row, part_row, plan_joined
from shipper.records import BadInput, NewRow
from shipper.vendors.base import Adapter, Spooled
from shipper.vendors.llm import LlmCall

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
    mapped: int = 0  # LLM spans planned for every routed sink
    passed_over: int = 0  # spans that are no LLM call
    refused: int = 0  # LLM spans no row was planned for
    held: int = 0  # of the mapped, those held for their messages on the logs signal (join.py)
    reason: str = ""  # the first refusal's, for the answer

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reason = self.reason or reason


def plan_spans(request: ExportTraceServiceRequest, sinks: Sequence[VendorSink], hold_until: float) -> SpanPlan:
    """`hold_until`: when a span held for its logs may be sent (epoch seconds)."""
    plan = SpanPlan()
    for service, span in _spans(request):
        try:
            call = llm_call(span, service)
        except Unmappable as exc:
            plan.refuse(str(exc))
            continue
        if call is None:
            plan.passed_over += 1
            continue
        held = not call.messages
        planned = _for_every_sink(dataclasses.replace(call, messages=STAND_IN) if held else call, sinks)
        if isinstance(planned, str):
            plan.refuse(f"span {span.name!r}: {planned}")
            continue
        for name, spooled in planned:
            plan.rows.append(held_row(spooled, name, span, service, hold_until) if held else spooled.row(name, None))
        plan.mapped += 1
        plan.held += held
    return plan


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


def _for_every_sink(call: LlmCall, sinks: Sequence[VendorSink]) -> list[tuple[str, Spooled]] | str:
    """The call planned for each sink, or why one of them refused it (its adapter; or a body JSON cannot hold)."""
    planned: list[tuple[str, Spooled]] = []
    for sink in sinks:
        try:
            spooled = plan_joined(call, sink.adapter, sink.config)
            spooled.row(sink.name, None)  # a body JSON cannot hold is refused here, not at the append
        except BadInput as exc:
            return f"sink {sink.name}: {exc}"
        planned.append((sink.name, spooled))
    return planned
