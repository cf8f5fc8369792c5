"""JSON answers and the error middleware: every failure a client can cause gets a 4xx with a JSON body naming it.

Not responsible for deciding what is invalid (records.py does that).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from shipper.records import BadInput

log = logging.getLogger(__name__)

MAX_BODY_KEY = web.AppKey("max_body_bytes", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, **detail: Any) -> web.Response:
    return json_response({"error": code, "message": message, **detail}, status)


def _code_for(exc: web.HTTPException) -> str:
    return exc.reason.lower().replace(" ", "_") if exc.reason else f"http_{exc.status}"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadInput as exc:
        return json_response(exc.body(), exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_KEY]
        return error_response(413, "body_too_large", f"request body is larger than {limit} bytes", limit=limit)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{request.method} {request.path}: {exc.reason}"
        return error_response(exc.status, _code_for(exc), message)
    except Exception:
        log.exception("unexpected error while handling %s %s", request.method, request.path)
        return error_response(500, "internal_error", "shipper failed to handle this request; see its log")
