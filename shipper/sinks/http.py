"""`type = "http"`: replay each record's method, path, query and body against `base_url`, or batch bodies as NDJSON.

Batch mode follows Vector's http sink: many record bodies in one POST, bounded by count, bytes and a timeout.
Not responsible for vendor formats: those sinks live beside this one and reuse its transport.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

import orjson
from multidict import CIMultiDictProxy

from shipper.config.sinks import HttpSinkConfig, OtlpSinkConfig
from shipper.core.retry import Outcome, Verdict, classify_status, parse_retry_after
from shipper.core.rows import SpoolRow
from shipper.secrets import read_secret
from shipper.sinks.base import Batching, OutRequest, failure_detail
from shipper.sinks.transport import HttpTransport


def authorized(
    name: str, config: HttpSinkConfig | OtlpSinkConfig, environ: Mapping[str, str]
) -> tuple[dict[str, str], tuple[str | None, ...]]:
    """The configured headers with the auth header's secret in place, and the forms of that secret (the whole value
    and what follows "Bearer ") that an error detail must never show."""
    headers = dict(config.headers)
    secret = read_secret(f"sinks.{name}", config.auth_env, config.auth_file, environ)
    if secret is None:
        return headers, ()
    headers[config.auth_header] = secret
    return headers, (secret, secret.partition(" ")[2] or None)


def render_query(raw: bytes | None) -> str:
    if not raw:
        return ""
    pairs = orjson.loads(raw)
    return "?" + urlencode({k: ("true" if v is True else "false" if v is False else str(v)) for k, v in pairs.items()})


def classify_response(
    status: int, headers: CIMultiDictProxy[str], body: bytes, secrets: Sequence[str | None] = ()
) -> Outcome:
    verdict = classify_status(status)
    if verdict is Verdict.DELIVERED:
        return Outcome(verdict, status)
    detail = failure_detail(status, body, secrets)
    return Outcome(verdict, status, detail, parse_retry_after(headers.get("Retry-After"), time.time()))


class HttpSink:
    def __init__(self, name: str, config: HttpSinkConfig, environ: Mapping[str, str]) -> None:
        self.name = name
        self.concurrency = config.concurrency
        self.batching = (
            Batching(config.batch_max_records, config.batch_max_bytes, config.batch_timeout, bundles=True)
            if config.batch
            else Batching()
        )
        self._base_url = config.base_url
        self._headers, self._secrets = authorized(name, config, environ)
        self._transport = HttpTransport(config.concurrency, config.timeout, ca_file=config.ca_file, sink=name)

    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()

    def build_request(self, rows: Sequence[SpoolRow]) -> OutRequest:
        if self.batching.max_records > 1:
            # One copy; each line ends in a newline. A bundle's body is its records' lines already (bundling.py).
            body = b"\n".join([*(row.body for row in rows), b""])
            headers = {**self._headers, "Content-Type": "application/x-ndjson"}
            return OutRequest("POST", self._base_url, headers, body)
        (row,) = rows
        url = self._base_url + row.path + render_query(row.query)
        if row.method == "DELETE" and row.body == b"null":
            return OutRequest(row.method, url, dict(self._headers), None)
        return OutRequest(row.method, url, {**self._headers, "Content-Type": "application/json"}, row.body)

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        return await self._transport.send(
            self.build_request(rows),
            lambda status, headers, body: classify_response(status, headers, body, self._secrets),
        )
