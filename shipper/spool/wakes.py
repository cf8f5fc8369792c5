"""Wake-ups that cross processes: "rows were added for these sinks", from the process that appended to those that
deliver, without any of them polling the file.

Each delivering process binds a Unix datagram socket named after its presence (owners.py), in Linux's abstract
namespace (no file to clean up after a `kill -9`, no path length limit). An appending process sends one small
datagram per commit that added rows to every delivering presence it knows (the owners directory, read again at
most once a second or when a send fails), without ever blocking: a full receiver is already awake. A wake-up is a
hint, never the only way: a forwarder also looks after each send and at an idle interval (core/leasing.py), so one
lost, or a peer in another network namespace, costs at most that interval. Not responsible for what a forwarder does
when woken (forward/forwarder.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from shipper.spool.owners import owners_dir

# Whose presence names start with this are woken (the delivery role's presences).
DELIVERING = "delivery-"
RESCAN_INTERVAL = 1.0
MAX_DATAGRAM = 65536


def address(owner: str) -> str:
    return f"\0shipper-wake-{owner}"


class Waker:
    """In an appending process: coalesces the counts of one loop turn into one datagram per delivering peer."""

    def __init__(self, spool: Path) -> None:
        self._folder = owners_dir(spool)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._peers: list[str] = []
        self._scanned = float("-inf")
        self._pending: Counter[str] = Counter()

    def added(self, counts: Counter[str]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.update(counts)

    def _flush(self) -> None:
        payload = orjson.dumps(dict(self._pending))
        self._pending.clear()
        if time.monotonic() - self._scanned > RESCAN_INTERVAL:
            self._rescan()
        for peer in self._peers:
            try:
                self._sock.sendto(payload, address(peer))
            except BlockingIOError:
                continue  # its queue is full of wake-ups it has not read yet: it is awake
            except OSError:
                self._scanned = float("-inf")  # gone (or not bound yet): read the directory again next time

    def _rescan(self) -> None:
        self._scanned = time.monotonic()
        try:
            self._peers = [e.name for e in os.scandir(self._folder) if e.name.startswith(DELIVERING)]
        except FileNotFoundError:
            self._peers = []

    def close(self) -> None:
        self._sock.close()


class WakeListener:
    """In a delivering process: each datagram's counts go to `announce` (the spool's watchers)."""

    def __init__(self, owner: str, announce: Callable[[dict[str, int]], None]) -> None:
        self._announce = announce
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._sock.bind(address(owner))
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        counts: Counter[str] = Counter()
        while True:
            try:
                payload = self._sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                break
            # Anyone on the host may send here: noise is dropped, it is only a hint.
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                counts.update({str(k): int(v) for k, v in orjson.loads(payload).items()})
        if counts:
            self._announce(dict(counts))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
