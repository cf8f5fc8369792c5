"""Which sinks exist and which vendor sinks serve drop-in paths: shared by the fleet (which fills it) and ingest
(which reads it on every request).

Mutable on purpose: a configuration reload swaps the sinks it names without restarting listeners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shipper.sinks.bundling import BundleLimit
from shipper.sinks.vendor import VendorSink


@dataclass(slots=True)
class Routing:
    sinks: frozenset[str]
    vendors: Mapping[str, VendorSink] = field(default_factory=dict)
    bundles: Mapping[str, BundleLimit] = field(default_factory=dict)  # sinks whose records may share a row
    # The vendor whose records each queue holds: a vendor sink's own, and the jetstream sink its calls go via.
    vendor_queues: Mapping[str, str] = field(default_factory=dict)

    def serve(self, vendors: Mapping[str, VendorSink]) -> None:
        """The vendor sinks whose drop-in paths are served from now on (a start or a reload)."""
        self.vendors = vendors
        self.vendor_queues = {q: sink.adapter.type for sink in vendors.values() for q in (sink.name, sink.spooled_as)}
