"""The native routes: `POST /v1/records` (NDJSON or JSON) and `GET /healthz`.

A 202 means every row of the request is committed to the spool; any invalid item rejects the whole request and
nothing is spooled. Not responsible for listening sockets (server.py) or validation rules (records.py).
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from shipper.errors import SpoolError
from shipper.ingest.responses import MAX_BODY_KEY, error_response, json_errors, json_response
from shipper.records import BadInput, NewRow, parse_records
from shipper.spool import Spool

SPOOL_KEY = web.AppKey("spool", Spool)
SINKS_KEY: web.AppKey[frozenset[str]] = web.AppKey("sinks")


async def read_body(request: web.Request) -> bytes:
    """The whole body, refusing early on a declared length over the limit."""
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(413, "body_too_large", f"request body is larger than {limit} bytes", limit=limit)
    return await request.read()


async def commit(request: web.Request, rows: list[NewRow]) -> list[int] | web.Response:
    """Append and wait for the commit; a spool failure is the daemon's problem, said as 503 with Retry-After."""
    try:
        return await request.app[SPOOL_KEY].append(rows)
    except SpoolError as exc:
        response = error_response(503, "spool_unavailable", str(exc))
        response.headers["Retry-After"] = "1"
        return response


async def post_records(request: web.Request) -> web.Response:
    raw = await read_body(request)
    sinks = request.app[SINKS_KEY]
    rows = parse_records(raw, request.content_type, sinks)
    ids = await commit(request, rows)
    if isinstance(ids, web.Response):
        return ids
    return json_response({"accepted": len(ids), "ids": ids}, 202)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def build_app(spool: Spool, sinks: Collection[str], max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[json_errors])
    app[SPOOL_KEY] = spool
    names: frozenset[str] = frozenset(sinks)
    app[SINKS_KEY] = names
    app[MAX_BODY_KEY] = max_body_bytes
    app.router.add_post("/v1/records", post_records)
    app.router.add_get("/healthz", healthz)
    return app
