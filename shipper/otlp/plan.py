"""An export request's spans as vendor calls: each LLM span becomes, for every routed sink, the drop-in call its
vendor's SDK would have made, planned by that vendor's adapter exactly as that call is (ids, keys, order, answers).

A span either reaches every routed sink or none: one a vendor refuses (its adapter's BadInput, such as a span with no
messages for a vendor that needs some) is refused as a whole and counted, with the first reason kept for the
answer's `partial_success`. A span that is no LLM call is passed over and counted. Not responsible for HTTP, the
spool, or keys (shipper/ingest/otlp.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shipper.config.sinks import VendorSinkConfig
from shipper.otlp.genai import Unmappable, attributes, llm_call
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
    reason: str = ""  # the first refusal's, for the answer

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reason = self.reason or reason


def plan_spans(request: ExportTraceServiceRequest, sinks: Sequence[VendorSink]) -> SpanPlan:
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
        planned = _for_every_sink(call, sinks)
        if isinstance(planned, str):
            plan.refuse(f"span {span.name!r}: {planned}")
            continue
        plan.rows.extend(planned)
        plan.mapped += 1
    return plan


def _spans(request: ExportTraceServiceRequest) -> Iterator[tuple[str, Span]]:
    """Every span with its resource's `service.name`."""
    for resource_spans in request.resource_spans:
        service = attributes(resource_spans.resource.attributes).get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield service if isinstance(service, str) and service else UNKNOWN_SERVICE, span


def _for_every_sink(call: LlmCall, sinks: Sequence[VendorSink]) -> list[NewRow] | str:
    """The call's row for each sink, or why one of them refused it (its adapter; or a body JSON cannot hold)."""
    planned: list[NewRow] = []
    for sink in sinks:
        request = sink.adapter.from_call(call, sink.config)
        try:
            spooled = sink.adapter.plan(request.method, request.path, {}, request.body)
            if not isinstance(spooled, Spooled):  # every from_call names one of its vendor's log routes
                return f"sink {sink.name}: {request.method} {request.path} is not a log route"
            planned.append(spooled.row(sink.name, None))
        except BadInput as exc:
            return f"sink {sink.name}: {exc}"
    return planned
