"""Header values checked at the edge, before any route, the spool or a sink reads them.

aiohttp decodes header bytes as UTF-8 with `surrogateescape`, so a byte that is not UTF-8 (an API key pasted with a
trailing no-break space, which `requests` sends as Latin-1) reaches the code as a lone surrogate that every later
encode refuses: the credential digest, SQLite, the outgoing request. Refusing such a value here, with a 400 that
names the header, means nothing downstream ever holds one. Credentials (shipper's token, the vendors' keys) must
also be printable ASCII: every vendor issues ASCII keys, and anything else is a paste error that would otherwise be
stored and fail at every delivery attempt. Not responsible for whether a credential is right (guard.py, the vendor).
"""

from __future__ import annotations

from aiohttp import web

from shipper.ingest.keys import COUNTERS_KEY
from shipper.ingest.responses import Refused, error_response
from shipper.records import BadInput

TOKEN_HEADER = "X-Shipper-Token"
# Every header a credential arrives in: shipper's own token and each vendor adapter's key header.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", TOKEN_HEADER.lower()})


def problem(name: str, value: str) -> str | None:
    """What is wrong with one header value, in words for the client; None when it is fine."""
    if value.isascii() and value.isprintable():  # nearly every header: two C-speed checks
        return None
    credential = name.lower() in CREDENTIAL_HEADERS
    if value.isascii():
        return "holds a control character; credentials are printable ASCII" if credential else None
    for position, char in enumerate(value):
        if "\udc80" <= char <= "\udcff":
            return f"is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at position {position})"
        if credential and not char.isascii():
            return f"holds {char!r} at position {position}; credentials are printable ASCII (a pasted space?)"
    return None


def check_headers(request: web.Request) -> None:
    """Refuse a header value that is not usable: the 401 for shipper's token (Refused), BadInput for any other."""
    values = "".join(request.headers.values())
    if values.isascii() and values.isprintable():  # nearly every request: two C-speed scans of all values at once
        return
    for name, value in request.headers.items():
        found = problem(name, value)
        if found is None:
            continue
        if name.lower() == TOKEN_HEADER.lower():  # the same answer as a wrong token (guard.py)
            request.app[COUNTERS_KEY].rejected["invalid_token"] += 1
            response = error_response(401, "invalid_token", f"{TOKEN_HEADER} {found}", field=TOKEN_HEADER)
            response.headers["WWW-Authenticate"] = 'Bearer realm="shipper"'
            raise Refused(response)
        raise BadInput("invalid_header", f"header {name} {found}", field=name)
