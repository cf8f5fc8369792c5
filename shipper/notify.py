"""sd_notify: tell systemd (or any supervisor speaking its protocol) when shipper is ready, what it is doing, that it
is still alive, and that it is stopping.

The protocol is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or
an abstract name written with a leading `@`); a few lines of code, so no dependency. Without `$NOTIFY_SOCKET` (run
by hand, in a container, in tests) every call is a no-op. Sending never raises: a supervisor that cannot be told
must not take the daemon down with it, so failures are logged (rate-limited) instead.

The watchdog pings come from a task on the daemon's own event loop, not from a thread: a loop that stalls stops
pinging, and systemd (`WatchdogSec=`) kills and restarts the daemon, which is the point.
Not responsible for deciding *when* the daemon is ready or what its status says (daemon.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping

from shipper.logs import Throttled

log = logging.getLogger(__name__)

# A notification that cannot be delivered at once must not stall the event loop for long; systemd reads its
# socket promptly, so this only bounds the pathological case (a full receive queue).
SEND_TIMEOUT = 0.5
# How often STATUS= is refreshed: `systemctl status` is read by people, so seconds are fine.
STATUS_INTERVAL = 5.0


def _address(value: str) -> str | None:
    """`$NOTIFY_SOCKET` as a socket address: `@name` is the abstract namespace (a leading NUL byte)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. systemd >= 253's "vsock:CID:PORT", which a local daemon never needs


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between pings (half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises), or None if off.

    `$WATCHDOG_PID`, when set, names the process systemd expects the pings from; any other process stays quiet.
    """
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(raw) / 2 / 1_000_000


class Notifier:
    """Sends sd_notify messages; every method is a cheap no-op when no supervisor is listening."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%s is not an AF_UNIX address; not notifying", raw)
        self.watchdog_interval = watchdog_interval(env) if self._address else None
        self._sock: socket.socket | None = None
        self._errors = Throttled(log)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of `KEY=value` lines; True if it left. Values are made single-line (the framing)."""
        if self._address is None:
            return False
        lines = (f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            self._errors.warning("cannot notify the service manager: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: only once the spool is open and every listener is bound (systemd then starts dependants)."""
        return self.send(READY=1) if status is None else self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by `systemctl status`."""
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: a graceful stop has begun, so a slow drain is not mistaken for a hang."""
        return self.send(STOPPING=1) if status is None else self.send(STOPPING=1, STATUS=status)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as `Type=notify-reload` (systemd >= 253) requires; send READY=1 after."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the daemon's event loop is alive."""
        return self.send(WATCHDOG=1)

    async def run_watchdog(self) -> None:
        """Ping at `watchdog_interval` from this event loop until cancelled; returns at once if there is no watchdog."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    async def run_status(self, describe: Callable[[], str], interval: float = STATUS_INTERVAL) -> None:
        """Refresh STATUS= from `describe()` every `interval` until cancelled, sending only when it changed.

        `describe` reads in-memory state only (e.g. the metrics' spool monitor, which queries off the loop).
        """
        if not self.enabled:
            return
        last = ""
        while True:
            try:
                text = describe()
            except Exception as exc:  # a status line is cosmetic: it must never stop the daemon
                self._errors.warning("cannot describe the status: %s", exc)
            else:
                if text != last and self.status(text):
                    last = text
            await asyncio.sleep(interval)

    def watchdog_running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The watchdog task for the duration of the block (enter it on the daemon's AsyncExitStack)."""
        return _background(self.run_watchdog(), "sd-watchdog")

    def status_running(
        self, describe: Callable[[], str], interval: float = STATUS_INTERVAL
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The STATUS= refresher for the duration of the block."""
        return _background(self.run_status(describe, interval), "sd-status")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@contextlib.asynccontextmanager
async def _background(coro: Coroutine[None, None, None], name: str) -> AsyncIterator[None]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])  # unlike `await task`, never swallows a cancellation of our own
