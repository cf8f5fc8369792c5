"""JSON answers and the error middleware: every failure a client can cause gets a 4xx with a JSON body naming it.

Not responsible for deciding what is invalid (records.py does that).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

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


def status_of(exc: BadInput) -> int:
    return STATUS.get(exc.code, 400)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, **detail: Any) -> web.Response:
    return json_response({"error": code, "message": message, **detail}, status)


def _code_for(exc: web.HTTPException) -> str:
    return exc.reason.lower().replace(" ", "_") if exc.reason else f"http_{exc.status}"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON answer and count it by reason (shipper_requests_rejected)."""
    try:
        return await handler(request)
    except BadInput as exc:
        return _counted(request, json_response(exc.body(), status_of(exc)), exc.code)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[INGEST_KEY].max_body_bytes
        message = f"request body is larger than {limit} bytes"
        return _counted(request, error_response(413, "body_too_large", message, limit=limit), "body_too_large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _code_for(exc)
        response = error_response(exc.status, code, f"{request.method} {request.path}: {exc.reason}")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return _counted(request, response, code)
    except Exception:
        log.exception("unexpected error while handling %s %s", request.method, request.path)
        message = "shipper failed to handle this request; see its log"
        return _counted(request, error_response(500, "internal_error", message), "internal_error")


def _counted(request: web.Request, response: web.Response, reason: str) -> web.Response:
    request.app[COUNTERS_KEY].rejected[reason] += 1
    return response
