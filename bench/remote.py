"""The fake remote in its own process: a lean HTTP/1.1 server on 127.0.0.1 that counts what it receives.

Counts live in shared memory (records, requests, the monotonic time of the last request), so the harness reads
them without any request of its own competing with the daemon's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.sharedctypes
import signal
import socket
from typing import Any

from bench.loop import run_loop
from bench.wire import Remote, now

RECORDS, REQUESTS, LAST = 0, 1, 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(port: int, shared: Any, ready: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle; it stops us with SIGTERM

    def count(records: int) -> None:
        shared[RECORDS] += records
        shared[REQUESTS] += 1
        shared[LAST] = now()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Remote(count), "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    run_loop(serve())


class RemoteProcess:
    """Start with `start()`, read `records` / `last_at`, end with `stop()`."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self._shared = ctx.RawArray("d", 3)
        self._ready = ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(self.port, self._shared, self._ready), name="bench-remote")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self) -> None:
        self._proc.start()
        if not self._ready.wait(20):
            self.stop()
            raise RuntimeError("the fake remote did not start")

    @property
    def records(self) -> int:
        return int(self._shared[RECORDS])

    @property
    def requests(self) -> int:
        return int(self._shared[REQUESTS])

    @property
    def last_at(self) -> float:
        return float(self._shared[LAST])

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(10)
