"""The soak's remote, in its own process: a lean HTTP/1.1 server on 127.0.0.1 that takes records, refuses for good
(400) every record whose body says `"reject": true`, and misbehaves on command: 503 storms, 429 with Retry-After,
connection resets, answers slower than the sink's timeout, or not listening at all.

Each record taken is appended to a log as `D <uid>`, each refusal as `R <uid>`, in arrival order (one event loop, so
the order in the file is the order of arrival). A record is logged as taken when it arrives, before the answer, as a
real remote commits it: when the answer is late or lost, shipper sends it again and the log shows the duplicate.
The command (the fault mode) and the counters live in shared memory, so the harness never competes with shipper for
this server. Not responsible for judging anything: the harness reads the log once this process has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import socket
from pathlib import Path
from typing import Any

import orjson

from bench.wire import Framer

NORMAL, STORM, THROTTLE, RESETS, SLOW, DOWN = range(6)
MODE_NAMES = {NORMAL: "normal", STORM: "503 storm", THROTTLE: "429 + Retry-After", RESETS: "connection resets",
              SLOW: "slow answers", DOWN: "remote down"}  # fmt: skip
# Shared slots: the command, then counters the harness may print while the soak runs.
MODE, TAKEN, REFUSED, REQUESTS, ANSWERED_503, ANSWERED_429, RESET, SLOWED = range(8)
SLOTS = 8
# Longer than the sinks' timeout (2 s in the soak's config): shipper gives up waiting and sends the record again.
SLOW_DELAY = 3.0
RETRY_AFTER = 1


def _answer(status: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


OK = _answer("200 OK", b'{"ok":true}')
CREATED = _answer("201 Created", b'{"ok":true}')
REJECTED = _answer("400 Bad Request", b'{"error":"rejected on purpose"}')
UNAVAILABLE = _answer("503 Service Unavailable", b'{"error":"storm"}')
THROTTLED = _answer("429 Too Many Requests", b'{"error":"slow down"}', f"Retry-After: {RETRY_AFTER}\r\n")
UNREADABLE = _answer("400 Bad Request", b'{"error":"no soak_uid"}')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Connection(Framer):
    """One client connection, framed by the bench's lean HTTP (shipper never sends chunked bodies)."""

    def __init__(self, remote: Remote) -> None:
        super().__init__()
        self.remote = remote

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.remote.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.remote.connections.discard(self)

    def on_message(self, head: bytes, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():  # nothing more after a reset
            self.remote.handle(self, head, body)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def reset(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Remote:
    def __init__(self, port: int, shared: Any, log_path: Path) -> None:
        self.port = port
        self.shared = shared
        self.connections: set[Connection] = set()
        self.server: asyncio.Server | None = None
        self._log = open(log_path, "ab", buffering=1 << 16)  # noqa: SIM115 - closed in run()
        self._rng = random.Random(20240611)

    def handle(self, conn: Connection, head: bytes, body: bytes) -> None:
        shared = self.shared
        shared[REQUESTS] += 1
        mode = int(shared[MODE])
        if mode == STORM:
            shared[ANSWERED_503] += 1
            return conn.send(UNAVAILABLE)
        if mode == THROTTLE:
            shared[ANSWERED_429] += 1
            return conn.send(THROTTLED)
        if mode == RESETS and self._rng.random() < 0.5:
            shared[RESET] += 1
            return conn.reset()
        try:
            record = orjson.loads(body)
            uid = int(record["soak_uid"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._log.write(b"X 0\n")
            return conn.send(UNREADABLE)
        if record.get("reject") is True:
            shared[REFUSED] += 1
            self._log.write(b"R %d\n" % uid)
            return conn.send(REJECTED)
        shared[TAKEN] += 1
        self._log.write(b"D %d\n" % uid)
        answer = CREATED if head.startswith(b"post /fp/") else OK  # Freeplay's SDK wants 201 for feedback
        if mode == SLOW and self._rng.random() < 0.5:
            shared[SLOWED] += 1
            asyncio.get_running_loop().call_later(SLOW_DELAY, conn.send, answer)
            return None
        return conn.send(answer)

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Connection(self), "127.0.0.1", self.port, backlog=1024, reuse_address=True
        )

    def go_down(self) -> None:
        """Stop listening and drop every connection: from now on, connections are refused."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections):
            conn.reset()

    async def run(self, ready: Any) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        parent = os.getppid()
        await self.listen()
        ready.set()
        ticks = 0
        try:
            while not stop.is_set() and os.getppid() == parent:  # never outlive the harness
                down = int(self.shared[MODE]) == DOWN
                if down and self.server is not None:
                    self.go_down()
                elif not down and self.server is None:
                    with contextlib.suppress(OSError):  # the port may linger a moment; try again next tick
                        await self.listen()
                ticks += 1
                if ticks % 5 == 0:
                    self._log.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        finally:
            self.go_down()
            self._log.flush()
            self._log.close()


def _serve(port: int, shared: Any, log_path: str, ready: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle; it stops us with SIGTERM
    asyncio.run(Remote(port, shared, Path(log_path)).run(ready))


class RemoteProcess:
    """The remote as a child process: `start()`, set `mode`, read `counters`, `stop()`, then `events()`."""

    def __init__(self, log_path: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.log_path = log_path
        self._shared = ctx.RawArray("d", SLOTS)
        self._ready = ctx.Event()
        self._proc = ctx.Process(
            target=_serve, args=(self.port, self._shared, str(log_path), self._ready), name="soak-remote"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._proc.start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError("the soak's remote did not start")

    @property
    def mode(self) -> int:
        return int(self._shared[MODE])

    @mode.setter
    def mode(self, value: int) -> None:
        self._shared[MODE] = value

    def counter(self, slot: int) -> int:
        return int(self._shared[slot])

    def stop(self) -> None:
        if self._proc.pid is None:
            return
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    def events(self) -> list[tuple[str, int]]:
        """Every (kind, uid) the remote logged, in arrival order: D taken, R refused on purpose, X unreadable."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_bytes().splitlines():
            kind, _, uid = line.partition(b" ")
            out.append((kind.decode(), int(uid)))
        return out
