"""`python -m bench.soak` (`make soak`): a deployment's bad day, pressed into minutes, then an audit of every record.

For SOAK_SECONDS (default 600) the soak runs shipper as a subprocess on a spool in a temporary directory, forwarding
to a local remote (bench/soak_remote.py, its own process) through an `http` sink in replay mode and a `freeplay`
sink, and mixes, all at once:
- steady load: a few hundred records a second, NDJSON over the Unix socket and over TCP, keyed and unkeyed, plus
  Freeplay drop-in completions and their feedback;
- bursts: thousands of records in about a second;
- remote faults on a schedule: 503 storms, 429 with Retry-After, connection resets, answers slower than the sink's
  timeout, the remote not listening at all; and, throughout, 1 record in 40 refused for good with 400 (chosen by a
  field in its body);
- daemon restarts, alternately graceful (SIGTERM) and `kill -9`, every ~60 s (SOAK_SECONDS / 10, 10 s to 60 s).
Then it stops the load, lets the spool drain (bounded), and prints what was acknowledged, delivered, duplicated,
lost (must be 0) and dead-lettered (must be exactly what the remote refused on purpose), per-key order, the daemon's
peak RSS and the spool's peak size. Exit status 1 when a check fails, 130 when interrupted.

Everything listens on 127.0.0.1 or a Unix socket. SOAK_DIR chooses where the temporary directory is made (default
the repository's var/: a real disk, since fsync on tmpfs costs nothing); SOAK_KEEP=1 keeps it afterwards.
Subprocesses and the directory are cleaned up on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp

from bench.soak_daemon import REPO, SoakDaemon, config_text
from bench.soak_load import Ledger, burst, freeplay, pause, steady
from bench.soak_remote import (
    ANSWERED_429,
    ANSWERED_503,
    DOWN,
    MODE_NAMES,
    NORMAL,
    RESET,
    RESETS,
    SLOW,
    SLOWED,
    STORM,
    TAKEN,
    THROTTLE,
    RemoteProcess,
    free_port,
)
from bench.soak_report import Facts, judge

STEADY_RATE = 150.0  # records/s per native client (two of them: Unix socket and TCP)
FREEPLAY_RATE = 8.0  # completions/s
BURST_RECORDS = 4000
# One pass through every fault, as fractions of a cycle; each fault is followed by calm, so the backlog drains.
CYCLE = ((0.00, NORMAL), (0.10, STORM), (0.22, NORMAL), (0.30, THROTTLE), (0.42, NORMAL), (0.50, RESETS),
         (0.62, NORMAL), (0.70, SLOW), (0.80, NORMAL), (0.85, DOWN), (0.95, NORMAL))  # fmt: skip


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass
class Plan:
    seconds: float
    restart_every: float = field(init=False)
    burst_every: float = field(init=False)
    cycle: float = field(init=False)
    drain_limit: float = field(init=False)

    def __post_init__(self) -> None:
        self.restart_every = clamp(self.seconds / 10, 10, 60)
        self.burst_every = clamp(self.seconds / 8, 10, 75)
        self.cycle = clamp(self.seconds / 3, 25, 200)
        self.drain_limit = clamp(self.seconds / 4, 60, 300)


@dataclass
class Run:
    plan: Plan
    daemon: SoakDaemon
    remote: RemoteProcess
    ledger: Ledger = field(default_factory=Ledger)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    restarting: bool = False
    t0: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


async def restarts(run: Run, session: aiohttp.ClientSession) -> None:
    """SIGTERM and kill -9 in turn; a restart once begun always completes, so the daemon is never left down."""
    number = 0
    while True:
        await pause(run.stop, run.plan.restart_every)
        if run.stop.is_set() or run.elapsed() > run.plan.seconds - run.plan.restart_every / 2:
            return
        run.restarting = True
        try:
            if number % 2 == 0:
                await run.daemon.stop()
            else:
                run.daemon.kill9()
            await run.daemon.start(session)
        finally:
            run.restarting = False
        number += 1


async def faults(run: Run) -> None:
    """The remote's mode, following CYCLE over and over; calm for the last 10 % of the load."""
    while not run.stop.is_set():
        position = (run.elapsed() % run.plan.cycle) / run.plan.cycle
        mode = [mode for start, mode in CYCLE if start <= position][-1]
        run.remote.mode = NORMAL if run.elapsed() > run.plan.seconds * 0.9 else mode
        await pause(run.stop, 0.1)


async def bursts(run: Run, targets: list[tuple[aiohttp.ClientSession, str]]) -> None:
    number = 0
    await pause(run.stop, run.plan.burst_every / 2)
    while not run.stop.is_set():
        number += 1
        await burst(targets, run.ledger, BURST_RECORDS, number)
        await pause(run.stop, run.plan.burst_every)


