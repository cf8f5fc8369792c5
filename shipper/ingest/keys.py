"""Typed keys for what the ingest application shares with the daemon; one place so modules don't import in circles.

`Routing` is mutable on purpose: a configuration reload swaps the sinks it names without restarting listeners.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from shipper.config import IngestConfig
from shipper.enrich.redact import Redactor
from shipper.forward.forwarder import Forwarder
from shipper.metrics import IngestCounters, Metrics, SpoolMonitor
from shipper.queue.base import Appender, Queue
from shipper.records import Limits
from shipper.sinks.vendor import VendorSink


@dataclass(slots=True)
class Routing:
    sinks: frozenset[str]
    vendors: Mapping[str, VendorSink] = field(default_factory=dict)


class Live(Protocol):
    """The running daemon as the operations routes see it."""

    monitor: SpoolMonitor
    metrics: Metrics
    stopping: bool

    @property
    def spool(self) -> Queue: ...

    @property
    def forwarders(self) -> Sequence[Forwarder]: ...


SPOOL_KEY: web.AppKey[Appender] = web.AppKey("spool")
INGEST_KEY = web.AppKey("ingest", IngestConfig)
LIMITS_KEY = web.AppKey("limits", Limits)
ROUTING_KEY = web.AppKey("routing", Routing)
COUNTERS_KEY = web.AppKey("counters", IngestCounters)
LIVE_KEY: web.AppKey[Live] = web.AppKey("live")
REDACTOR_KEY = web.AppKey("redactor", Redactor)
