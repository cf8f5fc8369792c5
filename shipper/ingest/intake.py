"""The two steps every ingest route shares: read a bounded body, and commit rows durably before answering.

Not responsible for parsing or validation (records.py, the vendor adapters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import hdrs, web

from shipper.errors import DiskFull, LargerThanSpool, SpoolError, SpoolFull
from shipper.ingest.encoding import decode_body
from shipper.ingest.keys import COUNTERS_KEY, INGEST_KEY, REDACTOR_KEY, ROUTING_KEY, SPOOL_KEY
from shipper.ingest.responses import Refused, error_response
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
    slow to send it. The one place a request's body is read: it is taken from the stream, not kept on the request."""
    config = request.app[INGEST_KEY]
    limit = config.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    content = request.content
    if content.is_eof():  # the whole body came with the headers, as it nearly always does: take it as it lies
        raw = content.read_nowait()
    else:
        raw = await _read_in_time(request, config.client_timeout)
    if len(raw) > limit:  # sent chunked, with no length to refuse it by before
        raise _too_large(limit)
    return decode_body(raw, request.headers.get(hdrs.CONTENT_ENCODING), limit)


def _too_large(limit: int) -> BadInput:
    return BadInput("body_too_large", f"request body is larger than {limit} bytes", limit=limit)


async def _read_in_time(request: web.Request, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BadInput("client_timeout", f"the body did not arrive within {timeout:g}s") from None


async def commit(request: web.Request, rows: Sequence[NewRow]) -> list[int]:
    """Redact, append and wait for the commit; a spool failure is the daemon's problem, said as 503 with Retry-After
    (Refused)."""
    app = request.app  # once: each `request.app` is a property lookup, on every request
    redactor = app[REDACTOR_KEY]
    routing = app[ROUTING_KEY]
    if redactor.active:  # before the append: what redaction removes must never reach the disk
        rows = redactor.redact_rows(list(rows), routing.vendor_queues)
    try:
        ids = await app[SPOOL_KEY].append(bundled(rows, routing.bundles) if routing.bundles else rows)
    except SpoolError as exc:
        status, code = SPOOL_FAILURES.get(type(exc), (503, "spool_unavailable"))
        response = error_response(status, code, str(exc))
        if status != 413:  # the others pass; this request will never fit as it is
            response.headers["Retry-After"] = "1"
        app[COUNTERS_KEY].rejected[code] += 1
        raise Refused(response) from None
    note_committed(request)
    received = app[COUNTERS_KEY].received
    for row in rows:  # not Counter.update, whose Mapping check (an ABC's) costs more than one row's count
        received[row.sink] += 1
    return ids
