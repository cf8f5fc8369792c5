"""Redaction before a record touches the disk: drop or mask fields by path, replace secrets found by pattern.

Applied to every row in `ingest.intake.commit`, before the spool append, so what the rules remove is never
written anywhere (spool, WAL, dead-letter table, sink). Order: `drop` paths, then `mask` paths, then the patterns
over every string value left (message contents, inputs, outputs, metadata…; object keys are not rewritten).
Paths are relative to the body that will be sent to the remote. A changed record lists the rules that fired in
its metadata (`shipper_redacted`, see marks.py; `_shipper_redacted` at the top of a generic record).

The hot path: a body the rules cannot touch is passed through as the same bytes, unparsed. The built-in patterns
and the paths' literal pieces are searched in the raw JSON text first (rules.py explains why that finds every
match); only a hit costs a parse, a walk and a re-serialisation. User patterns are matched on every record.

Ids that route a record are never touched (Freeplay `completion_id`/`parent_id`; Humanloop `path`, `id`, `log_id`,
`trace_parent_id`): rewriting them would break ordering and id mapping. Not responsible for the rule definitions
(rules.py) or where the mark goes (marks.py). The stored API key of a vendor call is not part of the body.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.config import RedactConfig
from shipper.enrich.marks import mark
from shipper.enrich.rules import BUILTIN, Matcher, PathRule, PatternRule, user_rule
from shipper.records import NewRow

PROTECTED: dict[str | None, frozenset[str]] = {
    "freeplay": frozenset({"completion_id", "parent_id"}),
    "humanloop": frozenset({"path", "id", "log_id", "trace_parent_id"}),
}
_NONE: frozenset[str] = frozenset()


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
        self._prefilter = all(rule.prefilter is not None for rule in self.patterns)

    @property
    def active(self) -> bool:
        return bool(self.patterns or self.drop or self.mask)

    def redact_rows(self, rows: list[NewRow], vendor_of: dict[str, str]) -> list[NewRow]:
        """Each row with its body redacted (`vendor_of`: sink name → vendor type, for the mark's field)."""
        if not self.active:
            return rows
        return [self.redact_row(row, vendor_of.get(row.sink)) for row in rows]

    def redact_row(self, row: NewRow, vendor: str | None) -> NewRow:
        body = self.redact_body(row.body, vendor, row.method, row.path)
        return row if body is row.body else dataclasses.replace(row, body=body)

    def redact_body(self, raw: bytes, vendor: str | None, method: str, path: str) -> bytes:
        """The same bytes object when nothing changed."""
        if not self.active or not self._may_match(raw):
            return raw
        body = orjson.loads(raw)
        fired = self.redact_value(body, vendor)
        if not fired:
            return raw
        if isinstance(body, dict) or vendor is not None:
            mark(vendor, method, path, body, "redacted", fired)
        self.counters.records += 1
        self.counters.rules.update(fired)
        return orjson.dumps(body)

    def redact_value(self, body: Any, vendor: str | None = None) -> set[str]:
        """Redact a decoded body in place; returns the names of the rules that changed something."""
        fired: set[str] = set()
        protected = PROTECTED.get(vendor, _NONE) if isinstance(body, dict) else _NONE
        for rule in self.drop:
            if _apply_path(body, rule.matchers, None, protected):
                fired.add("drop")
        for rule in self.mask:
            if _apply_path(body, rule.matchers, self.mask_with, protected):
                fired.add("mask")
        if self.patterns:
            self._scrub_container(body, fired, protected)
        return fired

    def _may_match(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace")
        if not self._prefilter or "\\u" in text or "\\/" in text:
            return True
        if any(rule.hits_raw(text) for rule in self.patterns):
            return True
        if self.drop or self.mask:
            lowered = text.lower()
            return any(rule.may_apply(lowered) for rule in (*self.drop, *self.mask))
        return False

    def _scrub(self, text: str, fired: set[str]) -> str:
        for rule in self.patterns:
            replaced = rule.sub(text)
            if replaced != text:
                fired.add(rule.name)
                text = replaced
        return text

    def _scrub_container(self, node: Any, fired: set[str], protected: frozenset[str] = _NONE) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in protected:
                    continue
                if isinstance(value, str):
                    node[key] = self._scrub(value, fired)
                elif isinstance(value, dict | list):
                    self._scrub_container(value, fired)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = self._scrub(value, fired)
                elif isinstance(value, dict | list):
                    self._scrub_container(value, fired)


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
