"""`[ingest]` and `[admin]`: the two listeners, their limits, and the one rule both follow to bind off loopback.

One module because the listeners share that rule (a TCP address that is not loopback needs a token) and the
`host:port` reading that the daemon, `shipper status` and the admin listener also use to reach them.
Not responsible for binding or serving (shipper/ingest/server.py, shipper/admin.py).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Self

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from shipper.config.section import Section
from shipper.configfile import FILE_PATH


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`; raises ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _octal(value: object) -> object:
    """A mode written as text is octal, as chmod reads it: "0600", "0o600" and "600" are all 0o600."""
    if not isinstance(value, str):
        return value
    digits = value.strip().lower().removeprefix("0o")
    if not digits or not set(digits) <= set("01234567"):
        raise ValueError(f'expected an octal mode such as 0o660 or "0660", got {value!r}')
    return int(digits, 8)


FileMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o777)]


class _Listener(Section):
    """A TCP listener (`http`) and the token it needs when it is not loopback: the one bind rule of both listeners."""

    # Which section it is and what a stranger could do through it, for the refusal's message.
    _SECTION: ClassVar[str]
    _EXPOSES: ClassVar[str]
    http: str = ""
    token: SecretStr | None = None

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_exposure(self) -> Self:
        http, token = getattr(self, "http"), getattr(self, "token")  # noqa: B009 - declared by each subclass
        if http and not is_loopback(parse_host_port(http)[0]) and not token:
            raise ValueError(
                f"http = {http!r} is not loopback: set [{self._SECTION}] token so strangers cannot {self._EXPOSES}"
            )
        return self


class IngestConfig(_Listener):
    _SECTION: ClassVar[str] = "ingest"
    _EXPOSES: ClassVar[str] = "write"

    # Loopback by default: the app is on the same host, and nothing else should reach the spool.
    http: str = "127.0.0.1:8790"
    unix: Annotated[str, FILE_PATH] = "var/shipper.sock"
    # Owner and group may write; a sidecar app joins the group to use the socket.
    unix_mode: FileMode = 0o660
    # Larger than any sane single LLM record (long contexts included), small enough to bound memory per request.
    max_body_bytes: int = Field(5 * 1024 * 1024, gt=0)
    # One NDJSON line is one record: a line this long is a mistake or an attack, not a log.
    max_line_bytes: int = Field(1024 * 1024, gt=0)
    # Records per request: bounds the work one request can make the writer do.
    max_items: int = Field(10_000, gt=0)
    # JSON nesting deeper than this is refused (orjson itself cannot re-encode past 254 levels).
    max_depth: int = Field(128, ge=2, le=250)
    # Requests handled at once; past it, 503 with Retry-After instead of unbounded memory.
    max_concurrent_requests: int = Field(1024, gt=0)
    # A client that takes longer than this to send its body gets 408; idle keep-alive connections close after it.
    client_timeout: float = Field(15.0, gt=0)
    # Largest request line / header field; longer ones get 400 from the HTTP parser.
    max_header_bytes: int = Field(8190, ge=1024)
    # Group owning the Unix socket ("" keeps the daemon's own group).
    unix_group: str = ""
    # Shared secret (Authorization: Bearer or X-Shipper-Token) for TCP requests; required off loopback.
    token: SecretStr | None = None


class AdminConfig(_Listener):
    """The operations-only listener (/metrics, /healthz, /readyz, /v1/status): scraping it never opens ingest."""

    _SECTION: ClassVar[str] = "admin"
    _EXPOSES: ClassVar[str] = "read status"

    # Off by default: ingest already serves these routes; switch it on to scrape or probe from outside the host or pod.
    http: str = ""
    # Required when `http` is not a loopback address; asked for /metrics and /v1/status, never for the probes.
    token: SecretStr | None = None
