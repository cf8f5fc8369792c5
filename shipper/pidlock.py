"""An exclusive lock file held for a process's life, naming its holder: one owner per spool, one per socket path.

`flock` on a file beside the thing owned: released by the kernel when the process dies (even by `kill -9`), so a
stale lock never needs clearing, and the file is never removed (removing it would let two processes lock two
different files of the same name). It holds the owner's pid, so a refused start can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Held(Exception):
    """Another live process holds the lock; `holder` says who, in words ("pid 1234")."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take(lock_path: Path) -> int:
    """The locked file's descriptor, to keep open while owning; raises Held, or OSError if the file cannot be opened."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise Held(f"pid {text}" if text.isdigit() else "a process") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
