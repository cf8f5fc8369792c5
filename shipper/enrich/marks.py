"""Where a forwarded record says what shipper did to it: the `shipper_redacted` / `shipper_estimated` marks.

A vendor record is marked in the field its vendor module's `outbound` table names for that row (its own metadata:
see each module's docstring); a record of a row the table does not list is not marked. A generic record (file and
http sinks) gets top-level `_shipper_redacted` when its body is a JSON object. Updates never gain a metadata field
they did not send: a PATCH with `metadata` may replace the stored one whole. Values are comma-separated strings
(some vendors' custom metadata takes only strings, numbers and booleans). Not responsible for what is marked
(redact.py, usage.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shipper.vendors import outbound

GENERIC_PREFIX = "_shipper_"
VENDOR_PREFIX = "shipper_"


def metadata_targets(vendor: str | None, method: str, path: str, body: Any) -> list[dict[str, Any]]:
    """The dicts the record's marks go into (created on creates when absent); [] when it has none."""
    if not isinstance(body, dict):
        return []
    if vendor is None:
        return [body]
    found = outbound(vendor, method, path)
    return [] if found is None else found.marks(body)


def mark(vendor: str | None, method: str, path: str, body: Any, what: str, items: Iterable[str]) -> bool:
    """Record `shipper_<what> = "a,b"` (merged with what is there); False when the record has nowhere to say it."""
    targets = metadata_targets(vendor, method, path, body)
    key = (GENERIC_PREFIX if vendor is None else VENDOR_PREFIX) + what
    for target in targets:
        before = target.get(key)
        known = before.split(",") if isinstance(before, str) and before else []
        target[key] = ",".join(sorted(set(known) | set(items)))
    return bool(targets)
