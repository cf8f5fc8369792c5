"""Timing every ingest request: its duration by route and status, and its acknowledgement latency.

The edge (edge.py), first thing, notes when a request arrived (its headers read) and, once it is answered, feeds
`shipper_ingest_request_duration_seconds`; `commit` notes when the request's rows were committed, which feeds
`shipper_ingest_ack_latency_seconds`; the drop-in handler names the vendor that took the call. The route label is
a route template, `dropin:<vendor>` or `other`: never the raw path, which a client could vary without end.
Not responsible for the histograms themselves (metrics.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from shipper.ingest.keys import TIMERS_KEY

# The drop-in catch-all (routes.py); a call it handles is labelled by vendor, anything else it answers is `other`.
CATCH_ALL = "/{tail}"


@dataclass(slots=True)
class Timing:
    arrived: float
    route: str | None = None
    committed: float | None = None


# A request's own state is copied when it is cloned (the token check does), so handlers write into one
# shared object rather than into the request: what they note is seen whichever copy they were handed.
_KEY: web.RequestKey[Timing] = web.RequestKey("shipper.timing", Timing)


def _timing(request: web.Request) -> Timing | None:
    return request.get(_KEY)


def note_route(request: web.Request, label: str) -> None:
    """Label the request for the duration histogram (a bounded name such as `dropin:freeplay`)."""
    timing = _timing(request)
    if timing is not None:
        timing.route = label


def note_committed(request: web.Request) -> None:
    """The request's rows are committed: from now on, it is only the answer that is left to send."""
    timing = _timing(request)
    if timing is not None:
        timing.committed = time.monotonic()


def _route_label(request: web.Request, timing: Timing) -> str:
    if timing.route is not None:
        return timing.route
    resource = request.match_info.route.resource
    if resource is None or resource.canonical == CATCH_ALL:
        return "other"
    return resource.canonical


def begin(request: web.Request) -> Timing:
    """Start timing the request: first thing at the edge, so that every answer is timed, refusals included."""
    timing = request[_KEY] = Timing(time.monotonic())
    return timing


def observe(request: web.Request, timing: Timing, status: int) -> None:
    """The request is answered with `status`: feed its duration and, if its rows were committed, its ack latency."""
    timers = request.app[TIMERS_KEY]
    timers.observe_request(_route_label(request, timing), status, time.monotonic() - timing.arrived)
    if timing.committed is not None:
        timers.observe_ack(timing.committed - timing.arrived)
