"""`shipper run` as a real subprocess in a scratch directory, and its peak RSS from /proc.

Sink set-ups: `batch` and `replay` forward to the fake remote; `down` points at a port nobody listens on and backs
off for an hour after the first refusal, so ingest runs with the forwarder idle (what an outage looks like);
`vendors` is one sink per vendor (bench/vendors.py), forwarding to the fake remote with enrichment on (token counting
may be turned off: `tokens`); `freeplay` is the Freeplay sink alone (the vendor path: one request per record, replay
mode); `otlp` is the OTLP receiver on a port of its own, routed to one sink per vendor, each down as `down` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench import vendors
from bench.remote import free_port
from bench.wire import connect, get

REPO = Path(__file__).resolve().parent.parent
# The spool must sit on the disk a real deployment would use (not tmpfs, where fsync is free): the repo's var/.
SCRATCH = REPO / "var" / "bench"

_SINKS = {
    "batch": 'batch = true\nbatch_timeout = 0.1\nbase_url = "{url}"',
    "replay": 'batch = false\nbase_url = "{url}"',
    "down": 'batch = true\nbatch_timeout = 0.1\nbase_url = "http://127.0.0.1:{dead}"\n'
    "retry_initial_backoff = 3600\nretry_max_backoff = 3600",
}
BACKING_OFF = "retry_initial_backoff = 3600\nretry_max_backoff = 3600\n"


def config_text(
    workdir: Path,
    http_port: int,
    durability: str,
    sink: str,
    remote_url: str,
    tokens: bool = True,
    workers: tuple[int, int] | None = None,
    otlp_port: int = 0,
) -> str:
    """`tokens`: `[enrich] tokens`, token counting for the vendor sinks (on, as by default, or off); `workers`:
    `[daemon] ingest_workers` and `delivery_workers` (None: "auto", the default); `otlp_port`: the OTLP receiver's,
    for the `otlp` set-up."""
    processes = "" if workers is None else f"ingest_workers = {workers[0]}\ndelivery_workers = {workers[1]}\n"
    if sink == "vendors":
        sinks = vendors.sinks_toml(workdir, remote_url)
    elif sink == "freeplay":
        sinks = vendors.sinks_toml(workdir, remote_url, ("freeplay",))
    elif sink == "otlp":
        dead = f"http://127.0.0.1:{free_port()}"
        route = ", ".join(f'"{vendor}"' for vendor in vendors.VENDORS)
        sinks = f'[otlp]\nhttp = "127.0.0.1:{otlp_port}"\nroute = [{route}]\n\n'
        sinks += vendors.sinks_toml(workdir, dead, extra=BACKING_OFF)
    else:
        sinks = '[sinks.remote]\ntype = "http"\n' + _SINKS[sink].format(url=remote_url, dead=free_port()) + "\n"
    return f"""[daemon]
drain_timeout = 5
log_level = "warning"
{processes}
[ingest]
http = "127.0.0.1:{http_port}"
unix = "{workdir / "shipper.sock"}"

[spool]
path = "{workdir / "spool.db"}"
durability = "{durability}"

[enrich]
tokens = {"true" if tokens else "false"}

{sinks}"""


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    http: str
    unix: str
    log: Path
    otlp: str = ""  # host:port of the OTLP receiver, in the `otlp` set-up

    @property
    def pid(self) -> int:
        return self.proc.pid

    def family(self) -> list[int]:
        """The daemon's process and its children: the supervisor's ingest and delivery processes, if it has any."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *(int(child) for child in children)]

    def peak_rss_mb(self) -> float:
        """VmHWM of every process of the daemon, added up: the most resident memory each has ever had."""
        return sum(self.peak_rss_by_process().values())

    def peak_rss_by_process(self) -> dict[str, float]:
        """VmHWM per process, named by its role (`supervisor` for a daemon with children, else `daemon`)."""
        family = self.family()
        return {_role(pid, len(family)): _status_mb(pid, "VmHWM:") for pid in family}

    def rss_mb(self) -> float:
        """VmRSS of every process, added up: what they hold now, past the peaks of building things (an encoding)."""
        return sum(_status_mb(pid, "VmRSS:") for pid in self.family())

    def pss_mb(self) -> float:
        """Proportional set size of every process, added up, now: resident memory with each shared page (the
        interpreter, the C extensions and libraries the processes all map) counted once in all, not once in each
        as VmRSS counts it. What the processes hold together, at the time of asking."""
        total = 0
        for pid in self.family():
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        return total / 1024

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc status")


def _role(pid: int, processes: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"--role" in args:
        return f"{args[args.index(b'--role') + 1].decode()}-{pid}"
    return "supervisor" if processes > 1 else "daemon"


async def _wait_healthy(daemon: Daemon, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"shipper exited with {daemon.proc.returncode}:\n{daemon.log_tail()}")
        with contextlib.suppress(OSError):
            client = await connect(daemon.http)
            try:
                status, _ = await asyncio.wait_for(client.request(get("/healthz")), 2)
            finally:
                client.close()
            if status == 200:
                return
        if loop.time() > deadline:
            raise RuntimeError(f"shipper did not become healthy:\n{daemon.log_tail()}")
        await asyncio.sleep(0.05)


async def _stop(daemon: Daemon) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        for _ in range(300):
            if daemon.proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        daemon.proc.kill()
        daemon.proc.wait()


@contextlib.asynccontextmanager
async def running(
    durability: str,
    sink: str,
    remote_url: str,
    src: Path = REPO,
    profile: Path | None = None,
    tokens: bool = True,
    workers: tuple[int, int] | None = None,
) -> AsyncIterator[Daemon]:
    """A fresh daemon with an empty spool; the scratch directory goes when it stops.

    With `profile`, py-spy (if on PATH) samples the daemon for its whole life into that file as collapsed stacks.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{sink}-{durability}-", dir=SCRATCH))
    port, otlp_port = free_port(), free_port()
    config = workdir / "shipper.toml"
    config.write_text(config_text(workdir, port, durability, sink, remote_url, tokens, workers, otlp_port))
    log = workdir / "shipper.log"
    otlp = f"127.0.0.1:{otlp_port}" if sink == "otlp" else ""
    daemon = Daemon(_spawn(config, log, src), f"127.0.0.1:{port}", f"unix:{workdir / 'shipper.sock'}", log, otlp)
    spy = None
    try:
        await _wait_healthy(daemon, 30)
        spy = _start_py_spy(daemon.pid, profile) if profile else None
        yield daemon
    except BaseException:
        print(f"shipper's log ended with:\n{daemon.log_tail()}", file=sys.stderr)
        raise
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        await _stop(daemon)
        shutil.rmtree(workdir, ignore_errors=True)


def _spawn(config: Path, log: Path, src: Path) -> subprocess.Popen[bytes]:
    """`python -m shipper run` with `src` first on the path (the repo, or another checkout to compare with)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "shipper", "run", "--config", str(config)]
        return subprocess.Popen(command, stdout=out, stderr=out, cwd=src, env=env)


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        print("--profile: py-spy is not installed (pip install py-spy); not profiling", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [exe, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "200", "--nonblocking"]
    command += ["-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
