"""The application: the native routes (`POST /v1/records`, `GET /healthz`) and the vendors' drop-in paths.

A 202 means every row of the request is committed to the spool; any invalid item rejects the whole request and
nothing is spooled. Not responsible for listening sockets (server.py) or validation rules (records.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from shipper.ingest.dropin import VENDORS_KEY, dropin, plan_native
from shipper.ingest.intake import SPOOL_KEY, commit, read_body
from shipper.ingest.responses import MAX_BODY_KEY, json_errors, json_response
from shipper.records import BadInput, parse_records
from shipper.sinks.vendor import VendorSink
from shipper.spool import Spool

SINKS_KEY: web.AppKey[frozenset[str]] = web.AppKey("sinks")


async def post_records(request: web.Request) -> web.Response:
    raw = await read_body(request)
    sinks = request.app[SINKS_KEY]
    rows = parse_records(raw, request.content_type, sinks)
    vendors = request.app[VENDORS_KEY]
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
    if isinstance(ids, web.Response):
        return ids
    body: dict[str, Any] = {"accepted": len(ids), "ids": ids}
    if answers is not None:
        body["results"] = answers
    return json_response(body, 202)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def build_app(
    spool: Spool, sinks: Collection[str], max_body_bytes: int, vendors: Mapping[str, VendorSink]
) -> web.Application:
    """`vendors` maps sink name → vendor sink; those with `dropin` also serve their vendor's own paths."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[json_errors])
    app[SPOOL_KEY] = spool
    names: frozenset[str] = frozenset(sinks)
    app[SINKS_KEY] = names
    app[MAX_BODY_KEY] = max_body_bytes
    app[VENDORS_KEY] = vendors
    app.router.add_post("/v1/records", post_records)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", dropin)
    return app
