"""The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs` on listeners of its own (`[otlp] http`, `unix`).

An app instrumented with OpenTelemetry points its exporter here (`OTEL_EXPORTER_OTLP_ENDPOINT`) and its LLM spans
become vendor records (shipper/otlp/plan.py), committed to the spool like every other ingest route before the
answer (intake.py): an acknowledged span survives a crash. The answers are what OTLP exporters act on: 200 with an
`Export…ServiceResponse` in the request's encoding (`partial_success` counts what was refused, which the exporter
must not send again); 400 for a body that does not parse; 503 with Retry-After when the spool cannot take the rows
now (the exporters retry only 429, 502, 503 and 504, so a full disk is said as 503 too); every failure body a
`google.rpc.Status` (ingest's own edge refuses, otlp_edge says it so). The body limit, client timeout, token and
requests in flight are `[ingest]`'s, shared with the ingest listeners (the same in-flight count, so a shutdown drains
both). Routed otlp sinks get each export request
whole (traces and logs). Log records that carry an LLM call's messages are spooled for each routed vendor sink, to be
joined to their span when its record is sent (shipper/otlp/join.py); other log records are passed over, counted.
Not responsible for what a span means (shipper/otlp/) or for binding the listener (server.py, binding.py).
"""

from __future__ import annotations

import socket
import time

import orjson
from aiohttp import web
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shipper.config.listeners import IngestConfig
from shipper.config.otlp import OtlpConfig
from shipper.enrich.redact import Redactor
from shipper.ingest.activation import by_family
from shipper.ingest.counters import IngestCounters
from shipper.ingest.edge import edge
from shipper.ingest.guard import IN_FLIGHT_KEY, InFlight
from shipper.ingest.intake import commit, read_body
from shipper.ingest.keys import (
    COUNTERS_KEY,
    INGEST_KEY,
    ROUTING_KEY,
    Intake,
    share_intake,
)
from shipper.ingest.responses import Handler
from shipper.ingest.server import IngestServer
from shipper.otlp import wire
from shipper.otlp.join import PART_KEEP
from shipper.otlp.plan import LogPlan, SpanPlan, plan_logs, plan_spans
from shipper.records import BadInput, NewRow
from shipper.sinks.routing import Routing
from shipper.sinks.vendor import VendorSink

OTLP_KEY = web.AppKey("otlp", OtlpConfig)


def _encoding(request: web.Request) -> str:
    """The encoding to answer in: the request's, protobuf when it named neither."""
    return wire.JSON if request.content_type == wire.JSON else wire.PROTOBUF


def _answer(request: web.Request, message: Message) -> web.Response:
    encoding = _encoding(request)
    return web.Response(body=wire.encode(message, encoding), content_type=encoding)


# gRPC codes for the statuses ingest refuses with; any other is INVALID_ARGUMENT.
GRPC_CODES = {401: wire.UNAUTHENTICATED, 413: wire.RESOURCE_EXHAUSTED, 500: wire.INTERNAL, 503: wire.UNAVAILABLE}
KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")


def _in_otlp_encoding(request: web.Request, refusal: web.Response) -> web.Response:
    """Ingest's JSON refusal (`{"error", "message"}`, counted by its reason already) as a google.rpc.Status in the
    request's encoding. A full disk (507) is said as 503: the exporters retry only 429, 502, 503 and 504, and the
    disk frees by itself."""
    status = 503 if refusal.status == 507 else refusal.status
    said = orjson.loads(refusal.body) if isinstance(refusal.body, bytes) else {}
    text = f"{said.get('error', 'refused')}: {said.get('message', '')}"
    encoding = _encoding(request)
    code = GRPC_CODES.get(status, wire.INVALID_ARGUMENT)
    answer = web.Response(status=status, body=wire.status(code, text, encoding), content_type=encoding)
    for name in KEPT_HEADERS:
        if name in refusal.headers:
            answer.headers[name] = refusal.headers[name]
    return answer


def _bounded(request: web.Request, items: int, what: str) -> None:
    """`[ingest] max_items` bounds the work one request makes the writer do, here as for native records."""
    limit = request.app[INGEST_KEY].max_items
    if items > limit:
        message = (
            f"more than {limit} {what} in one request; lower the exporter's batch size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"
        )
        raise BadInput("too_many_items", message, limit=limit)


def _routed(request: web.Request) -> tuple[list[VendorSink], list[str]]:
    """The routed vendor sinks (which get records), and the other routed sinks: otlp sinks (which get the export
    request whole), as the configuration's checks guarantee."""
    routing = request.app[ROUTING_KEY]
    route = request.app[OTLP_KEY].route
    vendors = [routing.vendors[name] for name in route if name in routing.vendors]
    return vendors, [name for name in route if name not in routing.vendors and name in routing.sinks]


