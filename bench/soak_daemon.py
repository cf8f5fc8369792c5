"""The daemon under soak: its configuration, and `shipper run` as a subprocess that the soak stops gracefully
(SIGTERM), kills (`kill -9`) and starts again on the same spool, with its peak RSS and the spool's size sampled.

The daemon runs in its own session, so a Ctrl-C at the terminal reaches only the harness, which then stops it; and
it is asked to die with the harness (PR_SET_PDEATHSIG) should the harness itself be killed. Not responsible for load,
faults or the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
FP_PROJECT = "5a0c0000-0000-4000-8000-000000000001"
FP_KEY = "soak-freeplay-key"
# The sinks' per-request timeout; the remote's slow answers take longer (soak_remote.SLOW_DELAY).
SINK_TIMEOUT = 2.0


def config_text(workdir: Path, http_port: int, remote_url: str) -> str:
    sink = f"timeout = {SINK_TIMEOUT}\nretry_initial_backoff = 0.2\nretry_max_backoff = 5.0\nconcurrency = 16\n"
    return f"""# Written by bench/soak.py.
[daemon]
drain_timeout = 3.0

[ingest]
http = "127.0.0.1:{http_port}"
unix = "{workdir / "shipper.sock"}"

[spool]
path = "{workdir / "spool.db"}"
durability = "fsync"

[sinks.remote]
type = "http"
base_url = "{remote_url}/http"
batch = false
{sink}
[sinks.fp]
type = "freeplay"
base_url = "{remote_url}/fp/api"
{sink}"""


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the harness goes away (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class SoakDaemon:
    workdir: Path
    http_port: int
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int = 0
    peak_spool_bytes: int = 0
    starts: int = 0
    graceful_stops: int = 0
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    bad_exit_codes: list[int] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "shipper.toml"

    @property
    def spool(self) -> Path:
        return self.workdir / "spool.db"

    @property
    def unix(self) -> Path:
        return self.workdir / "shipper.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "shipper.log"

    @property
    def tcp_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "shipper", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the harness itself starts no threads that could hold a lock
            )

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        self.proc = self._spawn()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shipper exited with {self.proc.returncode} at start; see {self.log}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{self.tcp_base}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"shipper did not become healthy within {timeout:g}s; see {self.log}")
            await asyncio.sleep(0.05)

    def sample(self) -> None:
        """Peak RSS of this incarnation (VmHWM) and the spool's size on disk, folded into the maxima."""
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_kib = max(self.peak_rss_kib, vm_hwm_kib(self.proc.pid))
        size = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.spool}{suffix}").st_size
        self.peak_spool_bytes = max(self.peak_spool_bytes, size)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful: SIGTERM, then wait (kill -9 after `timeout`). Returns the exit status."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        self.sample()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.graceful_stops += 1
        self.proc = None
        if proc.returncode != 0:
            self.bad_exit_codes.append(proc.returncode)
        return proc.returncode

    def kill9(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.sample()
        proc.kill()
        proc.wait()
        self.proc = None
        self.kills += 1

    def check_alive(self) -> bool:
        """False (and the exit noted) when the daemon died on its own."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(self.proc.returncode)
            self.proc = None
            return False
        return True

    def force_stop(self) -> None:
        """For cleanup, synchronous: SIGTERM, a short wait, then kill -9."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Read the spool the way an operator would: read-only, safe beside the running daemon."""
        if not self.spool.exists():
            return []
        conn = sqlite3.connect(f"file:{self.spool}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def queued(self) -> int:
        try:
            rows = self.query("SELECT count(*) FROM rows")
        except sqlite3.OperationalError:
            return -1
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
