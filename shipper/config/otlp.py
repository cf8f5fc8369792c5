"""`[otlp]`: the OpenTelemetry (OTLP/HTTP) receiver's listeners and which sinks record the LLM calls its spans hold.

Off unless `http` or `unix` is set. It shares `[ingest]`'s limits (body size, client timeout, requests in flight)
and its token: the receiver is one more ingest listener, so off loopback it needs `[ingest] token`, which an
exporter sends as a header (`OTEL_EXPORTER_OTLP_HEADERS=X-Shipper-Token=...`); its Unix socket takes `[ingest]`'s
mode and group. The checks that need the sinks (every routed sink is an otlp sink or a vendor sink with its own key)
live with the others across sections (shipper/config/__init__.py).
Not responsible for binding or serving (shipper/ingest/otlp.py) or for reading spans (shipper/otlp/).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from shipper.config.listeners import parse_host_port
from shipper.config.section import Section
from shipper.configfile import FILE_PATH


class OtlpConfig(Section):
    # host:port of the OTLP/HTTP receiver (`POST /v1/traces`, `POST /v1/logs`); "" (the default) switches it off.
    # 4318 is OTLP/HTTP's registered port, where exporters send by default.
    http: str = ""
    # A Unix socket for the receiver too (or alone); "" is none. Its mode and group are `[ingest] unix_mode` /
    # `unix_group`'s; it needs no token, as ingest's socket does not.
    unix: Annotated[str, FILE_PATH] = ""
    # The sinks spans go to. A vendor sink records every LLM span as its own kind of record (a Freeplay completion,
    # a Humanloop prompt log, a Keywords AI request log); an otlp sink gets every export request whole.
    route: tuple[str, ...] = ()
    # How long an LLM span with no messages waits for them on the logs signal before its records are sent (with what
    # came by then): the SDK exports spans and log records apart, every 5 s and 1 s by default.
    logs_wait: float = Field(5.0, ge=0, le=3600)

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value
