"""Operations routes: liveness, readiness, Prometheus metrics and the live status `shipper status` merges in.

`/healthz` says the process can acknowledge (its spool writer lives); `/readyz` says a record sent now would be
taken: sinks run, the spool takes a transaction, and the disk has room. A full disk turns it 503 from the first
append refused for want of space until an append commits again or the filesystem has room for a request of
`max_body_bytes`, so readiness agrees with the 507 ingest answers meanwhile. It also turns 503 once shutdown begins,
so a load balancer stops sending. Not responsible for gathering numbers (metrics.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shipper.config.listeners import IngestConfig
from shipper.errors import SpoolError
from shipper.forward.forwarder import Forwarder
from shipper.ingest.responses import error_response, json_response
from shipper.metrics import Metrics, SpoolMonitor
from shipper.ops.gather import ask_all, merge_metrics, merge_status
from shipper.queue.base import Queue


class Live(Protocol):
    """The running daemon as the operations routes see it."""

    monitor: SpoolMonitor
    metrics: Metrics
    stopping: bool
    gathers: bool  # answers for the delivery processes beside it (ops/gather.py)
    supervisor: int | None  # the supervisor's pid, when one started this process: the shipper's pid to the outside

    @property
    def spool(self) -> Queue: ...

    @property
    def forwarders(self) -> Sequence[Forwarder]: ...

    @property
    def ingest_config(self) -> IngestConfig: ...


LIVE_KEY: web.AppKey[Live] = web.AppKey("live")


async def healthz(request: web.Request) -> web.Response:
    """Alive means able to acknowledge: a dead spool writer fails liveness, so the process gets restarted."""
    failure = request.app[LIVE_KEY].spool.failure
    if failure is not None:
        return error_response(503, "spool_failed", f"the spool writer died: {failure!r}")
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    live = request.app[LIVE_KEY]
    if live.stopping:
        return error_response(503, "stopping", "shipper is shutting down")
    sinks = [f.sink.name for f in live.forwarders]
    if live.gathers:
        answers = await ask_all(live.spool.path, "/readyz")
        if not answers or any(a is None or a[0] != 200 for a in answers.values()):
            return error_response(503, "no_sinks", "no delivery process is ready")
        sinks = sorted({name for a in answers.values() if a is not None for name in orjson.loads(a[1])["sinks"]})
    elif not sinks:
        return error_response(503, "no_sinks", "no sink is running")
    try:
        await live.spool.ping()
    except SpoolError as exc:
        return error_response(503, "spool_unwritable", str(exc))
    full = live.spool.disk_full
    if full is not None and shutil.disk_usage(live.spool.path.parent).free < live.ingest_config.max_body_bytes:
        return error_response(503, "insufficient_storage", str(full))
    return json_response({"status": "ready", "sinks": sinks})


async def metrics(request: web.Request) -> web.Response:
    live = request.app[LIVE_KEY]
    body = generate_latest(live.metrics.registry)
    if live.gathers:
        answers = await ask_all(live.spool.path, "/metrics")
        texts = [a[1].decode() for a in answers.values() if a is not None and a[0] == 200]
        body = merge_metrics([body.decode(), *texts])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def status(request: web.Request) -> web.Response:
    """What only the running daemon knows: in flight, rates, remote state, last error."""
    live = request.app[LIVE_KEY]
    now = time.time()
    sinks: dict[str, Any] = {}
    for f in live.forwarders:
        name = f.sink.name
        sinks[name] = {
            "state": f.backoff.state(now),
            "in_flight": f.in_flight,
            "concurrency_limit": f.concurrency_limit,
            "delivered_per_minute": live.monitor.delivered_per_minute(name),
            "retrying_since": f.backoff.failing_since,
            "last_error": f.last_error,
            "last_error_at": f.last_error_at,
            # Since this process started; the spool's own totals (queued, dead_lettered) are the status command's.
            "delivered_since_start": f.counters.delivered,
            "redelivered_since_start": f.counters.redelivered,
            "retried_since_start": f.counters.retried,
            "dead_lettered_since_start": f.counters.dead_lettered,
            "auth_failures_since_start": f.counters.auth_failures,
        }
    # The spool it uses, absolute: `shipper status` run with another config (or none) still reads the right file.
    own = {"pid": live.supervisor or os.getpid(), "spool": str(live.spool.path.resolve()), "sinks": sinks}
    if live.gathers:
        own = merge_status(own, await ask_all(live.spool.path, "/v1/status"))
    return json_response(own)


def add_routes(app: web.Application, live: Live) -> None:
    app[LIVE_KEY] = live
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
