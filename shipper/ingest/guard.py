"""Who may come in, and how much at once: the shared token for TCP clients and the cap on requests in flight.

The token is compared in constant time and accepted as `X-Shipper-Token` or `Authorization: Bearer`; when it came in
`Authorization`, that header is removed before any route sees it, so it can never be taken for a vendor's API key.
Requests over the Unix socket are trusted to its file permissions; `/healthz` stays open for probes.
Not responsible for what a request may contain (records.py, limits in intake.py).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from multidict import CIMultiDict

from shipper.ingest.headers import TOKEN_HEADER
from shipper.ingest.keys import COUNTERS_KEY, DRAINING_KEY, INGEST_KEY
from shipper.ingest.responses import Refused, error_response

OPEN_PATHS = frozenset({"/healthz"})
# Still answered while shutting down, so probes and scrapers see the drain.
OPERATIONS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/status"})


@dataclass(slots=True)
class InFlight:
    """Requests being handled; shutdown waits for `idle` before it stops the sinks."""

    count: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


IN_FLIGHT_KEY = web.AppKey("in_flight", InFlight)


def _over_tcp(request: web.Request) -> bool:
    return request.transport is not None and isinstance(request.transport.get_extra_info("sockname"), tuple)


def _matches(offered: str | None, token: str) -> bool:
    # surrogateescape: a header byte that is not UTF-8 must compare unequal, never raise (headers.py refuses it first).
    return offered is not None and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode())


def authenticate(request: web.Request) -> web.Request:
    """The request to hand on (a copy without Authorization when the token came in it); Refused with the 401."""
    secret = request.app[INGEST_KEY].token
    if secret is None or request.path in OPEN_PATHS or not _over_tcp(request):
        return request
    token = secret.get_secret_value()
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    in_authorization = authorization[:7].lower() == "bearer " and _matches(authorization[7:].strip(), token)
    if in_authorization:  # whichever header proved it, the token must never pass for a vendor's key
        headers = CIMultiDict(request.headers)
        del headers[hdrs.AUTHORIZATION]
        return request.clone(headers=headers)
    if _matches(request.headers.get(TOKEN_HEADER), token):
        return request
    request.app[COUNTERS_KEY].rejected["invalid_token"] += 1
    response = error_response(401, "invalid_token", "send shipper's token as X-Shipper-Token or Authorization: Bearer")
    response.headers["WWW-Authenticate"] = 'Bearer realm="shipper"'
    raise Refused(response)


def admit(request: web.Request) -> InFlight | None:
    """Refuse new work once shutdown begins, and past `max_concurrent_requests` in flight: Refused with the 503.

    Otherwise the request is counted in flight, and the InFlight it entered is returned for the caller to leave once
    it is answered; a liveness probe is neither refused for being busy nor counted (None)."""
    app = request.app  # once: each `request.app` is a property lookup, on every request
    if app[DRAINING_KEY].stopping and request.path not in OPERATIONS:
        app[COUNTERS_KEY].rejected["stopping"] += 1
        response = error_response(503, "stopping", "shipper is shutting down; send to its successor")
        response.headers["Retry-After"] = "1"
        raise Refused(response)
    if request.path in OPEN_PATHS:  # a liveness probe must not fail because the daemon is busy
        return None
    in_flight = app[IN_FLIGHT_KEY]
    if in_flight.count >= app[INGEST_KEY].max_concurrent_requests:
        app[COUNTERS_KEY].rejected["too_busy"] += 1
        response = error_response(503, "too_busy", "too many requests in flight; retry shortly")
        response.headers["Retry-After"] = "1"
        raise Refused(response)
    in_flight.enter()
    return in_flight
