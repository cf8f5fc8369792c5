"""Redaction before a record touches the disk: drop or mask fields by path, replace secrets found by pattern.

Applied to every row in `ingest.intake.commit`, before the spool append, so what the rules remove is never
written anywhere (spool, WAL, dead-letter table, sink). Order: `drop` paths, then `mask` paths, then the patterns
over every string value left (message contents, inputs, outputs, metadata…; object keys are not rewritten).
Paths are relative to the body that will be sent to the remote. A changed record lists the rules that fired in
its metadata (`shipper_redacted`, see marks.py; `_shipper_redacted` at the top of a generic record).

The hot path: a body the rules cannot touch is passed through as the same bytes, unparsed. Each built-in's
necessary condition and each path's literal pieces are looked for in the raw JSON text first (core/redaction.py
explains why that never misses a match); only a hit costs a parse and a walk, with just the rules that hit, and only
a change costs a re-serialisation. User patterns have no such shortcut: with one configured, every record is parsed.

Ids that route a record are never touched (each vendor module's `protected` fields, at the top of the body):
rewriting them would break ordering and id mapping; nor are an OTLP export request's ids and int64s (_OTLP_WIRE),
which must still parse when an `otlp` sink sends it. Not responsible for the rule definitions (core/redaction.py),
where the mark goes (marks.py) or which ids a vendor protects (shipper/vendors/). The stored API key of a vendor call
is not part of the body.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.config.transform import RedactConfig
from shipper.core.redaction import BUILTIN, Matcher, PathRule, PatternRule, user_rule
from shipper.enrich.marks import mark
from shipper.records import BadInput, NewRow, json_words
from shipper.vendors import VENDORS

_NONE: frozenset[str] = frozenset()
# In an OTLP export request kept as OTLP/JSON (an `otlp` sink's row: top-level resourceSpans or resourceLogs), the
# fields that must still parse once the row is sent: ids in hex, and int64s written as decimal strings. A 19-digit
# timestamp that passes the Luhn check is a card number to the pattern; masked, the request no longer parsed and was
# dead-lettered. Never rewritten at any depth; the attribute values and bodies around them are redacted as ever.
_OTLP_WIRE = frozenset(
    {"traceId", "spanId", "parentSpanId", "timeUnixNano", "startTimeUnixNano", "endTimeUnixNano",
     "observedTimeUnixNano", "intValue"}
)  # fmt: skip
_OTLP_REQUESTS = ("resourceSpans", "resourceLogs")
_UNICODE_ESCAPE = re.compile(r"\\u")  # a compiled literal: sre's prefix search beats `in` for two characters


@dataclass(slots=True)
class RedactCounters:
    """For the metrics collector: records changed, and how often each rule fired (labels bounded by the config)."""

    records: int = 0
    rules: Counter[str] = field(default_factory=Counter)


class Redactor:
    def __init__(self, config: RedactConfig | None = None) -> None:
        self.counters = RedactCounters()
        self.reconfigure(config or RedactConfig())

    def reconfigure(self, config: RedactConfig) -> None:
        """New rules (a SIGHUP reload); synchronous, so a request on the event loop sees the old set or the new."""
        self.patterns: tuple[PatternRule, ...] = tuple(BUILTIN[name] for name in config.builtin) + tuple(
            user_rule(p.name, p.regex, p.replacement) for p in config.patterns
        )
        self.drop = tuple(PathRule.parse(path) for path in config.drop)
        self.mask = tuple(PathRule.parse(path) for path in config.mask)
        self.mask_with = config.mask_with
        self._needs_lower = bool(self.drop or self.mask) or any(rule.needs_lower for rule in self.patterns)

    @property
    def active(self) -> bool:
        return bool(self.patterns or self.drop or self.mask)

    def redact_rows(self, rows: list[NewRow], vendor_of: Mapping[str, str]) -> list[NewRow]:
        """Each row with its body redacted (`vendor_of`: sink name → vendor type, for the mark's field)."""
        if not self.active:
            return rows
        redacted = []
        for index, row in enumerate(rows):
            try:
                redacted.append(self.redact_row(row, vendor_of.get(row.sink)))
            except orjson.JSONDecodeError as exc:  # valid JSON text that maps to no values, such as 1e400
                raise BadInput(
                    "invalid_json", f"body cannot be read for redaction: {json_words(exc)}", index=index
                ) from None
        return redacted

    def redact_row(self, row: NewRow, vendor: str | None) -> NewRow:
        body = self.redact_body(row.body, vendor, row.method, row.path)
        return row if body is row.body else row._replace(body=body)

    def redact_body(self, raw: bytes, vendor: str | None, method: str, path: str) -> bytes:
        """The same bytes object when nothing changed."""
        if not self.active:
            return raw
        patterns, drop, mask = self._plan(raw)
        if not patterns and not drop and not mask:
            return raw
        body = orjson.loads(raw)
        fired = self._redact(body, vendor, patterns, drop, mask)
        if not fired:
            return raw
        mark(vendor, method, path, body, "redacted", fired)
        self.counters.records += 1
        self.counters.rules.update(fired)
        return orjson.dumps(body)

    def redact_value(self, body: Any, vendor: str | None = None) -> set[str]:
        """Redact a decoded body in place with every rule; returns the names of the rules that changed something."""
        return self._redact(body, vendor, self.patterns, self.drop, self.mask)

    def _plan(self, raw: bytes) -> tuple[tuple[PatternRule, ...], tuple[PathRule, ...], tuple[PathRule, ...]]:
        """The rules that might apply, by a necessary condition read off the raw text, so most bodies are never
        parsed and a parsed one meets only the rules that can touch it. A `\\u` escape could spell anything."""
        text = raw.decode("utf-8", "replace")
        if _UNICODE_ESCAPE.search(text) is not None:
            return self.patterns, self.drop, self.mask
        lowered = text.lower() if self._needs_lower else ""
        return (
            tuple(rule for rule in self.patterns if rule.might is None or rule.might(text, lowered)),
            tuple(rule for rule in self.drop if rule.may_apply(lowered)),
            tuple(rule for rule in self.mask if rule.may_apply(lowered)),
        )

    def _redact(
        self,
        body: Any,
        vendor: str | None,
        patterns: tuple[PatternRule, ...],
        drop: tuple[PathRule, ...],
        mask: tuple[PathRule, ...],
    ) -> set[str]:
        fired: set[str] = set()
        protected = _protected(vendor) if isinstance(body, dict) else _NONE
        for rule in drop:
            if _apply_path(body, rule.matchers, None, protected):
                fired.add("drop")
        for rule in mask:
            if _apply_path(body, rule.matchers, self.mask_with, protected):
                fired.add("mask")
        if patterns:
            _scrub_container(body, patterns, fired, protected, _wire(body, vendor))
        return fired


def _protected(vendor: str | None) -> frozenset[str]:
    adapter = VENDORS.get(vendor or "")
    return _NONE if adapter is None else adapter.protected


def _wire(body: Any, vendor: str | None) -> frozenset[str]:
    """The fields never rewritten at any depth: an OTLP export request's ids and int64s (see _OTLP_WIRE)."""
    if vendor is None and isinstance(body, dict) and any(name in body for name in _OTLP_REQUESTS):
        return _OTLP_WIRE
    return _NONE


def _scrub(text: str, patterns: tuple[PatternRule, ...], fired: set[str]) -> str:
    lowered: str | None = None
    for rule in patterns:
        if rule.might is not None:  # the same cheap test, per string: most strings skip the regex
            if rule.needs_lower and lowered is None:
                lowered = text.lower()
            if not rule.might(text, lowered or ""):
                continue
        replaced = rule.sub(text)
        if replaced != text:
            fired.add(rule.name)
            text = replaced
    return text


def _scrub_container(
    node: Any, patterns: tuple[PatternRule, ...], fired: set[str], protected: frozenset[str], everywhere: frozenset[str]
) -> None:
    """`protected`: keys skipped here (the top level); `everywhere`: keys skipped at every depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in protected or key in everywhere:
                continue
            if isinstance(value, str):
                node[key] = _scrub(value, patterns, fired)
            elif isinstance(value, dict | list):
                _scrub_container(value, patterns, fired, _NONE, everywhere)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                node[index] = _scrub(value, patterns, fired)
            elif isinstance(value, dict | list):
                _scrub_container(value, patterns, fired, _NONE, everywhere)


def _apply_path(
    node: Any, matchers: tuple[Matcher | None, ...], mask_with: str | None, protected: frozenset[str]
) -> bool:
    """Drop (mask_with None) or mask every field the path reaches; True when something changed."""
    first, rest = matchers[0], matchers[1:]
    if first is None:  # `**`: here, or at any depth below
        changed = _apply_path(node, rest, mask_with, protected)
        for child in _children(node):
            changed |= _apply_path(child, matchers, mask_with, _NONE)
        return changed
    keys = [key for key in _keys(node) if str(key) not in protected and first(str(key))]
    if not rest:
        for key in reversed(keys):  # reversed: deleting list items must not shift the ones still to go
            if mask_with is None:
                del node[key]
            else:
                node[key] = mask_with
        return bool(keys)
    changed = False
    for key in keys:
        changed |= _apply_path(node[key], rest, mask_with, _NONE)
    return changed


def _keys(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node)
    if isinstance(node, list):
        return list(range(len(node)))
    return []


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for v in node.values() if isinstance(v, dict | list)]
    if isinstance(node, list):
        return [v for v in node if isinstance(v, dict | list)]
    return []
