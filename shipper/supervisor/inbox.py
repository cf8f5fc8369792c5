"""The supervisor's sd_notify socket: datagrams from its roles, each with the sender's pid (SCM_CREDENTIALS).

An abstract Unix socket (no file to clean up), named with the supervisor's pid and a random part. Only processes of
this host's network namespace can reach it; a datagram from a pid that is not one of the roles is dropped.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from collections.abc import Iterator

CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Inbox:
    def __init__(self) -> None:
        self.address = f"\0shipper-supervisor-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._sock.bind(self.address)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def fileno(self) -> int:
        return self._sock.fileno()

    def messages(self) -> Iterator[tuple[int | None, dict[str, str]]]:
        """Every datagram waiting now: the sender's pid and its `KEY=value` lines."""
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
            except BlockingIOError:
                return
            pid = next(
                (
                    CREDENTIALS.unpack(d[: CREDENTIALS.size])[0]
                    for _, kind, d in ancillary
                    if kind == socket.SCM_CREDENTIALS
                ),
                None,
            )
            yield pid, dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())

    def close(self) -> None:
        self._sock.close()
