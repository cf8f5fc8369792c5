"""The delivering sink for every vendor: one spooled call per request, with the vendor's adapter's rules.

The adapter (shipper/vendors/) says what the row means: auth header, placeholders to rewrite, which codes are
success, which ids an answer teaches. This module does the I/O the same way for all of them: stored key lookup,
id rewriting through the queue's lookups, enrichment, the request and its classification; and an LLM span held for
the messages its logs carry becomes its record here, joined to the log records queued for it (shipper/otlp/join.py).
Not responsible for routing drop-in calls (the adapters) or retries (the forwarder).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from shipper.config.sinks import VendorSinkConfig
from shipper.core.retry import Outcome, Verdict, classify_status, parse_retry_after
from shipper.core.rows import SpoolRow
from shipper.enrich.usage import Enricher
from shipper.otlp import join
from shipper.queue.base import Lookups
from shipper.records import BadInput
from shipper.secrets import read_secret
from shipper.sinks.base import Batching, OutRequest, failure_detail
from shipper.sinks.http import render_query
from shipper.sinks.transport import HttpTransport
from shipper.vendors.base import Adapter

# A create's answer can be larger than an error's: keep enough to read the ids it assigns.
KEEP_VENDOR_RESPONSE = 64 * 1024


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
        self.sink_key = read_secret(f"sinks.{name}", config.api_key_env, config.api_key_file, environ, "api_key")
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

    @property
    def spooled_as(self) -> str:
        """The sink whose queue this vendor's calls are spooled in: its own, or the `jetstream` sink it goes via."""
        return self.config.via or self.name

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
        if row.kind == join.PART_KIND:  # handed out only once PART_KEEP passed with it still queued
            return Outcome(
                Verdict.REJECT, None, f"an orphan: no LLM span of this sink took it within {join.PART_KEEP:g}s"
            )
        consumed: tuple[int, ...] = ()
        if row.path == join.SPAN_PATH:
            try:
                row, consumed = await self._joined(row)
            except BadInput as exc:
                return Outcome(Verdict.REJECT, None, f"the span held for its logs cannot be recorded: {exc}")
        outcome = await self._send(row)
        if consumed and outcome.verdict is Verdict.DELIVERED:
            outcome = dataclasses.replace(outcome, consumed=consumed)
        return outcome

    async def _joined(self, row: SpoolRow) -> tuple[SpoolRow, tuple[int, ...]]:
        """A held span's row as the vendor record it becomes with the log records queued for it, and their ids."""
        held = join.read_held(row.body)
        parts = await self._lookups.keyed(self.name, held.key, join.PART_KIND)
        planned = join.plan_record(join.joined_call(held, [body for _, body in parts]), self.adapter, self.config)
        record = planned.row(self.name, None)
        joined = row._replace(method=record.method, path=record.path, query=record.query, body=record.body)
        return joined, tuple(part_id for part_id, _ in parts)

    async def _send(self, row: SpoolRow) -> Outcome:
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
