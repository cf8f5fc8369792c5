"""Writers of one spool in several processes take turns through a lock file, not through SQLite's busy wait.

SQLite lets one writer in at a time; a second one that finds the file locked sleeps and tries again (1, 2, 5, 10 ms
and longer), so two busy writers would add milliseconds to every acknowledgement. Taking `flock` on
`<spool>-writer` before `BEGIN IMMEDIATE` instead, looking again every 50 µs to 1 ms, the next writer goes in about
as soon as the last one's COMMIT (and its fsync) is over. Readers never take it. A writer that does not (the CLI,
an older shipper)
still meets SQLite's own lock and busy timeout, so the turn is a speed-up, never what makes writes safe; and a
writer waits for its turn no longer than SQLite's busy timeout (a process stopped holding it must not stop the
others for good), then goes on without it and meets SQLite's own lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

# As long as SQLite's busy_timeout (schema.py): past it, the write goes on and meets SQLite's own lock.
WAIT = 5.0
# The first look again comes this soon; each later one twice as late, up to POLL_MAX (NEXT_POLL_MAX for the writer
# that is next: it looks often, as the turn is about to be its own).
POLL_MIN = 0.00005
POLL_MAX = 0.001
NEXT_POLL_MAX = 0.0001


class Turns:
    """Lives on the database thread that writes: `take()` before BEGIN, `give()` after COMMIT or ROLLBACK.

    Turns are fair: a lock is not a queue (the writer that just gave the turn can take it again before a waiter
    looks), so a writer with work always waiting, ingest under load, would starve the others, whose settlements and
    leases then wait for seconds. A second lock, the gate (`<spool>-writer-next`), makes one waiter the next writer:
    it holds the gate while it waits for the turn and lets it go once it has the turn; a writer taking the turn again
    must pass the gate first. So two busy writers alternate, and each of several gets a turn in a bounded time."""

    def __init__(self, spool: Path) -> None:
        real = spool.resolve()
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(real.with_name(real.name + "-writer"), flags, 0o600)
        self._gate = os.open(real.with_name(real.name + "-writer-next"), flags, 0o600)

    def take(self) -> None:
        """The turn, or, after WAIT, none (then `give` is harmless)."""
        deadline = time.monotonic() + WAIT
        next_in_line = _lock(self._gate, deadline, POLL_MAX)
        try:
            _lock(self._fd, deadline, NEXT_POLL_MAX if next_in_line else POLL_MAX)
        finally:
            if next_in_line:
                fcntl.flock(self._gate, fcntl.LOCK_UN)

    def give(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._gate)


def _lock(fd: int, deadline: float, poll_max: float) -> bool:
    """flock `fd`, looking again and again until `deadline` (a holder stopped by SIGSTOP must not stop us for
    good); False if it never came free."""
    pause = POLL_MIN
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
        time.sleep(pause)
        pause = min(poll_max, pause * 2)
