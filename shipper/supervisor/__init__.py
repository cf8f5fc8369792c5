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
import signal
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from shipper.config import Config, load_config
from shipper.errors import ConfigError
from shipper.ingest.activation import Listeners, inherited_listeners
from shipper.ingest.binding import bind_listeners
from shipper.notify import Notifier
from shipper.spool.claim import RECOVERED_ENV, Claim
from shipper.spool.wakes import Waker
from shipper.supervisor import lines
from shipper.supervisor.child import ROLE_PING, Child, role_env
from shipper.supervisor.inbox import Inbox

log = logging.getLogger(__name__)

RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# A role alive this long after a restart counts as healthy again: the next death restarts it at once.
HEALTHY_AFTER = 60.0
# What a role may take beyond `drain_timeout` to exit before it is killed.
EXIT_MARGIN = 2.0
# A role silent this long is hung (stopped, or its loop stuck), maybe holding the spool's write lock: it is killed,
# and started again like any role that died.
HUNG_AFTER = 15.0


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
        self._inbox: Inbox | None = None
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
                self._inbox = Inbox()
                loop.add_reader(self._inbox.fileno(), self._read_inbox)
                code = await self._serve(started)
        finally:
            self._claim.release()
            if self._inbox is not None:
                loop.remove_reader(self._inbox.fileno())
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
        lines.started(self.config, self._config_path, self._listeners, self._children)
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        hangs = asyncio.create_task(self._kill_hung(), name="hung-roles")
        await self._stop.wait()
        watchdog.cancel()
        hangs.cancel()
        self._notifier.stopping(status="stopping: refusing new records, draining in-flight sends")
        log.info("shutting down: refusing new records, draining in-flight sends")
        drain_started = time.monotonic()
        await self._stop_all(drain_started + self.config.daemon.drain_timeout)
        lines.stopped(self.config, self._children, time.monotonic() - started, time.monotonic() - drain_started)
        return self._failed or 0

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A side task (watching a role, a reload), kept and watched: one that fails stops the shipper."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._side_task_done)

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed; stopping", task.get_name(), exc_info=task.exception())
            self._failed = 1
            self._stop.set()

    async def _start(self, child: Child) -> None:
        assert self._inbox is not None
        fds = self._fds if child.role == "ingest" else {}
        env = role_env(os.environ, self._inbox.address, fds)
        if self._claim is not None and self._claim.recovered_from is not None and child.role == "ingest":
            # Counted once, by the first ingest process (shipper_spool_recoveries_total).
            env[RECOVERED_ENV] = str(self._claim.recovered_from)
            self._claim.recovered_from = None
        passed = [fd for numbers in fds.values() for fd in numbers]
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shipper", "run", "--role", child.role, *self._argv, env=env, pass_fds=passed
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
        """sd_notify datagrams from the roles, told apart by the sender's pid."""
        assert self._inbox is not None
        for pid, fields in self._inbox.messages():
            child = next((c for c in self._children if c.pid == pid), None)
            if child is None:
                continue
            child.heard(fields)
            if "STATUS" in fields and child.role == "delivery":  # queue depth and remote state: the deliveries'
                self._notifier.status(fields["STATUS"])

    async def _kill_hung(self) -> None:
        while True:
            await asyncio.sleep(ROLE_PING)
            now = time.monotonic()
            for child in self._children:
                process = child.process
                if process is None or process.returncode is not None or not child.readies:
                    continue
                if now - child.pinged > HUNG_AFTER:
                    log.error("the %s process (pid %d) stopped answering; killing it", child.role, process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    child.pinged = now  # once: its death is `_watch`'s to handle

    async def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval
        if interval is None:
            return
        while True:
            now = time.monotonic()
            if all(c.alive(now) for c in self._children):
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
        if any(c.process is not None and c.process.returncode != 0 for c in self._children):
            await self._give_back_leases()  # one was killed holding leases; the others handed theirs back

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


def run_supervisor(
    config: Config, config_path: Path | None, log_level: str | None, argv: list[str], workers: tuple[int, int]
) -> int:
    supervisor = Supervisor(config, config_path, log_level, argv, workers)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(supervisor.run())
    return uvloop.run(supervisor.run())
