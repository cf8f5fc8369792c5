"""The application: the native route `POST /v1/records`, the operations routes and the vendors' drop-in paths.

A 202 means every row of the request is committed to the spool; any invalid item rejects the whole request and
nothing is spooled. Not responsible for listening sockets (server.py) or validation rules (records.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from shipper.config.listeners import IngestConfig
from shipper.enrich.redact import Redactor
from shipper.ingest.counters import IngestCounters
from shipper.ingest.dropin import dropin, plan_native, remember_native_routes
from shipper.ingest.edge import edge
from shipper.ingest.guard import IN_FLIGHT_KEY, InFlight
from shipper.ingest.intake import commit, read_body
from shipper.ingest.keys import (
    LIMITS_KEY,
    ROUTING_KEY,
    Intake,
    share_intake,
)
from shipper.ingest.responses import json_response
from shipper.records import BadInput, Limits, parse_records
from shipper.sinks.routing import Routing


async def post_records(request: web.Request) -> web.Response:
    raw = await read_body(request)
    app = request.app  # once: each `request.app` is a property lookup, on every request
    routing = app[ROUTING_KEY]
    rows = parse_records(raw, request.content_type, routing.sinks, app[LIMITS_KEY])
    vendors = routing.vendors
    answers: list[Any] | None = None
    if vendors and any(row.sink in vendors for row in rows):
        answers = [None] * len(rows)
        for index, row in enumerate(rows):
            if row.sink in vendors:
                try:
                    planned = plan_native(vendors[row.sink], row, request.headers)
                except BadInput as exc:
                    exc.detail = {"index": index, **exc.detail}
                    raise
                rows[index] = planned.row
                answers[index] = planned.answer
    ids = await commit(request, rows)
    body: dict[str, Any] = {"accepted": len(ids), "ids": ids}
    if answers is not None:
        body["results"] = answers
    return json_response(body, 202)


def build_app(
    live: Intake,
    routing: Routing,
    counters: IngestCounters,
    config: IngestConfig,
    redactor: Redactor | None = None,
    operations: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """`operations` adds the operations routes (health, metrics, status: ops/routes.py); ingest knows none of them."""
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[edge])  # edge.py: every request's checks
    share_intake(app, live, routing, counters, config, redactor or Redactor())  # no rules: rows pass as they are
    app[LIMITS_KEY] = Limits(config.max_line_bytes, config.max_items, config.max_depth)
    app[IN_FLIGHT_KEY] = InFlight()
    app.router.add_post("/v1/records", post_records)
    if operations is not None:
        operations(app)
    remember_native_routes(app)
    app.router.add_route("*", "/{tail:.*}", dropin)
    return app
