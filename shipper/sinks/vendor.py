"""What every vendor adapter shares: the routing plan, the route table, and the delivering sink.

An adapter is pure data plus pure functions: which drop-in paths it serves, what row each call becomes (key, scope,
after, the ids it mints and the answer the SDK needs), which status codes mean success, and which ids a create's
answer teaches. `VendorSink` does the rest the same way for all of them. Not responsible for HTTP serving
(ingest/dropin.py) or retries (the forwarder).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from multidict import CIMultiDictProxy

from shipper.config import VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.enrich.usage import Enricher
from shipper.forward.retry import Outcome, Verdict, classify_status, parse_retry_after
from shipper.queue.base import Lookups
from shipper.records import BadInput, NewRow
from shipper.sinks.base import Batching, OutRequest, failure_detail
from shipper.sinks.http import read_secret, render_query
from shipper.sinks.transport import HttpTransport

# Ids that arrive as path segments: uuids and vendor ids, nothing that could alter a URL.
ID = r"([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})"
_SLASHES = re.compile(r"/{2,}")
# A create's answer can be larger than an error's: keep enough to read the ids it assigns.
KEEP_VENDOR_RESPONSE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Spooled:
    """A drop-in call that becomes one spool row, answered at once with `status` and `answer`."""

    method: str
    path: str  # relative to the sink's base_url
    body: Any
    status: int
    answer: Any
    key: str | None = None
    scope: str | None = None
    after: str | None = None
    kind: str | None = None
    query: Mapping[str, str] | None = None

    def row(self, sink: str, credential: str | None) -> NewRow:
        query = orjson.dumps(dict(self.query)) if self.query else None
        try:
            body = orjson.dumps(self.body)
        except orjson.JSONEncodeError as exc:  # a backstop: ingest's depth limit refuses such bodies first
            raise BadInput(400, "unencodable", f"the body cannot be stored as JSON: {exc}") from None
        return NewRow(
            sink, self.method, self.path, query, body, self.key, self.scope, self.after, self.kind, credential
        )


@dataclass(frozen=True, slots=True)
class Proxied:
    """A call whose answer only the vendor has: sent straight through, nothing spooled."""

    path: str  # relative to the sink's base_url


Plan = Spooled | Proxied
Builder = Callable[[re.Match[str], Mapping[str, str], Any], Spooled]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    build: Builder
    success: frozenset[int] | None = None  # the exact codes the vendor's SDK accepts; None for any 2xx
    needs_object: bool = True  # the body must be a JSON object


def route(
    method: str, pattern: str, build: Builder, success: frozenset[int] | None = None, needs_object: bool = True
) -> Route:
    return Route(method, re.compile(pattern + r"$"), build, success, needs_object)


def find_route(routes: Sequence[Route], method: str, path: str) -> tuple[Route, re.Match[str]] | None:
    for candidate in routes:
        match = candidate.pattern.match(path)
        if match is not None and candidate.method == method:
            return candidate, match
    return None


def normalize_path(path: str) -> str:
    """SDKs double or drop slashes depending on how the base URL was written; both mean the same call."""
    path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


def require(body: Any, name: str, check: Callable[[Any], bool], what: str) -> None:
    if not check(body.get(name)):
        raise BadInput(422, "invalid_body", f"{name} must be {what}", field=name)


class Adapter(Protocol):
    """One vendor, pure: routing on the way in, success rules and learnt ids on the way out."""

    type: str
    auth_header: str

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        """None when the path is not this vendor's; raises BadInput for a bad call to one of its routes."""
        ...

    def key_from(self, headers: Mapping[str, str]) -> str | None: ...

    def auth_value(self, key: str) -> str: ...

    def success(self, row: SpoolRow) -> frozenset[int] | None:
        """The exact codes the vendor's SDK accepts for this call; None for any 2xx."""
        ...

    def learn(self, row: SpoolRow, answer: Any) -> tuple[tuple[str, str], ...]: ...

    def placeholders(self, row: SpoolRow) -> Sequence[str]:
        """Ids in the row that shipper made up and the remote knows under another name."""
        ...

    def rewrite(self, row: SpoolRow, upstream: Mapping[str, str]) -> tuple[str, bytes | None]:
        """The row's path and query with placeholders replaced; KeyError names a required one never learnt."""
        ...


