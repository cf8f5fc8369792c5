"""Test support: a scriptable fake remote (a real aiohttp server) and the daemon as a real subprocess.

Nothing here imitates shipper's own parts; it plays the world around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent


def _own_ports() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range, split between pytest-xdist workers.
    A port the kernel picks (bind to 0) lies in that range, where every outgoing connection takes its local port too:
    under parallel load one of them took a port between the probe and the server's bind ("address already in use").
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (ephemeral - 10_000) // workers
    return range(10_000 + worker * size, 10_000 + (worker + 1) * size) if size >= 100 else range(0)


OWN_PORTS = _own_ports()
_port_turn = itertools.count(random.randrange(len(OWN_PORTS) or 1))


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server the test starts next; from this worker's own ports, in turn (a
    random start, so two suites at once rarely walk the same ones), else one the kernel picks."""
    for _ in range(len(OWN_PORTS)):
        port = OWN_PORTS[next(_port_turn) % len(OWN_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use, or closing (TIME_WAIT): the next one
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


# A behaviour answers one request: return a Response to send it, or None for the default (200 {"ok": true}).
Behaviour = Callable[[web.Request, bytes], "web.StreamResponse | None"]
# The same, but may wait (a slow or hanging remote); runs before `behaviour`.
AsyncBehaviour = Callable[[web.Request, bytes], Awaitable["web.StreamResponse | None"]]


@dataclass
class FakeRemote:
    """An HTTP remote on 127.0.0.1 that records what it accepts and can be told to fail."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    behaviour: Behaviour | None = None
    async_behaviour: AsyncBehaviour | None = None
    # time.monotonic() at which each request arrived (every attempt, answered or not).
    attempt_times: list[float] = field(default_factory=list)
    in_flight: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        """Stop listening: from now on connections are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.attempts += 1
        self.attempt_times.append(time.monotonic())
        if self.async_behaviour is not None:
            self.in_flight += 1
            try:
                response = await self.async_behaviour(request, body)
            finally:
                self.in_flight -= 1
            if response is not None:
                return response
        if self.behaviour is not None:
            response = self.behaviour(request, body)
            if response is not None:
                return response
        self.received.append(Received(request.method, request.path, dict(request.query), dict(request.headers), body))
        return web.json_response({"ok": True})

    def bodies(self) -> list[Any]:
        """Every record body received, NDJSON batches split into their lines."""
        out: list[Any] = []
        for item in self.received:
            if item.headers.get("Content-Type", "").startswith("application/x-ndjson"):
                out.extend(orjson.loads(line) for line in item.body.splitlines() if line)
            else:
                out.append(item.json())
        return out


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def write_config(
    tmp_path: Path,
    sinks_toml: str,
    extra: str = "",
    http_port: int | None = None,
    *,
    drain_timeout: float = 5,
    ingest_extra: str = "",
    daemon_extra: str = "",
) -> Path:
    port = http_port or free_port()
    text = f"""
[daemon]
drain_timeout = {drain_timeout}
{daemon_extra}

[ingest]
http = "127.0.0.1:{port}"
unix = "{tmp_path / "shipper.sock"}"
{ingest_extra}

[spool]
path = "{tmp_path / "spool.db"}"

{extra}

{sinks_toml}
"""
    path = tmp_path / "shipper.toml"
    path.write_text(text)
    return path


@dataclass
class Daemon:
    """`shipper run` as a real subprocess, with its stderr kept in a file for post-mortems."""

    config: Path
    http: str
    unix: Path
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    # Extra `shipper run` arguments (e.g. "--log-format", "text").
    args: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Path) -> Daemon:
        import tomllib

        data = tomllib.loads(config.read_text())
        return cls(config, data["ingest"]["http"], Path(data["ingest"]["unix"]))

    async def start(self, timeout: float = 20.0) -> None:
        self.log_path = self.config.with_suffix(".log")
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shipper",
            "run",
            "--config",
            str(self.config),
            *self.args,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.logs()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://{self.http}/healthz") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"daemon did not become healthy: {self.logs()}")
                await asyncio.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def ensure_stopped(self) -> None:
        """For `finally:` blocks: a graceful stop if the daemon still runs, kill -9 if that hangs."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await self.terminate(timeout=15)
        except TimeoutError:
            await self.kill9()

    def sighup(self) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGHUP)

    def log_lines(self) -> list[str]:
        return [line for line in self.logs().splitlines() if line.strip()]

    def json_logs(self) -> list[dict[str, Any]]:
        """Every log line parsed as JSON (raises on a line that is not: JSON is the default format)."""
        return [orjson.loads(line) for line in self.log_lines()]

    async def wait_for_log(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until at least `count` log lines contain `text`."""
        await wait_for(lambda: sum(text in line for line in self.log_lines()) >= count, timeout=timeout)


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def unix_session(path: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)))


