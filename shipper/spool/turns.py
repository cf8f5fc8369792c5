"""Writers of one spool in several processes take turns through a lock file, not through SQLite's busy wait.

SQLite lets one writer in at a time; a second one that finds the file locked sleeps and tries again (1, 2, 5, 10 ms
and longer), so two busy writers would add milliseconds to every acknowledgement. Taking `flock` on
`<spool>-writer` before `BEGIN IMMEDIATE` queues them in the kernel instead: the next writer wakes the moment the
last one's COMMIT (and its fsync) is over. Readers never take it. A writer that does not (the CLI, an older shipper)
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
# The first look again comes this soon; each later one twice as late, up to POLL_MAX.
POLL_MIN = 0.00005
POLL_MAX = 0.001


class Turns:
    """Lives on the database thread that writes: `take()` before BEGIN, `give()` after COMMIT or ROLLBACK."""

    def __init__(self, spool: Path) -> None:
        real = spool.resolve()
        self._fd = os.open(real.with_name(real.name + "-writer"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def take(self) -> None:
        """The turn, or, after WAIT, none (then `give` is harmless)."""
        deadline, pause = time.monotonic() + WAIT, POLL_MIN
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
            time.sleep(pause)
            pause = min(POLL_MAX, pause * 2)

    def give(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
