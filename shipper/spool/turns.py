"""Writers of one spool in several processes take turns through a lock file, not through SQLite's busy wait.

SQLite lets one writer in at a time; a second one that finds the file locked sleeps and tries again (1, 2, 5, 10 ms
and longer), so two busy writers would add milliseconds to every acknowledgement. Taking `flock` on
`<spool>-writer` before `BEGIN IMMEDIATE` queues them in the kernel instead: the next writer wakes the moment the
last one's COMMIT (and its fsync) is over. Readers never take it. A writer that does not (the CLI, an older shipper)
still meets SQLite's own lock and busy timeout, so the turn is a speed-up, never what makes writes safe.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Turns:
    """Lives on the database thread that writes: `take()` before BEGIN, `give()` after COMMIT or ROLLBACK."""

    def __init__(self, spool: Path) -> None:
        real = spool.resolve()
        self._fd = os.open(real.with_name(real.name + "-writer"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def take(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def give(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
