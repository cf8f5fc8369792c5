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
