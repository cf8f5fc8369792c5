"""JSON answers, and the answer to every failure: each one a client can cause gets a 4xx with a JSON body naming it.

Not responsible for deciding what is invalid (records.py does that).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from shipper.errors import ShipperError
from shipper.ingest.keys import COUNTERS_KEY, INGEST_KEY
from shipper.records import BadInput

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The one place a refusal becomes an HTTP status: every BadInput code, by what the client should do about it.
STATUS: dict[str, int] = {
    # Fix the request.
    "invalid_json": 400,
    "invalid_utf8": 400,
    "empty": 400,
    "too_deep": 400,
    "invalid_path": 400,
    "invalid_header": 400,
    "invalid_encoding": 400,
    "invalid_protobuf": 400,
    "invalid_id": 400,
    "unencodable": 400,
    # Send a key.
    "missing_api_key": 401,
    "not_found": 404,
    "client_timeout": 408,
    # Send less.
    "body_too_large": 413,
    "line_too_long": 413,
    "too_many_items": 413,
    "unsupported_media_type": 415,
    "unsupported_encoding": 415,
    # Well-formed, but not a record shipper can take.
    "invalid_record": 422,
    "unknown_sink": 422,
    "invalid_body": 422,
}


class Refused(ShipperError):
    """A request answered instead of by its route, the answer ready and its reason already counted: a wrong token,
    shutting down, too busy, a spool failure. Raised rather than returned, so that the path of a request that is
    taken tests for nothing (an isinstance against aiohttp's response types is an ABC check, slow on a miss)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(f"answered {response.status} at the edge")
        self.response = response


def status_of(exc: BadInput) -> int:
    return STATUS.get(exc.code, 400)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, **detail: Any) -> web.Response:
    return json_response({"error": code, "message": message, **detail}, status)


def _code_for(exc: web.HTTPException) -> str:
    return exc.reason.lower().replace(" ", "_") if exc.reason else f"http_{exc.status}"


def failure_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to a failure while handling `request`, counted by reason (shipper_requests_rejected): a
    BadInput, an HTTPException of 400 or more (one below, a redirect, is no failure: the edge lets it through), or
    anything unexpected, which is logged and said as 500."""
    if isinstance(exc, BadInput):
        return _counted(request, json_response(exc.body(), status_of(exc)), exc.code)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[INGEST_KEY].max_body_bytes
        message = f"request body is larger than {limit} bytes"
        return _counted(request, error_response(413, "body_too_large", message, limit=limit), "body_too_large")
    if isinstance(exc, web.HTTPException):
        code = _code_for(exc)
        response = error_response(exc.status, code, f"{request.method} {request.path}: {exc.reason}")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return _counted(request, response, code)
    log.error("unexpected error while handling %s %s", request.method, request.path, exc_info=exc)
    message = "shipper failed to handle this request; see its log"
    return _counted(request, error_response(500, "internal_error", message), "internal_error")


def _counted(request: web.Request, response: web.Response, reason: str) -> web.Response:
    request.app[COUNTERS_KEY].rejected[reason] += 1
    return response
