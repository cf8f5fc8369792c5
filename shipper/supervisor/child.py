"""A role's process as the supervisor sees it, and the supervisor as a role's process sees it.

The supervisor passes a role its listening sockets (`{kind}={fd}` in SHIPPER_LISTEN_FDS), its own pid, and an
sd_notify socket of its own as NOTIFY_SOCKET, with a watchdog of two pings: the role's ordinary sd_notify calls
(READY=1, WATCHDOG=1, STATUS=, and the two `X_SHIPPER_` fields with its reload and stop reports) reach the
supervisor, which tells the messages apart by the sender's pid. Not responsible for when to start or stop a role
(supervisor/__init__.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.ingest.activation import Listeners

# Roles ping the supervisor this often; one silent for three pings is hung, and systemd's watchdog is not fed.
ROLE_PING = 1.0
LISTEN_ENV = "SHIPPER_LISTEN_FDS"
PARENT_ENV = "SHIPPER_SUPERVISOR_PID"
# The reports a role sends as sd_notify fields of its own: its last reload's outcome, its stop summary.
REPORTS = {"X_SHIPPER_RELOAD": "reload", "X_SHIPPER_STOPPED": "stopped"}


@dataclass(eq=False)
class Child:
    role: str
    process: asyncio.subprocess.Process | None = None
    readies: int = 0  # READY=1 messages since the start: a reload ends with one more
    pinged: float = 0.0
    started: float = 0.0
    deaths: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # What it reported (sd_notify fields of its own): its last reload's outcome, its stop summary.
    reload: dict[str, Any] | None = None
    stopped: dict[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self, now: float) -> bool:
        """Started, ready and pinging: what systemd's watchdog is fed on."""
        return bool(self.readies) and now - self.pinged < 3 * ROLE_PING

    def heard(self, fields: Mapping[str, str]) -> None:
        """One sd_notify datagram from this role."""
        if fields.get("READY") == "1":
            self.readies += 1
        for name, attribute in REPORTS.items():
            if name in fields:
                with contextlib.suppress(orjson.JSONDecodeError):
                    setattr(self, attribute, orjson.loads(fields[name]))
        if "WATCHDOG" in fields or "READY" in fields:
            self.pinged = time.monotonic()
        self.changed.set()


def role_env(environ: Mapping[str, str], notify: str, fds: Mapping[str, list[int]]) -> dict[str, str]:
    """A role's environment: the supervisor's, with the service manager's variables replaced by its own."""
    env = {k: v for k, v in environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = "@" + notify[1:]
    env["WATCHDOG_USEC"] = str(int(ROLE_PING * 2 * 1_000_000))
    env[PARENT_ENV] = str(os.getpid())
    env[LISTEN_ENV] = ",".join(f"{kind}={fd}" for kind, numbers in fds.items() for fd in numbers)
    return env


def supervised_listeners(environ: MutableMapping[str, str]) -> tuple[int, Listeners] | None:
    """In a role the supervisor started: its pid, and the listening sockets it passed (`kind=fd,...`); None when
    not started by a supervisor."""
    raw, parent = environ.pop(LISTEN_ENV, None), environ.pop(PARENT_ENV, None)
    if raw is None or parent is None or not parent.isdigit():
        return None
    found: dict[str, list[socket.socket]] = {"http": [], "unix": [], "admin": [], "otlp": []}
    for item in filter(None, raw.split(",")):
        kind, _, fd = item.partition("=")
        found[kind].append(socket.socket(fileno=int(fd)))
    return int(parent), Listeners(
        http=tuple(found["http"]), unix=tuple(found["unix"]), admin=tuple(found["admin"]), otlp=tuple(found["otlp"])
    )


def die_with_parent(supervisor: int) -> None:
    """In a role: be killed when the supervisor dies (Linux), so no role outlives the shipper it belongs to."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # the supervisor died before the line above took effect
        os._exit(1)
