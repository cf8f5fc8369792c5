"""Proxied vendor calls: reads and calls whose answer only the vendor has, passed straight through.

A proxied call travels with the caller's own key; the sink's configured key stands in only where the operator opts
in (`proxy_sink_key`), since any local process can reach these routes. The sink's key is blanked in every answer,
so an answer can never carry it back. Answers stream through a bounded buffer: a small one is sent whole (so a
failure is still a clean 502/504), a larger one is passed on chunk by chunk, and one over PROXY_MAX_BYTES is refused
with 502 when its length is declared, or cut off with a closed connection (never a complete-looking truncated 200)
when it is not. Proxied calls use the sink's own `reads` connections, apart from deliveries.
Not responsible for which paths are proxied (the vendor adapters).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from shipper.ingest.responses import error_response
from shipper.records import BadInput
from shipper.sinks.transport import read_capped, user_agent
from shipper.sinks.vendor import VendorSink
from shipper.vendors.base import Proxied

log = logging.getLogger(__name__)

# Prompt templates and lists are small; the cap keeps a misbehaving remote from streaming without end.
PROXY_MAX_BYTES = 16 * 1024 * 1024
# An answer up to this size is held and sent whole; a larger one streams. Bounds memory per proxied call.
WHOLE_BYTES = 256 * 1024
CHUNK_BYTES = 64 * 1024
REDACTED = b"[REDACTED]"


class Scrubber:
    """Blanks secrets in a stream of chunks, holding back the few bytes a secret could straddle."""

    def __init__(self, secrets: Sequence[str | None]) -> None:
        self._secrets = [secret.encode() for secret in secrets if secret]
        self._keep = max((len(secret) for secret in self._secrets), default=1) - 1
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        cut = max(0, len(data) - self._keep)
        out, self._tail = data[:cut], data[cut:]
        return out

    def finish(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail

    def whole(self, data: bytes) -> bytes:
        return self.feed(data) + self.finish()


class TooLarge(Exception):
    """A streamed answer grew past PROXY_MAX_BYTES."""


def caller_key(sink: VendorSink, request: web.Request) -> str:
    key = sink.proxy_key(sink.adapter.key_from(request.headers))
    if key is None:
        header = sink.adapter.auth_header
        message = f"no API key for {sink.adapter.type}: a proxied call travels with the caller's own key ({header})"
        raise BadInput("missing_api_key", message, field=header)
    return key


async def proxy(request: web.Request, sink: VendorSink, plan: Proxied, raw: bytes) -> web.StreamResponse:
    key = caller_key(sink, request)
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")} if raw else {}
    headers["User-Agent"] = user_agent(request.headers.get("User-Agent"))
    headers[sink.adapter.auth_header] = sink.adapter.auth_value(key)
    query = request.rel_url.raw_query_string  # as the app encoded it: decoding would turn %23 into a fragment
    url = sink.base_url + plan.path + (f"?{query}" if query else "")
    scrub = Scrubber([sink.sink_key])
    vendor = sink.adapter.type
    try:
        async with sink.reads.session.request(
            request.method, url, data=raw or None, headers=headers, allow_redirects=False
        ) as upstream:
            declared = upstream.content_length
            if declared is not None and declared > PROXY_MAX_BYTES:
                message = f"{vendor} answered {declared} bytes; shipper passes at most {PROXY_MAX_BYTES}"
                return error_response(502, "upstream_too_large", message, limit=PROXY_MAX_BYTES)
            head = await read_capped(upstream.content, WHOLE_BYTES + 1)
            content_type = scrub.whole(upstream.headers.get("Content-Type", "application/json").encode()).decode()
            if len(head) <= WHOLE_BYTES:
                body = scrub.whole(head)
                return web.Response(status=upstream.status, body=body, headers={"Content-Type": content_type})
            return await _stream(request, sink, upstream, head, scrub, content_type)
    except TimeoutError:
        return error_response(504, "upstream_timeout", f"{vendor} did not answer in time")
    except aiohttp.ClientError as exc:
        log.warning("proxy to sink %s failed: %s", sink.name, type(exc).__name__)
        return error_response(502, "upstream_unreachable", f"cannot reach {vendor}: {type(exc).__name__}")


async def _stream(
    request: web.Request,
    sink: VendorSink,
    upstream: aiohttp.ClientResponse,
    head: bytes,
    scrub: Scrubber,
    content_type: str,
) -> web.StreamResponse:
    """Pass a large answer on as it arrives. Once its head is sent no error answer is possible: a failure closes the
    connection before the last chunk, which every HTTP client reports as an incomplete answer."""
    response = web.StreamResponse(status=upstream.status, headers={"Content-Type": content_type})
    await response.prepare(request)
    total = len(head)
    try:
        await response.write(scrub.feed(head))
        async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
            total += len(chunk)
            if total > PROXY_MAX_BYTES:
                raise TooLarge
            await response.write(scrub.feed(chunk))
        await response.write(scrub.finish())
    except (TooLarge, TimeoutError, aiohttp.ClientError) as exc:
        what = f"more than {PROXY_MAX_BYTES} bytes" if isinstance(exc, TooLarge) else type(exc).__name__
        log.warning("proxied answer from sink %s cut off after %d bytes: %s", sink.name, total, what)
        if request.transport is not None:
            request.transport.close()
    return response
