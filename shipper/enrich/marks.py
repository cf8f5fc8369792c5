"""Where a forwarded record says what shipper did to it: per vendor, the record's own metadata field.

| record                                   | field that gets `shipper_redacted` / `shipper_estimated`          |
|------------------------------------------|--------------------------------------------------------------------|
| Freeplay completion (create)             | `call_info.provider_info`: per call, free-form (session metadata    |
|                                          | would mark every completion of the session)                        |
| Freeplay trace (create)                  | `custom_metadata` (per trace)                                      |
| Freeplay trace update                    | `metadata`, only when the update carries one                       |
| Freeplay session / trace metadata PATCH  | the body itself (it is the metadata)                               |
| Humanloop prompt / flow / tool log       | `metadata`                                                         |
| Humanloop prompt / tool log update       | `metadata`, only when the update carries one                       |
| Keywords AI log create                   | `metadata`                                                         |
| Keywords AI update / batch update        | `metadata` (of each log), only when the update carries one        |
| generic record (file, http sinks)        | top-level `_shipper_redacted` when the body is a JSON object        |
Updates never gain a metadata field they did not send: a PATCH with `metadata` may replace the stored one whole.
Freeplay feedback and completion updates have no metadata field and carry no mark. Values are comma-separated
strings (Freeplay's custom metadata takes only strings, numbers and booleans).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

Locator = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _field(*names: str, create: bool = True) -> Locator:
    def locate(body: dict[str, Any]) -> list[dict[str, Any]]:
        target = body
        for name in names:
            value = target.get(name)
            if value is None and create:
                value = target[name] = {}
            if not isinstance(value, dict):
                return []
            target = value
        return [target]

    return locate


def _itself(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [body]


def _each_log(body: dict[str, Any]) -> list[dict[str, Any]]:
    logs = body.get("logs")
    if not isinstance(logs, list):
        return []
    return [log["metadata"] for log in logs if isinstance(log, dict) and isinstance(log.get("metadata"), dict)]


_P = r"/v2/projects/[^/]+"
ROUTES: dict[str, list[tuple[str, re.Pattern[str], Locator]]] = {
    "freeplay": [
        ("POST", re.compile(rf"{_P}/sessions/[^/]+/completions"), _field("call_info", "provider_info")),
        ("POST", re.compile(rf"{_P}/sessions/[^/]+/traces/id/[^/]+"), _field("custom_metadata")),
        ("PATCH", re.compile(rf"{_P}/sessions/[^/]+/traces/id/[^/]+"), _field("metadata", create=False)),
        ("PATCH", re.compile(rf"{_P}/sessions/id/[^/]+/metadata"), _itself),
        ("PATCH", re.compile(rf"{_P}/sessions/[^/]+/traces/id/[^/]+/metadata"), _itself),
    ],
    "humanloop": [
        ("POST", re.compile(r"/(?:prompts|flows|tools)/log"), _field("metadata")),
        ("PATCH", re.compile(r"/(?:prompts|tools)/[^/]+/log/[^/]+"), _field("metadata", create=False)),
    ],
    "keywordsai": [
        ("POST", re.compile(r"/api/request-logs/create/"), _field("metadata")),
        ("PATCH", re.compile(r"/api/request-logs/batch-update/"), _each_log),
        ("PATCH", re.compile(r"/api/request-logs/[^/]+/"), _field("metadata", create=False)),
    ],
}
GENERIC_PREFIX = "_shipper_"
VENDOR_PREFIX = "shipper_"


def metadata_targets(vendor: str | None, method: str, path: str, body: Any) -> list[dict[str, Any]]:
    """The dicts the record's marks go into (created on creates when absent); [] when it has none."""
    if not isinstance(body, dict):
        return []
    if vendor is None:
        return [body]
    for route_method, pattern, locate in ROUTES.get(vendor, ()):
        if route_method == method and pattern.fullmatch(path):
            return locate(body)
    return []


def mark(vendor: str | None, method: str, path: str, body: Any, what: str, items: Iterable[str]) -> bool:
    """Record `shipper_<what> = "a,b"` (merged with what is there); False when the record has nowhere to say it."""
    targets = metadata_targets(vendor, method, path, body)
    key = (GENERIC_PREFIX if vendor is None else VENDOR_PREFIX) + what
    for target in targets:
        before = target.get(key)
        known = before.split(",") if isinstance(before, str) and before else []
        target[key] = ",".join(sorted(set(known) | set(items)))
    return bool(targets)
