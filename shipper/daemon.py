"""Wiring and lifecycle: open the spool, start sinks and forwarders, serve ingest, reload, shut down gracefully.

Signal handlers only set events. Shutdown order matters: refuse new records first (503 `stopping`; `/readyz` turns
503 while `/healthz` stays 200), let requests already committing finish, stop leasing, let in-flight sends finish
within `drain_timeout`, hand back what did not, and only then close the listeners and the spool. SIGHUP reloads
sinks, limits and the log level; a bad new configuration is refused and the old one stays. A forwarder that dies
unexpectedly stops the whole daemon rather than leaving a silent half. Not responsible for argument parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict
from pathlib import Path

import orjson
from aiohttp import web

from shipper.admin import AdminServer
from shipper.config import Config, load_config
from shipper.config.listeners import IngestConfig
from shipper.enrich.collector import EnrichCollector
from shipper.enrich.redact import Redactor
from shipper.enrich.usage import Enricher
from shipper.errors import ConfigError
from shipper.forward.fleet import Fleet
from shipper.forward.forwarder import Forwarder
from shipper.ingest.activation import Listeners, inherited_listeners
from shipper.ingest.counters import IngestCounters
from shipper.ingest.guard import IN_FLIGHT_KEY, InFlight
from shipper.ingest.otlp import build_otlp_app, otlp_server
from shipper.ingest.routes import build_app
from shipper.ingest.server import IngestServer
from shipper.latency import IngestTimers
from shipper.logs import Throttled
from shipper.metrics import Metrics, RelayCollector, SpoolLimitsCollector, SpoolMonitor
from shipper.notify import Notifier
from shipper.ops.routes import add_routes
from shipper.queue.base import Source
from shipper.queue.jetstream.queue import StreamQueue
from shipper.roles import Role, deliveries_done, open_relay, open_spool, serve_control
from shipper.sinks import build_sink, start_sinks
from shipper.sinks.bundling import bundle_limits
from shipper.sinks.routing import Routing
from shipper.spool import Spool
from shipper.spool.bounds import Bounds
from shipper.stopping import closing_time, queued, say_stopped
from shipper.tasks import stop

log = logging.getLogger(__name__)

# Sections a reload cannot apply to a running daemon: listeners, the spool file, and what ingest does to records.
RESTART_SECTIONS = ("ingest", "admin", "otlp", "spool", "redact", "enrich", "relay")


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        log_level: str | None = None,
        role: Role = Role.ALL,
        supervision: tuple[int, Listeners] | None = None,
    ) -> None:
        """`role`: what this process does (roles.py); `supervision`: the pid of the supervisor that started it and
        the sockets it bound for it."""
        self.role = role
        self.supervisor = supervision[0] if supervision else None
        self.gathers = role is Role.INGEST  # answers the operations routes for its delivery peers too
        # Under a supervisor, its lines are the shipper's start and stop lines; a role's own go to debug.
        self._telling = logging.INFO if role is Role.ALL else logging.DEBUG
        self._telling_error = logging.ERROR if role is Role.ALL else logging.DEBUG
        self._listeners = supervision[1] if supervision else None
        self.config = config
        self.config_path = config_path
        self.log_level = log_level  # the command line's --log-level outlives reloads
        self.stop_event = asyncio.Event()
        self.started_at = time.monotonic()  # for the uptime in the stop line
        self.stopping = False
        self.failed = False
        self.counters = IngestCounters()
        self.routing = Routing(frozenset(config.sinks), bundles=bundle_limits(config.sinks))
        self.monitor = SpoolMonitor(config.spool.path, lambda: self.forwarders)
        self.metrics = Metrics(self.counters, lambda: self.forwarders, self.monitor)
        self.redactor = Redactor(config.redact)  # [redact]: applied in ingest, before the spool append
        self.enricher = Enricher(config.enrich)  # [enrich]: applied by vendor sinks, just before sending
        self.metrics.registry.register(EnrichCollector(self.enricher.counters, self.redactor.counters))
        spool = config.spool  # a restart section: these bounds hold for the process's life
        self.metrics.registry.register(SpoolLimitsCollector(spool.path, spool.max_bytes, spool.max_rows))
        self.notifier = Notifier()
        self._reload_lock = asyncio.Lock()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._drop_log = Throttled(log)
        self._spool: Spool | None = None
        self._source: Source | None = None  # where the forwarders lease: the spool, or a relay's stream
        self._relay: StreamQueue | None = None
        self._fleet: Fleet | None = None
        self._otlp: IngestServer | None = None  # the OTLP receiver, when [otlp] http is set

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise RuntimeError("the spool is not open")
        return self._spool

    @property
    def source(self) -> Source:
        return self._source if self._source is not None else self.spool

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("no sink is running")
        return self._fleet

    @property
    def timers(self) -> IngestTimers:
        return self.metrics.ingest

    @property
    def ingest_config(self) -> IngestConfig:
        return self.config.ingest

    @property
    def forwarders(self) -> list[Forwarder]:
        return self._fleet.forwarders if self._fleet is not None else []

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        async with AsyncExitStack() as stack:
            stack.callback(self.notifier.close)
            # Pinged from this loop for the daemon's whole life, the drain included: a stalled loop gets restarted.
            await stack.enter_async_context(self.notifier.watchdog_running())
            await self._open_spool(stack)
            await self._start_fleet(stack)
            monitor = asyncio.create_task(self.monitor.run(), name="spool-monitor")
            stack.push_async_callback(stop, monitor)
            if self.role.serves:
                server, app = await self._serve(stack)
                in_flight = app[IN_FLIGHT_KEY]
            elif self.role is Role.RELAY:
                server, in_flight = None, InFlight()
                await self._serve_relay(stack)
            else:
                server, in_flight = None, InFlight()
                await serve_control(self, self.spool.owner, stack)
            # Only now: the spool is open and every listener accepts, so systemd may start what depends on us.
            self.notifier.ready()
            async with self.notifier.status_running(self.monitor.summary):
                await self.stop_event.wait()
            self.notifier.stopping(status="stopping: refusing new records, draining in-flight sends")
            await self._shutdown(server, in_flight)
        return 1 if self.failed else 0

    async def _start_fleet(self, stack: AsyncExitStack) -> None:
        """Every configured sink started (or none, and a ConfigError naming it), each with its forwarder."""
        if self.role is Role.RELAY:
            self._relay = await open_relay(self.config, self.spool, stack)
            self._source = self._relay
            self.metrics.registry.register(RelayCollector(self._relay))
        self._fleet = Fleet(self.source, self.metrics, self.routing, self._side_task_done, deliver=self.role.delivers)
        stack.push_async_callback(self.fleet.close_all)
        sinks = {
            name: build_sink(name, c, os.environ, self.source, self.enricher, self.spool.path)
            for name, c in self.config.sinks.items()
        }
        await start_sinks(sinks)
        for name, sink in sinks.items():
            await self.fleet.start(name, self.config.sinks[name], sink)

    async def _serve(self, stack: AsyncExitStack) -> tuple[IngestServer, web.Application]:
        """Ingest, then the admin listener (the stack stops it right after ingest); one line says what serves."""
        operations = functools.partial(add_routes, live=self)
        app = build_app(self, self.routing, self.counters, self.config.ingest, self.redactor, operations)
        # The supervisor's sockets, or (alone) the service manager's: read once, for every listener.
        listeners = self._listeners if self._listeners is not None else inherited_listeners()
        server = IngestServer(app, self.config.ingest, listeners)
        await server.start()
        stack.push_async_callback(server.stop)
        if self.config.otlp.http or self.config.otlp.unix or listeners.otlp:
            await self._serve_otlp(app[IN_FLIGHT_KEY], listeners.otlp, stack)
        admin = AdminServer(self, self.config.admin, listeners.admin)
        stack.push_async_callback(admin.stop)
        await admin.start()
        log.log(
            self._telling,
            "shipper started",
            extra={
                "listen": server.addresses,
                "admin": admin.addresses,
                "otlp": self._otlp.addresses if self._otlp else [],
                "sinks": list(self.config.sinks),
                "config": str(self.config_path or "built-in defaults"),
            },
        )
        return server, app

    async def _serve_relay(self, stack: AsyncExitStack) -> None:
        """A relay serves the admin listener alone (metrics, probes, status): nothing is written to it."""
        listeners = self._listeners if self._listeners is not None else inherited_listeners()
        admin = AdminServer(self, self.config.admin, listeners.admin)
        stack.push_async_callback(admin.stop)
        await admin.start()
        relay = self.config.relay
        assert relay is not None  # open_relay refused to start without it
        log.info(
            "shipper relay started",
            extra={
                "admin": admin.addresses,
                "stream": relay.stream,
                "partitions": relay.partitions,
                "sinks": list(self.config.sinks),
                "config": str(self.config_path or "built-in defaults"),
            },
        )

    async def _serve_otlp(
        self, in_flight: InFlight, inherited: tuple[socket.socket, ...], stack: AsyncExitStack
    ) -> None:
        """The OTLP receiver, beside ingest and sharing its requests in flight (so the drain waits for both)."""
        config = self.config
        if not config.otlp.route:  # a socket named otlp was passed, but nothing says where spans go
            raise ConfigError("otlp.route: empty, yet an otlp listener was inherited: name the sinks spans go to")
        app = build_otlp_app(self, self.routing, self.counters, config.ingest, config.otlp, self.redactor, in_flight)
        self._otlp = otlp_server(app, config.ingest, config.otlp, inherited)
        await self._otlp.start()
        stack.push_async_callback(self._otlp.stop)

    async def _open_spool(self, stack: AsyncExitStack) -> None:
        spool = self.config.spool
        bounds = Bounds(spool.max_bytes, spool.max_rows, spool.when_full, self._dropped)
        self._spool = await open_spool(self.role, self.supervisor is not None, spool, bounds, self._spool_died, stack)
        if self._spool.recovered_from is not None:
            self.counters.spool_recoveries += 1

    def _dropped(self, counts: Counter[str]) -> None:
        """Rows dropped to stay within the spool's bounds (when_full = drop_oldest): counted, logged at an interval."""
        for sink, count in counts.items():
            self.counters.dropped[(sink, "spool_full")] += count
        self._drop_log.warning("spool full: dropped the oldest rows to make room (%s)", dict(counts))

    def _spool_died(self, exc: BaseException) -> None:
        """Nothing can be acknowledged any more: stop with a failure, so the supervisor starts a fresh process."""
        log.error("the spool writer died; stopping so the supervisor restarts shipper")
        self.failed = True
        self.stop_event.set()

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s died; stopping", task.get_name(), exc_info=task.exception())
            self.failed = True
            self.stop_event.set()

    def _on_sighup(self) -> None:
        """A reload runs as a side task: kept, and watched like every other (one that dies stops the daemon)."""
        task = asyncio.create_task(self._reload_notified(), name="reload")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        task.add_done_callback(self._side_task_done)

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
            if self.stopping:
                return
            try:
                new = load_config(self.config_path)
                changed = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(self.config, name)]
                if changed:
                    raise ConfigError(f"changes to [{'], ['.join(changed)}] need a restart")
                # A sink whose key the remote refuses is rebuilt even if unchanged: its key file may hold a fixed key.
                refused = {f.sink.name for f in self.forwarders if f.backoff.auth_failed}
                built = {
                    name: build_sink(name, sink, os.environ, self.source, self.enricher, self.spool.path)
                    for name, sink in new.sinks.items()
                    if self.config.sinks.get(name) != sink or name in refused
                }
                await start_sinks(built)  # before anything changes: a sink that cannot start refuses the reload
            except ConfigError as exc:
                log.log(self._telling_error, "reload refused, the running configuration stays: %s", exc)
                self._report(X_SHIPPER_RELOAD={"refused": str(exc)})
                return
            gone = [name for name in self.config.sinks if name not in new.sinks]
            for name, sink in built.items():
                await self.fleet.replace(name, new.sinks[name], sink)
            for name in gone:
                await self.fleet.remove(name)
            # Only now that the new sinks run: the routes and the configuration the daemon reports.
            self.routing.sinks = frozenset(new.sinks)
            if self._relay is not None:
                self._relay.configure(new.sinks)
            self.routing.bundles = bundle_limits(new.sinks)
            self.config = new
            logging.getLogger().setLevel((self.log_level or new.daemon.log_level).upper())
            outcome = {"restarted_sinks": sorted(built), "removed": gone}
            log.log(self._telling, "configuration reloaded", extra=outcome)
            self._report(X_SHIPPER_RELOAD=outcome)

    async def _shutdown(self, server: IngestServer | None, in_flight: InFlight) -> None:
        """Within `drain_timeout` in all: requests already in flight and sends already out finish side by side until
        the deadline; then the listeners close, cutting any request still open (a client trickling its body gets a
        closed connection, never a hang) within the slice of the budget kept back for that."""
        self.stopping = True
        started = time.monotonic()
        budget = self.config.daemon.drain_timeout
        # A role keeps one more slice: its own exit and the supervisor's last line are inside the budget too.
        deadline = started + budget - closing_time(budget) * (1 if self.role is Role.ALL else 2)
        log.log(self._telling, "shutting down: refusing new records, draining in-flight sends")
        _, abandoned = await asyncio.gather(_until_idle(in_flight, deadline), self.fleet.stop_all(deadline))
        if self.role is Role.INGEST:
            await deliveries_done(self.config.spool.path, deadline)
        if server is not None:
            await server.stop(closing_time(budget) / 2)  # aiohttp may wait twice: for handlers, then for their cancel
        if self._otlp is not None:
            await self._otlp.stop(closing_time(budget) / 2)
        uptime, drained = time.monotonic() - self.started_at, time.monotonic() - started
        waiting = await asyncio.to_thread(queued, self.config)
        sinks = {name: asdict(counters) for name, counters in self.fleet.counters.items()}
        say_stopped(log, self._telling, uptime, drained, abandoned, waiting, sinks)
        self._report(
            X_SHIPPER_STOPPED={"abandoned": abandoned, "sinks": {n: asdict(c) for n, c in self.fleet.counters.items()}}
        )

    def _report(self, **fields: object) -> None:
        """Under a supervisor: what it needs for the shipper's own lines (one per reload, one at the stop)."""
        if self.role is not Role.ALL:
            self.notifier.send(**{key: orjson.dumps(value).decode() for key, value in fields.items()})


async def _until_idle(in_flight: InFlight, deadline: float) -> None:
    if in_flight.count:  # requests already committing get their answer
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_flight.idle.wait(), max(0.0, deadline - time.monotonic()))


def run(
    config: Config,
    config_path: Path | None = None,
    log_level: str | None = None,
    role: Role = Role.ALL,
    supervision: tuple[int, Listeners] | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; uvloop when installed (a faster loop for the same code)."""
    daemon = Daemon(config, config_path, log_level, role, supervision)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(daemon.run())
    return uvloop.run(daemon.run())