def in_process(args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None) -> bool:
    """Whether `shipper ARGS` can run in this process: every command but `run` (the daemon: signals, its own logging)
    and `status --watch` (stopped by SIGINT) is a function of its arguments, the config, the spool and the daemon's
    answers, so a subprocess would add only its start (~0.5s of CPU, hundreds of times a suite). Another directory
    or extra environment variables would be process-wide here: those calls keep a process of their own."""
    return cwd is None and env is None and "run" not in args[:1] and "--watch" not in args


def cli_here(*args: str) -> tuple[int, str, str]:
    """`shipper ARGS` through shipper.cli.main in this process: its exit status, stdout and stderr, as
    `python -m shipper` gives them (an uncaught exception propagates: the test fails on it, as on a Traceback)."""
    import io

    from shipper.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help, --version, a usage error
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return code, out.getvalue(), err.getvalue()


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`shipper ARGS`, optionally from another directory and with extra environment variables: a subprocess unless
    `in_process` says it adds nothing."""
    import subprocess

    if in_process(args, cwd, env):
        return cli_here(*args)

    done = subprocess.run(
        [sys.executable, "-m", "shipper", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stdout, done.stderr


def query_spool(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Raw SQL on the spool file, read-only, for the spool's own tests (which check the file itself). Every other
    test asks the spool's read API (shipper.spool.reader), as the CLI does."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def post_items(
    session: aiohttp.ClientSession, url: str, items: list[dict[str, Any]], ndjson_body: bool = True
) -> list[int]:
    """POST records (NDJSON, or a JSON array/object); asserts the 202 and returns the acknowledged ids."""
    if ndjson_body:
        data, content_type = ndjson(items), "application/x-ndjson"
    else:
        data, content_type = orjson.dumps(items[0] if len(items) == 1 else items), "application/json"
    async with session.post(url, data=data, headers={"Content-Type": content_type}) as response:
        assert response.status == 202, await response.text()
        body = await response.json()
        assert body["accepted"] == len(items)
        return list(body["ids"])


async def run_cli_async(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`run_cli` without blocking the event loop (servers in this process keep answering meanwhile)."""
    if in_process(args, None, None):
        return await asyncio.wait_for(asyncio.to_thread(cli_here, *args), timeout)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shipper", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- Prometheus scrapes ------------------------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


def parse_metrics(text: str) -> dict[tuple[str, Labels], float]:
    """Prometheus text → {(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    """One sample's value, or None when the daemon does not export it."""
    return samples.get((name, tuple(sorted(labels.items()))))


def by_label(samples: dict[tuple[str, Labels], float], name: str, label: str) -> dict[str, float]:
    """Every sample of `name`, keyed by the value of one label (e.g. the rejection reason)."""
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[str, dict[tuple[str, Labels], float]]:
    """GET {base}/metrics: the raw text and its parsed samples."""
    async with session.get(f"{base}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
        text = await response.text()
    return text, parse_metrics(text)


@contextlib.asynccontextmanager
async def running(*daemons: Daemon) -> AsyncIterator[None]:
    """The daemons started in turn (a sidecar, then its relays, say), and every one stopped however the block ends."""
    try:
        for daemon in daemons:
            await daemon.start()
        yield
    finally:
        for daemon in daemons:
            await daemon.ensure_stopped()


async def wait_for_metrics(
    session: aiohttp.ClientSession,
    base: str,
    predicate: Callable[[dict[tuple[str, Labels], float]], bool],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> dict[tuple[str, Labels], float]:
    """Scrape until `predicate(samples)` holds; returns those samples (spool gauges refresh every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        _, samples = await scrape(session, base)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics did not reach the expected state within {timeout}s: {samples}")
        await asyncio.sleep(interval)