def _forwarded(names: list[str], path: str, export: Message) -> list[NewRow]:
    """The export request for each otlp sink, as OTLP/JSON (sinks/otlp.py sends it in the encoding it wants)."""
    body = wire.to_json(export) if names else b""
    return [NewRow(name, "POST", path, None, body, None) for name in names]


async def post_traces(request: web.Request) -> web.Response:
    export = wire.decode(await read_body(request), request.content_type, ExportTraceServiceRequest)
    spans = sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
    _bounded(request, spans, "spans")
    vendors, forwarding = _routed(request)
    hold_until = time.time() + request.app[OTLP_KEY].logs_wait
    plan = plan_spans(export, vendors, hold_until) if vendors else SpanPlan()
    rows = [*plan.rows, *_forwarded(forwarding if spans else [], "/v1/traces", export)]
    if rows:  # vendor rows travel with the sink's own key: an exporter's one set of headers cannot carry one each
        await commit(request, rows)
    outcomes = {"mapped": plan.mapped, "held": plan.held, "passed_over": plan.passed_over, "refused": plan.refused}
    _count(request, "traces", {**outcomes, "forwarded": spans if forwarding else 0})
    response = ExportTraceServiceResponse()
    if plan.refused:
        response.partial_success.rejected_spans = plan.refused
        response.partial_success.error_message = f"{plan.refused} span(s) refused; the first: {plan.reason}"
    return _answer(request, response)


async def post_logs(request: web.Request) -> web.Response:
    """Content log records become parts for every routed vendor sink (join.py), and the request goes whole to the
    routed otlp sinks; any other log record is passed over."""
    export = wire.decode(await read_body(request), request.content_type, ExportLogsServiceRequest)
    records = sum(len(scope.log_records) for resource in export.resource_logs for scope in resource.scope_logs)
    _bounded(request, records, "log records")
    vendors, forwarding = _routed(request)
    plan = plan_logs(export, vendors, time.time() + PART_KEEP) if vendors else LogPlan(passed_over=records)
    rows = [*plan.rows, *_forwarded(forwarding if records else [], "/v1/logs", export)]
    if rows:
        await commit(request, rows)
    _count(
        request, "logs", {"held": plan.held, "passed_over": plan.passed_over, "forwarded": records if forwarding else 0}
    )
    return _answer(request, ExportLogsServiceResponse())


def _count(request: web.Request, signal: str, outcomes: dict[str, int]) -> None:
    counted = request.app[COUNTERS_KEY].otlp
    for outcome, count in outcomes.items():
        if count:
            counted[signal, outcome] += count


async def _elsewhere(request: web.Request) -> web.Response:
    if request.path in ("/v1/traces", "/v1/logs"):
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    raise web.HTTPNotFound(reason="Not Found: the OTLP receiver serves POST /v1/traces and /v1/logs")


@web.middleware
async def otlp_edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Ingest's edge (timing, headers, token, admission, every failure answered and counted), each refusal then
    said as OTLP says it; the receiver's own answers are all successes."""
    response = await edge(request, handler)
    if response.status >= 400 and isinstance(response, web.Response):
        return _in_otlp_encoding(request, response)
    return response


def otlp_server(
    app: web.Application, ingest: IngestConfig, otlp: OtlpConfig, inherited: tuple[socket.socket, ...]
) -> IngestServer:
    """Served as the ingest listeners are (server.py), on `[otlp] http` and `unix` or the sockets a supervisor (or
    the service manager) passed for them; the Unix socket with `[ingest] unix_mode` and `unix_group`."""
    listening = ingest.model_copy(update={"http": otlp.http, "unix": otlp.unix})
    return IngestServer(app, listening, by_family(inherited), section="otlp")


def build_otlp_app(
    live: Intake,
    routing: Routing,
    counters: IngestCounters,
    ingest: IngestConfig,
    otlp: OtlpConfig,
    redactor: Redactor,
    in_flight: InFlight,
) -> web.Application:
    """`in_flight`: the ingest application's, so a shutdown waits for OTLP requests as for the others."""
    app = web.Application(client_max_size=ingest.max_body_bytes, middlewares=[otlp_edge])
    share_intake(app, live, routing, counters, ingest, redactor)
    app[OTLP_KEY] = otlp
    app[IN_FLIGHT_KEY] = in_flight
    app.router.add_post("/v1/traces", post_traces)
    app.router.add_post("/v1/logs", post_logs)
    app.router.add_route("*", "/{tail:.*}", _elsewhere)
    return app
