"""Wiring and lifecycle: open the spool, start sinks and forwarders, serve ingest, and shut down gracefully.

Signal handlers only set the stop event. Shutdown order matters: stop intake first (handlers already committing
finish), then stop leasing, let in-flight sends finish within `drain_timeout`, hand back what did not, close the
spool. A forwarder that dies unexpectedly stops the whole daemon rather than leaving a silent half.
Not responsible for argument parsing (cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import asdict

from shipper.config import Config
from shipper.forward.forwarder import Forwarder
from shipper.ingest.routes import build_app
from shipper.ingest.server import IngestServer
from shipper.sinks import VendorSink, build_sink
from shipper.spool import Spool

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = asyncio.Event()
        self.forwarders: list[Forwarder] = []
        self.failed = False

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        async with AsyncExitStack() as stack:
            spool = await Spool.open(
                self.config.spool.path, self.config.spool.durability, self.config.spool.lease_timeout
            )
            stack.push_async_callback(spool.close)
            vendors: dict[str, VendorSink] = {}
            for name, sink_config in self.config.sinks.items():
                sink = build_sink(name, sink_config, os.environ, spool)
                await sink.start()
                stack.push_async_callback(sink.close)
                self.forwarders.append(Forwarder(spool, sink, sink_config))
                if isinstance(sink, VendorSink):
                    vendors[name] = sink
            tasks = [asyncio.create_task(f.run(), name=f"forward-{f.sink.name}") for f in self.forwarders]
            for task in tasks:
                task.add_done_callback(self._side_task_done)
            app = build_app(spool, self.config.sinks, self.config.ingest.max_body_bytes, vendors)
            server = IngestServer(app, self.config.ingest, self.config.daemon.drain_timeout)
            await server.start()
            log.info("shipper started", extra={"listen": server.addresses, "sinks": list(self.config.sinks)})
            await self.stop_event.wait()
            await self._shutdown(server, tasks)
        return 1 if self.failed else 0

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s died; stopping", task.get_name(), exc_info=task.exception())
            self.failed = True
            self.stop_event.set()

    async def _shutdown(self, server: IngestServer, tasks: list[asyncio.Task[None]]) -> None:
        started = time.monotonic()
        deadline = started + self.config.daemon.drain_timeout
        log.info("shutting down: intake stopped, draining in-flight sends")
        await server.stop()
        for forwarder in self.forwarders:
            forwarder.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        abandoned = 0
        for forwarder in self.forwarders:
            abandoned += await forwarder.drain(max(0.0, deadline - time.monotonic()))
        totals = {f.sink.name: asdict(f.counters) for f in self.forwarders}
        log.info(
            "shipper stopped after %.2fs; %d in-flight row(s) handed back to the spool",
            time.monotonic() - started,
            abandoned,
            extra={"sinks": totals},
        )


def run(config: Config) -> int:
    """Run the daemon until SIGTERM/SIGINT; uvloop when installed (a faster loop for the same code)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(Daemon(config).run())
    return uvloop.run(Daemon(config).run())
