"""The cheapest HTTP/1.1 that does the job, for both ends of the harness: a keep-alive client and a fake remote.

Both are bare `asyncio.Protocol`s that frame messages by Content-Length only (shipper and aiohttp never send
chunked bodies here; a chunked message is refused loudly rather than miscounted). No header objects, no routing:
on 2 cores every microsecond the harness spends is one the daemon does not get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast


def _content_length(head: bytes) -> int:
    """Content-Length from a lower-cased header block; 0 when absent."""
    if b"transfer-encoding: chunked" in head:
        raise ValueError("chunked bodies are not supported by the bench's lean HTTP")
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += 17
    end = head.find(b"\r\n", start)
    return int(head[start : end if end >= 0 else len(head)])


class Framer(asyncio.Protocol):
    """Splits a byte stream into (head, body) messages and hands each to `on_message`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head = b""
        self._need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                self._need = _content_length(self._head)
            if len(buf) < self._need:
                return
            body = bytes(buf[: self._need])
            del buf[: self._need]
            self._need = -1
            self.on_message(self._head, body)

    def on_message(self, head: bytes, body: bytes) -> None:
        raise NotImplementedError


class Client(Framer):
    """One keep-alive connection; `request` sends pre-encoded bytes and returns (status, body). One at a time."""

    def __init__(self) -> None:
        super().__init__()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def on_message(self, head: bytes, body: bytes) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(target: str) -> Client:
    """`target` is `unix:/path/to.sock` or `host:port`."""
    loop = asyncio.get_running_loop()
    if target.startswith("unix:"):
        transport, client = await loop.create_unix_connection(Client, target[5:])
    else:
        host, _, port = target.rpartition(":")
        transport, client = await loop.create_connection(Client, host, int(port))
    client.transport = transport  # uvloop may call connection_made only on the next loop iteration
    return client


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: shipper\r\n\r\n".encode()


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Remote(Framer):
    """The fake remote's side of one connection: count records (NDJSON lines, or 1 per request), answer 200."""

    def __init__(self, count: Callable[[int], None]) -> None:
        super().__init__()
        self._count = count

    def on_message(self, head: bytes, body: bytes) -> None:
        self._count(body.count(b"\n") if b"x-ndjson" in head else 1)
        assert self.transport is not None
        self.transport.write(OK)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the host, so the remote's timestamps compare with ours."""
    return time.monotonic()
