"""The vendors shipper speaks, one module each, registered here by their sink `type`.

Everything that names a vendor lives in its module (routes, success rules, ids, ordering keys, drop-in answers,
where marks, usage and cost go, which fields redaction protects); the rest of shipper reaches it only through
`VENDORS`. Adding a vendor is its module plus one line below (and its name in the config's sink `type`, which a
test holds equal to this registry).
"""

from __future__ import annotations

from collections.abc import Mapping

from shipper.vendors.base import Adapter
from shipper.vendors.freeplay import Freeplay
from shipper.vendors.humanloop import Humanloop
from shipper.vendors.keywordsai import KeywordsAI
from shipper.vendors.sent import Sent, find_sent


def _by_type(*adapters: Adapter) -> Mapping[str, Adapter]:
    return {adapter.type: adapter for adapter in adapters}


VENDORS: Mapping[str, Adapter] = _by_type(
    Freeplay(),
    Humanloop(),
    KeywordsAI(),
)


def outbound(vendor: str | None, method: str, path: str) -> Sent | None:
    """The vendor's entry for this forwarded row; None for a row it does not list, or for no vendor at all."""
    adapter = VENDORS.get(vendor or "")
    return None if adapter is None else find_sent(adapter.outbound, method, path)


__all__ = ["VENDORS", "Adapter", "outbound"]
