"""The supervisor: one shipper to the outside, ingest and delivery in processes of their own inside.

Python runs one interpreter per core, so using both cores means processes. The supervisor claims the spool (the
lock, migrations, the leases of dead processes given back: spool/claim.py), binds the ingest listeners once (or
takes systemd's, socket activation) and starts `ingest_workers` ingest and `delivery_workers` delivery processes,
each `shipper run --role ...` with the sockets inherited. Every role is an ordinary daemon that tells the supervisor
what it tells systemd (sd_notify on a private socket): the supervisor says READY=1 once every role is ready, pings
systemd's watchdog only while every role pings it, and passes SIGHUP on. A role that dies is started again; a dead
delivery process's leases are given back at once, not at their deadline. SIGTERM stops intake first (ingest roles),
then deliveries (delivery roles), within `drain_timeout`. Each role dies with the supervisor (PR_SET_PDEATHSIG),
so a `kill -9` of the supervisor is a `kill -9` of the shipper, recovered as always.
Not responsible for what a role does (daemon.py, roles.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipper.config import Config, load_config
from shipper.errors import ConfigError, SpoolError
from shipper.ingest.activation import Listeners, inherited_listeners
from shipper.ingest.binding import bind_listeners
from shipper.notify import Notifier
from shipper.roles import RECOVERED_ENV
from shipper.spool.claim import Claim
from shipper.spool.stats import queued_by_sink
from shipper.spool.wakes import Waker
from shipper.status import human_age

log = logging.getLogger(__name__)

# Roles ping the supervisor this often; one silent for three pings is hung, and systemd's watchdog is not fed.
ROLE_PING = 1.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# A role alive this long after a restart counts as healthy again: the next death restarts it at once.
HEALTHY_AFTER = 60.0
# What a role may take beyond `drain_timeout` to exit before it is killed.
EXIT_MARGIN = 2.0
LISTEN_ENV = "SHIPPER_LISTEN_FDS"
PARENT_ENV = "SHIPPER_SUPERVISOR_PID"


@dataclass(eq=False)
class Child:
    role: str
    process: asyncio.subprocess.Process | None = None
    readies: int = 0  # READY=1 messages since the start: a reload ends with one more
    pinged: float = 0.0
    started: float = 0.0
    deaths: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # What it reported (sd_notify fields of its own): its last reload's outcome, its stop summary.
    reload: dict[str, Any] | None = None
    stopped: dict[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        log_level: str | None,
        argv: list[str],
        workers: tuple[int, int],
    ) -> None:
        """`argv`: the `shipper run` options each role gets (config, log level and format)."""
        self.config = config
        self._log_level = log_level  # the command line's --log-level outlives reloads
        self._config_path = config_path
        self._argv = argv
        self._children = [Child("ingest") for _ in range(workers[0])] + [Child("delivery") for _ in range(workers[1])]
        self._stop = asyncio.Event()
        self._stopping = False
        self._failed: int | None = None
        self._notifier = Notifier()
        self._address = f"\0shipper-supervisor-{os.getpid()}-{secrets.token_hex(4)}"
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim: Claim | None = None
        self._listeners = Listeners()
        self._fds: dict[str, list[int]] = {}

    async def run(self) -> int:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn_task(self._reload(), "reload"))
        spool = self.config.spool
        self._claim = Claim.take(spool.path, spool.durability)
        try:
            bound = bind_listeners(self.config, inherited_listeners())
            with bound:
                self._listeners = bound.listeners
                self._fds = bound.fds
                self._inbox.bind(self._address)
                self._inbox.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                loop.add_reader(self._inbox.fileno(), self._read_inbox)
                code = await self._serve(started)
        finally:
            self._claim.release()
            self._inbox.close()
        return code

    async def _serve(self, started: float) -> int:
        # Deliveries first: once ingest accepts, whatever it acknowledges has a process to send it.
        for role in ("delivery", "ingest"):
            for child in self._of(role):
                await self._start(child)
            if not await self._all_ready(self._of(role)):
                await self._stop_all(time.monotonic() + self.config.daemon.drain_timeout)
                return self._failed or 0
        self._notifier.ready()
        listening = self._listeners
        log.info(
            "shipper started",
            extra={
                "listen": [_address(sock) for sock in (*listening.http, *listening.unix)],
                "admin": [_address(sock) for sock in listening.admin],
                "sinks": list(self.config.sinks),
                "config": str(self._config_path or "built-in defaults"),
                "roles": {c.role: sum(1 for d in self._children if d.role == c.role) for c in self._children},
            },
        )
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        await self._stop.wait()
        watchdog.cancel()
        self._notifier.stopping(status="stopping: refusing new records, draining in-flight sends")
        log.info("shutting down: refusing new records, draining in-flight sends")
        drain_started = time.monotonic()
        await self._stop_all(drain_started + self.config.daemon.drain_timeout)
        self._summary(time.monotonic() - started, time.monotonic() - drain_started)
        return self._failed or 0

    def _spawn_task(self, coro: object, name: str) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, child: Child) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = "@" + self._address[1:]
        env["WATCHDOG_USEC"] = str(int(ROLE_PING * 2 * 1_000_000))
        env[PARENT_ENV] = str(os.getpid())
        if self._claim is not None and self._claim.recovered_from is not None and child.role == "ingest":
            # Counted once, by the first ingest process (shipper_spool_recoveries_total).
            env[RECOVERED_ENV] = str(self._claim.recovered_from)
            self._claim.recovered_from = None
        env[LISTEN_ENV] = ""
        fds: list[int] = []
        if child.role == "ingest":
            env[LISTEN_ENV] = ",".join(f"{kind}={fd}" for kind, numbers in self._fds.items() for fd in numbers)
            fds = [fd for numbers in self._fds.values() for fd in numbers]
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shipper", "run", "--role", child.role, *self._argv, env=env, pass_fds=fds
        )
        child.started = child.pinged = time.monotonic()
        child.readies = 0
        self._spawn_task(self._watch(child, child.process), f"watch-{child.role}")

    async def _watch(self, child: Child, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        child.changed.set()
        if self._stopping or self._failed is not None:
            return
        if child.readies == 0 and code == 2:  # it could not start (a config error it named): so cannot we
            self._failed = code
            self._stop.set()
            return
        log.error("the %s process (pid %d) died (exit %s); starting another", child.role, process.pid, code)
        await self._give_back_leases()
        child.deaths = 0 if time.monotonic() - child.started > HEALTHY_AFTER else child.deaths + 1
        await asyncio.sleep(RESTART_DELAYS[min(child.deaths, len(RESTART_DELAYS) - 1)])
        if not self._stopping:
            await self._start(child)

    async def _give_back_leases(self) -> None:
        """A dead process's leases come back now; the delivery processes hear of it as of new rows."""
        spool = self.config.spool
        if self._claim is None:
            return
        given = await asyncio.to_thread(self._claim.reclaim, spool.path, spool.durability)
        if given:
            log.info("gave back %d row(s) leased by a dead process", given)
            waker = Waker(spool.path)
            waker.added(Counter(dict.fromkeys(self.config.sinks, 1)))
            await asyncio.sleep(0)
            waker.close()

    def _of(self, role: str) -> list[Child]:
        return [c for c in self._children if c.role == role]

    async def _all_ready(self, children: list[Child]) -> bool:
        """Each said READY=1; False if one exited first (then the shipper cannot start) or a stop was asked for."""
        while not all(c.readies for c in children):
            if self._failed is not None or self._stop.is_set():
                return False
            await self._changed(1.0)
        return True

    async def _changed(self, timeout: float) -> None:
        """Until some role says something or exits (or the stop is asked for), at most `timeout`."""
        waits = [asyncio.ensure_future(c.changed.wait()) for c in self._children]
        waits.append(asyncio.ensure_future(self._stop.wait()))
        for child in self._children:
            child.changed.clear()
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()

    def _read_inbox(self) -> None:
        """sd_notify datagrams from the roles, told apart by the sender's pid (SCM_CREDENTIALS)."""
        while True:
            try:
                data, ancillary, _, _ = self._inbox.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = next(
                (struct.unpack("3i", d[:12])[0] for lvl, kind, d in ancillary if kind == socket.SCM_CREDENTIALS), None
            )
            child = next((c for c in self._children if c.pid == pid), None)
            if child is None:
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            if fields.get("READY") == "1":
                child.readies += 1
            for name in ("reload", "stopped"):
                if f"X_SHIPPER_{name.upper()}" in fields:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        setattr(child, name, orjson.loads(fields[f"X_SHIPPER_{name.upper()}"]))
            if "STATUS" in fields and child.role == "delivery":  # queue depth and remote state: the deliveries'
                self._notifier.status(fields["STATUS"])
            if "WATCHDOG" in fields or "READY" in fields:
                child.pinged = time.monotonic()
            child.changed.set()

    async def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval
        if interval is None:
            return
        while True:
            now = time.monotonic()
            if all(c.readies and now - c.pinged < 3 * ROLE_PING for c in self._children):
                self._notifier.watchdog()
            await asyncio.sleep(min(interval, ROLE_PING))

    async def _reload(self) -> None:
        """SIGHUP to every role; READY=1 again once each has answered with its own READY=1 (reloaded or refused)."""
        self._notifier.reloading()
        before = {child: child.readies for child in self._children}
        for child in self._children:
            child.reload = None
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                child.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + self.config.daemon.drain_timeout + 10
        while (
            not self._stop.is_set()
            and time.monotonic() < deadline
            and any(c.readies <= before[c] for c in self._children)
        ):
            await self._changed(max(0.0, deadline - time.monotonic()))
        self._notifier.ready()
        reports = [c.reload for c in self._children if c.reload is not None]
        refused = next((r["refused"] for r in reports if "refused" in r), None)
        if refused is not None or not reports:
            log.error("reload refused, the running configuration stays: %s", refused or "no process answered")
            return
        with contextlib.suppress(ConfigError):
            self.config = load_config(self._config_path)
            logging.getLogger().setLevel((self._log_level or self.config.daemon.log_level).upper())
        delivering = next((c.reload for c in self._of("delivery") if c.reload is not None), reports[0])
        log.info("configuration reloaded", extra=delivering)

    async def _stop_all(self, deadline: float) -> None:
        """Intake first, so every acknowledged record is committed; then deliveries, finishing their sends."""
        self._stopping = True
        await self._stop_role(self._of("ingest") + self._of("delivery"), deadline)
        await self._give_back_leases()

    async def _stop_role(self, children: list[Child], deadline: float) -> None:
        """All at once, intake first: an ingest process refuses new records at once, answers its requests in
        flight, and keeps its listeners (answering 503) until the deliveries finished their sends (roles.py)."""
        running = [c.process for c in children if c.process is not None and c.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), max(0.1, deadline + EXIT_MARGIN - time.monotonic()))
            except TimeoutError:
                log.error("the process %d did not stop in time; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def _summary(self, uptime: float, drained: float) -> None:
        queued: dict[str, int] | None = None
        with contextlib.suppress(SpoolError):
            counts = queued_by_sink(self.config.spool.path)
            queued = {sink: counts.get(sink, 0) for sink in sorted({*self.config.sinks, *counts})}
        reports = [c.stopped for c in self._children if c.stopped is not None]
        sinks: dict[str, Counter[str]] = {}
        for report in reports:
            for name, counts in report.get("sinks", {}).items():
                sinks.setdefault(name, Counter()).update(counts)
        log.info(
            "shipper stopped after running %s (drain %.2fs); %d in-flight row(s) handed back to the spool;"
            " still queued: %s",
            human_age(uptime),
            drained,
            sum(int(r.get("abandoned", 0)) for r in reports),
            "unknown" if queued is None else ", ".join(f"{n} {c}" for n, c in sorted(queued.items())) or "nothing",
            extra={
                "uptime_seconds": round(uptime, 3),
                "drain_seconds": round(drained, 3),
                "queued": queued,
                "sinks": {name: dict(counts) for name, counts in sinks.items()},
            },
        )


def _address(sock: socket.socket) -> str:
    """As aiohttp names a site: http://host:port, or http://unix:PATH: for a Unix socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"http://unix:{name}:"
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"http://{host}:{name[1]}"


def run_supervisor(
    config: Config, config_path: Path | None, log_level: str | None, argv: list[str], workers: tuple[int, int]
) -> int:
    supervisor = Supervisor(config, config_path, log_level, argv, workers)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(supervisor.run())
    return uvloop.run(supervisor.run())


def supervised_listeners(environ: MutableMapping[str, str]) -> tuple[int, Listeners] | None:
    """In a role the supervisor started: its pid, and the listening sockets it passed (`kind=fd,...`); None when
    not started by a supervisor."""
    raw, parent = environ.pop(LISTEN_ENV, None), environ.pop(PARENT_ENV, None)
    if raw is None or parent is None or not parent.isdigit():
        return None
    found: dict[str, list[socket.socket]] = {"http": [], "unix": [], "admin": []}
    for item in filter(None, raw.split(",")):
        kind, _, fd = item.partition("=")
        found[kind].append(socket.socket(fileno=int(fd)))
    return int(parent), Listeners(http=tuple(found["http"]), unix=tuple(found["unix"]), admin=tuple(found["admin"]))


def die_with_parent(supervisor: int) -> None:
    """In a role: be killed when the supervisor dies (Linux), so no role outlives the shipper it belongs to."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # the supervisor died before the line above took effect
        os._exit(1)
