"""Drop-in routes: each vendor's own API paths, so an app changes only its SDK's base URL to shipper's.

A logging call becomes one spool row and is answered, once committed, with what the SDK needs (ids, exact status).
A call whose answer only the vendor has (prompt fetches, test runs, lists) is proxied straight through (proxy.py).
Not responsible for what each vendor's paths mean (shipper/vendors/) or for delivery (the forwarder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from shipper.ingest.intake import commit, read_body
from shipper.ingest.keys import LIMITS_KEY, ROUTING_KEY
from shipper.ingest.proxy import proxy
from shipper.ingest.responses import json_response
from shipper.ingest.timing import note_route
from shipper.records import BadInput, NewRow, check_depth, check_path, json_words
from shipper.sinks.vendor import VendorSink
from shipper.vendors.base import Proxied, Spooled, normalize_path

# Native paths reached with the wrong method fall through to the catch-all; they deserve a 405, not a 404.
# Filled by `remember_native_routes` from the router itself, so it cannot drift from the routes registered.
NATIVE_KEY: web.AppKey[dict[str, list[str]]] = web.AppKey("native_routes")


def remember_native_routes(app: web.Application) -> None:
    """Call after the native routes are added and before the catch-all: path → the methods it takes."""
    native: dict[str, list[str]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        native.setdefault(path, []).append(route.method)
    app[NATIVE_KEY] = native


@dataclass(frozen=True, slots=True)
class Planned:
    row: NewRow
    status: int
    answer: Any


def credential_for(sink: VendorSink, headers: Mapping[str, str]) -> str | None:
    """The key to store with the row: the app's own, unless the sink overrides it; missing_api_key when none exists.
    None for a call going via the stream: a relay delivers it with its own key, so none is kept."""
    if sink.config.via:
        return None
    app_key = sink.adapter.key_from(headers)
    if sink.key_for(app_key) is None:
        header = sink.adapter.auth_header
        message = f"no API key for {sink.adapter.type}: send the SDK's usual key header ({header})"
        raise BadInput("missing_api_key", message, field=header)
    return None if sink.override_key else app_key


def plan_native(sink: VendorSink, row: NewRow, headers: Mapping[str, str]) -> Planned:
    """A `/v1/records` item naming a vendor sink gets exactly the mapping its drop-in call would."""
    query = orjson.loads(row.query) if row.query else {}
    try:
        body = orjson.loads(row.body)
    except orjson.JSONDecodeError as exc:  # valid JSON text that no JSON library maps to values, such as 1e400
        raise BadInput("invalid_json", f"body: {json_words(exc)}", field="body") from None
    plan = sink.adapter.plan(row.method, row.path, {k: str(v) for k, v in query.items()}, body)
    if not isinstance(plan, Spooled):
        raise BadInput(
            "invalid_record", f"{row.method} {row.path} is not a {sink.adapter.type} log route", field="path"
        )
    return Planned(plan.row(sink.spooled_as, credential_for(sink, headers)), plan.status, plan.answer)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput("invalid_json", f"body is not JSON: {json_words(exc)}") from None


async def dropin(request: web.Request) -> web.StreamResponse:
    """Catch-all: the first vendor whose adapter claims the path handles the call."""
    app = request.app  # once: each `request.app` is a property lookup, on every request
    vendors = app[ROUTING_KEY].vendors
    raw = await read_body(request)
    body = _decode(raw)
    check_depth(raw, body, app[LIMITS_KEY])
    path = request.rel_url.raw_path
    native = app[NATIVE_KEY].get(normalize_path(path))
    if native is not None:
        raise web.HTTPMethodNotAllowed(request.method, native)
    for sink in vendors.values():
        if not sink.config.dropin:
            continue
        plan = sink.adapter.plan(request.method, path, request.query, body)
        if plan is None:
            continue
        note_route(request, f"dropin:{sink.adapter.type}")
        if isinstance(plan, Proxied):
            try:
                check_path(plan.path)
            except ValueError as exc:
                raise BadInput("invalid_path", f"cannot proxy {plan.path!r}: path {exc}", field="path") from None
            return await proxy(request, sink, plan, raw)
        await commit(request, [plan.row(sink.spooled_as, credential_for(sink, request.headers))])
        return json_response(plan.answer, plan.status)
    raise BadInput("not_found", f"{request.method} {request.path}: no such route")
