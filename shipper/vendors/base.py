"""What every vendor module shares: the Adapter protocol, the route table and the routing plan.

An adapter is pure data plus pure functions, everything shipper knows of one vendor: which drop-in paths it serves,
what row each call becomes (key, scope, after, the ids it mints and the answer the SDK needs), which status codes
mean success, which ids a create's answer teaches, and of a row as it is sent (sent.py) where marks, token counts and
cost go and which fields redaction must never touch. The vendor modules use only these helpers, so every path is
written in one regex style (`ID` for an id segment). Not responsible for HTTP serving (ingest/dropin.py), delivery
(sinks/vendor.py) or retries (the forwarder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from shipper.config.sinks import VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.records import BadInput, NewRow
from shipper.vendors.llm import LlmCall, Request, Step
from shipper.vendors.sent import Sent

# Ids that arrive as path segments: uuids and vendor ids, nothing that could alter a URL.
ID = r"([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})"
_ID = re.compile(ID)
_SLASHES = re.compile(r"/{2,}")


class Spooled(NamedTuple):
    """A drop-in call that becomes one spool row, answered at once with `status` and `answer`.

    A NamedTuple, as NewRow is: one is built per drop-in call, and a frozen dataclass's `__init__` cost 1.6 µs."""

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
            raise BadInput("unencodable", f"the body cannot be stored as JSON: {exc}") from None
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


def collapse_slashes(path: str) -> str:
    """SDKs double slashes depending on how the base URL was written."""
    return _SLASHES.sub("/", path) if "//" in path else path  # the test first: a fifth of the substitution's cost


def is_id(value: Any) -> bool:
    """Whether a client's value may serve as an id: a string of the characters `ID` allows in a path segment."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def uuid4_text() -> str:
    """A random (version 4) UUID as text, what `str(uuid.uuid4())` gives, in half its time (no UUID object)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def normalize_path(path: str) -> str:
    """SDKs double or drop slashes depending on how the base URL was written; both mean the same call."""
    return collapse_slashes(path).rstrip("/") or "/"


def require(body: Any, name: str, check: Callable[[Any], bool], what: str) -> None:
    if not check(body.get(name)):
        raise BadInput("invalid_body", f"{name} must be {what}", field=name)


class Adapter(Protocol):
    """One vendor, pure: routing on the way in, success rules and learnt ids on the way out."""

    type: str  # the sink `type` in the config, and the vendor's key in the registry
    auth_header: str
    routes: Sequence[Route]  # the drop-in calls that become rows (any other of its paths is proxied or not its own)
    outbound: Sequence[Sent]  # the rows as they are forwarded: where marks, usage and cost go
    protected: frozenset[str]  # top-level body fields that route the record: redaction never touches them

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        """None when the path is not this vendor's; raises BadInput for a bad call to one of its routes."""
        ...

    def key_from(self, headers: Mapping[str, str]) -> str | None: ...

    def from_call(self, call: LlmCall, sink: VendorSinkConfig) -> Request:
        """The drop-in call that records an LLM call read from a span (shipper/otlp/): planned like the SDK's own."""
        ...

    def from_step(self, step: Step, sink: VendorSinkConfig) -> Request:
        """The drop-in call that records a tool call or agent run read from a span, with its parent links."""
        ...

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
        raise BadInput("invalid_body", f"{method} {path} needs a JSON object body", field="(body)")
    return chosen.build(match, query, body)


def success_for(routes: Sequence[Route], row: SpoolRow) -> frozenset[int] | None:
    found = find_route(routes, row.method, row.path)
    return None if found is None else found[0].success


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
