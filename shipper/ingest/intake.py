"""The two steps every ingest route shares: read a bounded body, and commit rows durably before answering.

Not responsible for parsing or validation (records.py, the vendor adapters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web

from shipper.errors import DiskFull, LargerThanSpool, SpoolError, SpoolFull
from shipper.ingest.encoding import decode_body
from shipper.ingest.keys import COUNTERS_KEY, INGEST_KEY, REDACTOR_KEY, ROUTING_KEY, SPOOL_KEY
from shipper.ingest.responses import error_response
from shipper.ingest.timing import note_committed
from shipper.records import BadInput, NewRow
from shipper.sinks.bundling import bundled

# Nothing from the request was spooled in any of these; the client should send it again later (or, for 413, split).
SPOOL_FAILURES: dict[type[SpoolError], tuple[int, str]] = {
    SpoolFull: (503, "spool_full"),
    LargerThanSpool: (413, "larger_than_spool"),
    DiskFull: (507, "insufficient_storage"),
}


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded (encoding.py): refusing early on a declared length over the limit, and a client too
    slow to send it."""
    config = request.app[INGEST_KEY]
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadInput("body_too_large", f"request body is larger than {limit} bytes", limit=limit)
    try:
        async with asyncio.timeout(config.client_timeout):
            raw = await request.read()
    except TimeoutError:
        message = f"the body did not arrive within {config.client_timeout:g}s"
        raise BadInput("client_timeout", message) from None
    return decode_body(raw, request.headers.get(hdrs.CONTENT_ENCODING), limit)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Nothing from the request was spooled: the spool's failure, for each route to answer in its own format."""

    status: int
    code: str
    message: str

    @property
    def retry_later(self) -> bool:
        """Every failure but 413 passes; that request will never fit as it is."""
        return self.status != 413


async def committed(request: web.Request, rows: Sequence[NewRow]) -> list[int] | Refusal:
    """Redact, append and wait for the commit; a spool failure is the daemon's problem, counted and returned."""
    redactor = request.app[REDACTOR_KEY]
    routing = request.app[ROUTING_KEY]
    if redactor.active:  # before the append: what redaction removes must never reach the disk
        vendors = {name: sink.adapter.type for name, sink in routing.vendors.items()}
        rows = redactor.redact_rows(list(rows), vendors)
    try:
        ids = await request.app[SPOOL_KEY].append(bundled(rows, routing.bundles) if routing.bundles else rows)
    except SpoolError as exc:
        status, code = SPOOL_FAILURES.get(type(exc), (503, "spool_unavailable"))
        request.app[COUNTERS_KEY].rejected[code] += 1
        return Refusal(status, code, str(exc))
    note_committed(request)
    request.app[COUNTERS_KEY].received.update(row.sink for row in rows)
    return ids


async def commit(request: web.Request, rows: Sequence[NewRow]) -> list[int] | web.Response:
    """As `committed`, a refusal said as JSON with Retry-After (503; 413 without)."""
    result = await committed(request, rows)
    if not isinstance(result, Refusal):
        return result
    response = error_response(result.status, result.code, result.message)
    if result.retry_later:
        response.headers["Retry-After"] = "1"
    return response
