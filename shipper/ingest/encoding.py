"""Request bodies sent with a Content-Encoding: inflated here, never past `max_body_bytes`.

aiohttp's own decompression is off (server.py): its size check sees the compressed length, so a small gzip bomb was
inflated whole before it was refused, and a body that did not decode escaped as a 500. Here inflation stops one byte
past the limit whatever the ratio, so memory never grows with the inflated size, and each failure has its own
answer: 400 `invalid_encoding` for a body that does not decode, 415 `unsupported_encoding` for a coding shipper does
not know, 413 `body_too_large` for one that inflates past the limit. Not responsible for reading the body (intake.py).
"""

from __future__ import annotations

import zlib

from shipper.records import BadInput

HEADER = "Content-Encoding"
GZIP = 16 + zlib.MAX_WBITS
ZLIB = zlib.MAX_WBITS
RAW_DEFLATE = -zlib.MAX_WBITS


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with every listed coding undone, last applied first (RFC 9110 8.4)."""
    if not content_encoding:
        return raw
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    for coding in reversed([coding for coding in codings if coding and coding != "identity"]):
        raw = _inflate(raw, _wbits(coding, raw), limit)
    return raw


def _wbits(coding: str, raw: bytes) -> int:
    if coding in ("gzip", "x-gzip"):
        return GZIP
    if coding == "deflate":
        # The standard says zlib-wrapped; some clients send raw deflate. A zlib header says which it is.
        zlib_header = len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
        return ZLIB if zlib_header else RAW_DEFLATE
    message = f"{HEADER} {coding!r} is not supported; send gzip, deflate or an uncompressed body"
    raise BadInput("unsupported_encoding", message, field=HEADER)


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadInput("invalid_encoding", f"the body does not decode as its {HEADER}: {exc}", field=HEADER) from None
    if len(out) > limit:
        message = f"request body is larger than {limit} bytes once decompressed"
        raise BadInput("body_too_large", message, limit=limit)
    if not inflater.eof or inflater.unused_data:
        what = "ends before its compressed stream does" if not inflater.eof else "has data after its compressed stream"
        raise BadInput("invalid_encoding", f"the body {what}", field=HEADER)
    return out
