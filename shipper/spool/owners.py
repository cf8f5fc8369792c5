"""Which processes hold leases in a spool, whether each still lives, and giving a dead one's leases back.

Several processes share one spool (an ingest role, delivery roles). Each lease names the process that took it, and
each such process holds a presence file (`<spool>-owners/<owner>`) locked for its life: the kernel drops the lock
when the process dies, even by `kill -9`, so anyone can tell a dead owner from a live one by trying the lock. A dead
owner's leases are given back at once (counted, like any lease a crash cut short, as an attempt the remote may have
taken) instead of waiting for their deadline. A live owner that hangs (SIGSTOP) keeps its lock: its leases come back
by their deadline, as they always did. Not responsible for what a lease is (sql.py) or when to reclaim (the roles).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
from pathlib import Path

# The owner of leases taken before owners were recorded (schema 7), and of none: never alive.
NOBODY = ""


def owners_dir(spool: Path) -> Path:
    real = spool.resolve()
    return real.with_name(real.name + "-owners")


class Presence:
    """This process's claim to the leases it takes: `name` goes into each lease; `close()` at exit (or death)."""

    def __init__(self, name: str, fd: int, path: Path) -> None:
        self.name = name
        self._fd = fd
        self._path = path

    @classmethod
    def take(cls, spool: Path, role: str) -> Presence:
        """Locked before it is visible under its name: a peer testing presences never sees it unlocked."""
        folder = owners_dir(spool)
        folder.mkdir(mode=0o700, exist_ok=True)
        name = f"{role}-{os.getpid()}-{secrets.token_hex(4)}"
        draft = folder / f".{name}"
        fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(draft, folder / name)
        return cls(name, fd, folder / name)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._fd)


def alive(spool: Path, owner: str) -> bool:
    """Whether the process named `owner` still holds its presence. A dead one's file is removed on the way."""
    if owner == NOBODY:
        return False
    path = owners_dir(spool) / owner
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return False


def reclaim_dead(conn: sqlite3.Connection, spool: Path) -> int:
    """Inside the caller's write transaction: give back every lease whose owner is dead. Returns how many."""
    owners = [owner for (owner,) in conn.execute("SELECT DISTINCT owner FROM leases")]
    dead = [owner for owner in owners if not alive(spool, owner)]
    given = 0
    for owner in dead:
        given += conn.execute(
            "UPDATE rows SET attempts = attempts + 1, unanswered = unanswered + 1"
            " WHERE id IN (SELECT id FROM leases WHERE owner = ?)",
            (owner,),
        ).rowcount
        conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))
    return given


def sweep(spool: Path) -> None:
    """Remove the presence files of dead processes that held no lease (or crashed before their first)."""
    folder = owners_dir(spool)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if not entry.name.startswith("."):
                alive(spool, entry.name)
