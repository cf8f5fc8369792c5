"""Wiring and lifecycle: open the spool, start sinks and forwarders, serve ingest, reload, shut down gracefully.

Signal handlers only set events. Shutdown order matters: stop intake first (handlers already committing finish),
then stop leasing, let in-flight sends finish within `drain_timeout`, hand back what did not, close the spool.
SIGHUP reloads sinks, limits and the log level; a bad new configuration is refused and the old one stays. A
forwarder that dies unexpectedly stops the whole daemon rather than leaving a silent half.
Not responsible for argument parsing (cli.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from shipper.config import Config, SinkConfig, load_config
from shipper.errors import ConfigError
from shipper.forward.forwarder import Forwarder
from shipper.ingest.keys import Routing
from shipper.ingest.routes import build_app
from shipper.ingest.server import IngestServer
from shipper.logs import Throttled
from shipper.metrics import IngestCounters, Metrics, SpoolMonitor
from shipper.notify import Notifier
from shipper.sinks import Sink, VendorSink, build_sink
from shipper.spool import Spool
from shipper.spool.bounds import Bounds

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Running:
    """One sink as the daemon runs it: the sink, its forwarder and the forwarder's task."""

    config: SinkConfig
    sink: Sink
    forwarder: Forwarder
    task: asyncio.Task[None]


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.stop_event = asyncio.Event()
        self.stopping = False
        self.failed = False
        self.counters = IngestCounters()
        self.running: dict[str, Running] = {}
        self.routing = Routing(frozenset(config.sinks))
        self.monitor = SpoolMonitor(config.spool.path, lambda: self.forwarders)
        self.metrics = Metrics(self.counters, lambda: self.forwarders, self.monitor)
        self._reload_lock = asyncio.Lock()
        self._drop_log = Throttled(log)
        self._spool: Spool | None = None
        self.notifier = Notifier()

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise RuntimeError("the spool is not open")
        return self._spool

    @property
    def forwarders(self) -> list[Forwarder]:
        return [r.forwarder for r in self.running.values()]

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_notified()))
        spool_config = self.config.spool
        async with AsyncExitStack() as stack:
            stack.callback(self.notifier.close)
            # Pinged from this loop for the daemon's whole life, the drain included: a stalled loop gets restarted.
            await stack.enter_async_context(self.notifier.watchdog_running())
            bounds = Bounds(spool_config.max_bytes, spool_config.max_rows, spool_config.when_full, self._dropped)
            self._spool = await Spool.open(
                spool_config.path, spool_config.durability, spool_config.lease_timeout, bounds
            )
            if self.spool.recovered_from is not None:
                self.counters.spool_recoveries += 1
            stack.push_async_callback(self.spool.close)
            stack.push_async_callback(self._close_sinks)
            for name, sink_config in self.config.sinks.items():
                await self._start_sink(name, sink_config, build_sink(name, sink_config, os.environ, self.spool))
            monitor = asyncio.create_task(self.monitor.run(), name="spool-monitor")
            stack.push_async_callback(_cancel, monitor)
            app = build_app(self, self.routing, self.counters, self.config.ingest)
            server = IngestServer(app, self.config.ingest, self.config.daemon.drain_timeout)
            await server.start()
            log.info("shipper started", extra={"listen": server.addresses, "sinks": list(self.config.sinks)})
            # Only now: the spool is open and every listener accepts, so systemd may start what depends on us.
            self.notifier.ready()
            async with self.notifier.status_running(self.monitor.summary):
                await self.stop_event.wait()
            self.notifier.stopping(status="stopping: intake closed, draining in-flight sends")
            await self._shutdown(server)
        return 1 if self.failed else 0

    async def _start_sink(self, name: str, config: SinkConfig, sink: Sink) -> None:
        await sink.start()
        forwarder = Forwarder(self.spool, sink, config, observe=self.metrics.observer(name))
        task = asyncio.create_task(forwarder.run(), name=f"forward-{name}")
        task.add_done_callback(self._side_task_done)
        self.running[name] = Running(config, sink, forwarder, task)
        self._publish_routing()

    async def _stop_sink(self, name: str, drain_timeout: float | None) -> int:
        running = self.running.pop(name)
        self._publish_routing()
        running.forwarder.stop()
        await running.task
        abandoned = await running.forwarder.drain(drain_timeout)
        await running.sink.close()
        return abandoned

    def _publish_routing(self) -> None:
        self.routing.vendors = {n: r.sink for n, r in self.running.items() if isinstance(r.sink, VendorSink)}

    async def _close_sinks(self) -> None:
        for running in self.running.values():
            await running.sink.close()

    def _dropped(self, counts: Counter[str]) -> None:
        """Rows dropped to stay within the spool's bounds (when_full = drop_oldest): counted, logged at an interval."""
        for sink, count in counts.items():
            self.counters.dropped[(sink, "spool_full")] += count
        self._drop_log.warning("spool full: dropped the oldest rows to make room (%s)", dict(counts))

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s died; stopping", task.get_name(), exc_info=task.exception())
            self.failed = True
            self.stop_event.set()

    async def _reload_notified(self) -> None:
        """SIGHUP: tell systemd a reload is under way (`systemctl reload` then waits for READY=1)."""
        self.notifier.reloading()
        try:
            await self.reload()
        finally:
            self.notifier.ready()

    async def reload(self) -> None:
        """Apply a changed configuration file: sinks, limits and log level; listeners and spool need a restart."""
        async with self._reload_lock:
            try:
                new = load_config(self.config_path)
                if new.ingest != self.config.ingest or new.spool != self.config.spool:
                    raise ConfigError("[ingest] and [spool] changes need a restart")
                built = {
                    name: build_sink(name, sink, os.environ, self.spool)
                    for name, sink in new.sinks.items()
                    if self.config.sinks.get(name) != sink
                }
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                return
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            removed = [name for name in self.config.sinks if name not in new.sinks or name in built]
            self.routing.sinks = frozenset(new.sinks)
            for name in removed:
                # No deadline: cancelling a send here would mean sending it again, so let it finish.
                await self._stop_sink(name, None)
            for name, sink in built.items():
                await self._start_sink(name, new.sinks[name], sink)
            self.config = new
            log.info("configuration reloaded", extra={"restarted_sinks": sorted(built), "removed": removed})

    async def _shutdown(self, server: IngestServer) -> None:
        self.stopping = True
        started = time.monotonic()
        deadline = started + self.config.daemon.drain_timeout
        log.info("shutting down: intake stopped, draining in-flight sends")
        await server.stop()
        totals = {name: running.forwarder.counters for name, running in self.running.items()}
        for running in self.running.values():
            running.forwarder.stop()
        abandoned = 0
        for name in list(self.running):
            abandoned += await self._stop_sink(name, max(0.0, deadline - time.monotonic()))
        log.info(
            "shipper stopped after %.2fs; %d in-flight row(s) handed back to the spool",
            time.monotonic() - started,
            abandoned,
            extra={"sinks": {name: asdict(counters) for name, counters in totals.items()}},
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(config: Config, config_path: Path | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; uvloop when installed (a faster loop for the same code)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(Daemon(config, config_path).run())
    return uvloop.run(Daemon(config, config_path).run())