class ClientIds:
    """For vendors whose ids are all the client's: nothing to learn from answers, nothing to rewrite."""

    def learn(self, row: SpoolRow, answer: Any) -> tuple[tuple[str, str], ...]:
        return ()

    def placeholders(self, row: SpoolRow) -> Sequence[str]:
        return ()

    def rewrite(self, row: SpoolRow, upstream: Mapping[str, str]) -> tuple[str, bytes | None]:
        return row.path, row.query


def plan_routes(routes: Sequence[Route], method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
    found = find_route(routes, method, path)
    if found is None:
        return None
    chosen, match = found
    if chosen.needs_object and not isinstance(body, dict):
        raise BadInput(422, "invalid_body", f"{method} {path} needs a JSON object body", field="(body)")
    return chosen.build(match, query, body)


def success_for(routes: Sequence[Route], row: SpoolRow) -> frozenset[int] | None:
    found = find_route(routes, row.method, row.path)
    return None if found is None else found[0].success


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class VendorSink:
    """Delivers one spooled vendor call per request, with the app's key (or the sink's) and the vendor's rules."""

    def __init__(
        self,
        name: str,
        adapter: Adapter,
        config: VendorSinkConfig,
        lookups: Lookups,
        environ: Mapping[str, str],
        enricher: Enricher | None = None,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.config = config
        self.batching = Batching()
        self.concurrency = config.concurrency
        self.base_url = config.base_url
        self.override_key = config.override_key
        self.sink_key = read_secret(name, config.api_key_env, config.api_key_file, environ, "api_key")
        self.transport = HttpTransport(
            config.concurrency, config.timeout, KEEP_VENDOR_RESPONSE, config.ca_file, sink=name
        )
        # Proxied calls get their own connections: a slow read must never hold up deliveries, nor they a read.
        self.reads = HttpTransport(config.proxy_concurrency, config.timeout, ca_file=config.ca_file, sink=name)
        self._lookups = lookups
        self.enricher = enricher  # token counts and cost, filled in here: off the ingest path

    async def start(self) -> None:
        await self.transport.start()
        await self.reads.start()

    async def close(self) -> None:
        await self.transport.close()
        await self.reads.close()

    def key_for(self, app_key: str | None) -> str | None:
        """Which key a call from the app travels with: the sink's when it overrides, else the app's own."""
        if self.override_key and self.sink_key:
            return self.sink_key
        return app_key or self.sink_key

    def proxy_key(self, app_key: str | None) -> str | None:
        """Which key a proxied call travels with: the caller's own, unless the operator lets the sink's stand in."""
        return self.key_for(app_key) if self.config.proxy_sink_key else app_key

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        (row,) = rows
        stored = None if row.credential_id is None else await self._lookups.credential(row.credential_id)
        key = self.key_for(stored)
        if key is None:
            return Outcome(Verdict.REJECT, None, "no API key: the app sent none and the sink has none configured")
        upstream: dict[str, str] = {}
        for local in self.adapter.placeholders(row):
            found = await self._lookups.upstream_id(self.name, local)
            if found is not None:
                upstream[local] = found
        try:
            path, query = self.adapter.rewrite(row, upstream)
        except KeyError as missing:
            return Outcome(Verdict.REJECT, None, f"the remote never told shipper its id for {missing.args[0]}")
        headers = {self.adapter.auth_header: self.adapter.auth_value(key), "Content-Type": "application/json"}
        body = None if row.method == "DELETE" and row.body == b"null" else row.body
        if body is not None and self.enricher is not None:
            body = await self.enricher.enrich(self.adapter.type, row.method, row.path, body)
        request = OutRequest(row.method, self.base_url + path + render_query(query), headers, body)
        return await self.transport.send(
            request, lambda status, hdrs, answer: self.classify(row, status, hdrs, answer, key)
        )

    def classify(
        self, row: SpoolRow, status: int, headers: CIMultiDictProxy[str], answer: bytes, key: str | None = None
    ) -> Outcome:
        success = self.adapter.success(row)
        verdict = classify_status(status, success)
        if verdict is Verdict.DELIVERED:
            learned = self.adapter.learn(row, _json_or_none(answer)) if row.kind == "create" else ()
            return Outcome(verdict, status, learned=learned)
        if 200 <= status <= 299 and success is not None:
            expected = ", ".join(str(code) for code in sorted(success))
            return Outcome(verdict, status, f"HTTP {status} where the vendor's SDK requires {expected}")
        detail = failure_detail(status, answer, (key,))
        retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
        # Whose key a 401/403 refused decides the row's fate: the sink's is the operator's to fix, the app's a replay's.
        return Outcome(verdict, status, detail, retry_after, app_key=key is not None and key != self.sink_key)


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