async def monitor(run: Run, session: aiohttp.ClientSession) -> None:
    """Sample RSS and spool size every second; restart a daemon that died on its own; a progress line every ~10 %."""
    every = clamp(run.plan.seconds / 10, 5, 60)
    next_line = every
    while not run.stop.is_set():
        run.daemon.sample()
        if not run.restarting and not run.daemon.check_alive():
            print(f"soak: shipper exited on its own at {run.elapsed():.0f}s; starting it again", file=sys.stderr)
            await run.daemon.start(session)
        if run.elapsed() >= next_line:
            next_line += every
            print(
                f"soak: {run.elapsed():5.0f}s  acknowledged {len(run.ledger.acked):>8}  taken by remote "
                f"{run.remote.counter(TAKEN):>8}  remote: {MODE_NAMES[run.remote.mode]:<18}  restarts "
                f"{run.daemon.graceful_stops + run.daemon.kills}",
                flush=True,
            )
        await pause(run.stop, 1.0)


async def drain(run: Run, session: aiohttp.ClientSession) -> tuple[bool, float, int]:
    """After the load: a healthy remote and a running daemon until the spool is empty, within the plan's bound."""
    run.remote.mode = NORMAL
    if not run.daemon.running():
        await run.daemon.start(session)
    started = time.monotonic()
    while (queued := run.daemon.queued()) != 0 and time.monotonic() - started < run.plan.drain_limit:
        run.daemon.sample()
        await asyncio.sleep(0.25)
    return queued == 0, time.monotonic() - started, queued


async def soak(run: Run) -> tuple[bool, float, int]:
    timeout = aiohttp.ClientTimeout(total=15)
    unix_connector = aiohttp.UnixConnector(path=str(run.daemon.unix))
    async with (
        aiohttp.ClientSession(timeout=timeout) as tcp,
        aiohttp.ClientSession(connector=unix_connector, timeout=timeout) as unix,
    ):
        await run.daemon.start(tcp)
        run.t0 = time.monotonic()
        tcp_url, unix_url = f"{run.daemon.tcp_base}/v1/records", "http://shipper/v1/records"
        targets = [(unix, unix_url), (tcp, tcp_url), (unix, unix_url), (tcp, tcp_url)]
        tasks = [
            asyncio.create_task(steady(unix, unix_url, run.ledger, STEADY_RATE, "unix", run.stop)),
            asyncio.create_task(steady(tcp, tcp_url, run.ledger, STEADY_RATE, "tcp", run.stop)),
            asyncio.create_task(freeplay(tcp, run.daemon.tcp_base, run.ledger, FREEPLAY_RATE, run.stop)),
            asyncio.create_task(bursts(run, targets)),
            asyncio.create_task(restarts(run, tcp)),
            asyncio.create_task(faults(run)),
            asyncio.create_task(monitor(run, tcp)),
        ]
        try:
            await pause(run.stop, run.plan.seconds)
            run.stop.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        print(f"soak: load stopped after {run.elapsed():.0f}s; draining the spool", flush=True)
        return await drain(run, tcp)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    plan = Plan(float(os.environ.get("SOAK_SECONDS", "600")))
    base = Path(os.environ.get("SOAK_DIR", REPO / "var"))
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-", dir=base))
    keep = os.environ.get("SOAK_KEEP") == "1"
    remote = RemoteProcess(workdir / "remote.log")
    daemon = SoakDaemon(workdir, free_port())
    signal.signal(signal.SIGTERM, _interrupted)
    print(
        f"soak: {plan.seconds:g}s in {workdir}; restarts every {plan.restart_every:g}s, bursts of {BURST_RECORDS} "
        f"every {plan.burst_every:g}s, fault cycle {plan.cycle:g}s",
        flush=True,
    )
    try:
        remote.start()
        daemon.config.write_text(config_text(workdir, daemon.http_port, remote.url))
        run = Run(plan, daemon, remote)
        drained, drain_seconds, queued = asyncio.run(soak(run))
        graceful, kills = daemon.graceful_stops, daemon.kills  # the final stop below is not a restart
        asyncio.run(daemon.stop())
        dead = [row[0] for row in daemon.query("SELECT body FROM dead_letters ORDER BY id")]
        remote.stop()
        facts = Facts(
            plan.seconds, run.ledger, remote.events(), dead, queued, drain_seconds, drained, daemon.peak_rss_kib,
            daemon.peak_spool_bytes, graceful, kills, daemon.unexpected_exits,
            daemon.bad_exit_codes,
            faults={
                "503": remote.counter(ANSWERED_503), "429": remote.counter(ANSWERED_429),
                "reset": remote.counter(RESET), "slow": remote.counter(SLOWED),
            },
            harness_cpu=sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        )  # fmt: skip
        verdict = judge(facts)
        print(verdict.text(), flush=True)
        if not verdict.passed:
            print(f"--- shipper log (tail) ---\n{_tail(daemon.log)}", file=sys.stderr)
        return 0 if verdict.passed else 1
    except KeyboardInterrupt:
        print("soak: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        daemon.force_stop()
        remote.stop()
        if keep:
            print(f"soak: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _tail(path: Path, size: int = 6000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:]
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
