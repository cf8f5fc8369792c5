"""Typed keys for what the ingest application shares with the daemon; one place so modules don't import in circles.

Ingest sees the daemon only through the small protocols here (never the forwarders, metrics or operations routes).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from shipper.config.listeners import IngestConfig
from shipper.enrich.redact import Redactor
from shipper.ingest.counters import IngestCounters
from shipper.queue.base import Appender
from shipper.records import Limits
from shipper.sinks.routing import Routing


class Draining(Protocol):
    """What ingest needs to know of the daemon's lifecycle: whether shutdown began (then new work gets 503)."""

    stopping: bool


class Timers(Protocol):
    """Where ingest reports how long requests and acknowledgements take (metrics.py implements it)."""

    def observe_request(self, route: str, status: int, seconds: float) -> None: ...

    def observe_ack(self, seconds: float) -> None: ...


class Intake(Draining, Protocol):
    """The running daemon as the ingest application sees it: where rows go, where timings go, and the drain."""

    @property
    def spool(self) -> Appender: ...

    @property
    def timers(self) -> Timers: ...


SPOOL_KEY: web.AppKey[Appender] = web.AppKey("spool")
INGEST_KEY = web.AppKey("ingest", IngestConfig)
LIMITS_KEY = web.AppKey("limits", Limits)
ROUTING_KEY = web.AppKey("routing", Routing)
COUNTERS_KEY = web.AppKey("counters", IngestCounters)
DRAINING_KEY: web.AppKey[Draining] = web.AppKey("draining")
TIMERS_KEY: web.AppKey[Timers] = web.AppKey("timers")
REDACTOR_KEY = web.AppKey("redactor", Redactor)


def share_intake(
    app: web.Application,
    live: Intake,
    routing: Routing,
    counters: IngestCounters,
    config: IngestConfig,
    redactor: Redactor,
) -> None:
    """Put on `app` what the edge and the commit path read from every application that takes records (the native
    and drop-in routes, the OTLP receiver): the spool, the drain, the timers, the sinks, the counters, the limits."""
    app[REDACTOR_KEY] = redactor
    app[SPOOL_KEY] = live.spool
    app[DRAINING_KEY] = live
    app[TIMERS_KEY] = live.timers
    app[ROUTING_KEY] = routing
    app[COUNTERS_KEY] = counters
    app[INGEST_KEY] = config
