"""Claiming a spool for one shipper: the lock, the file made ready, and the leases of dead processes given back.

A shipper is one or several processes on one spool (a supervisor and its roles). Exactly one of them claims it
before the others attach: it holds the exclusive lock for the shipper's life (a second shipper on the same spool is
refused), creates, checks and migrates the file, and gives back every lease whose holder is dead. Processes that
attach later (store.py `Spool.attach`) never lock, move or migrate the file. Not responsible for queue logic.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from shipper.errors import SpoolError
from shipper.spool.files import lock, prepare_dir, prepare_file
from shipper.spool.owners import reclaim_dead, sweep
from shipper.spool.schema import apply_pragmas

# Where the supervisor moved a damaged spool aside, told to the first ingest process (which counts it).
RECOVERED_ENV = "SHIPPER_SPOOL_RECOVERED"
# How long a role alone waits for the role that claims the file first to have it ready.
SHARE_WAIT = 10.0
# Entities whose create is older than this are forgotten: their updates no longer join the create's scope.
SCOPE_RETENTION = 30 * 86400


class Claim:
    """Held for the shipper's life; `release()` at the very end, after every attached process closed."""

    def __init__(self, lock_fd: int, recovered_from: Path | None) -> None:
        self.recovered_from = recovered_from  # where a damaged file was moved, if it was
        self._lock_fd: int | None = lock_fd

    @classmethod
    def take(cls, path: Path, durability: str) -> Claim:
        prepare_dir(path)
        lock_fd = lock(path)
        try:
            damaged = prepare_file(path, durability)
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                apply_pragmas(conn, durability)
                recover(conn, path)
            finally:
                conn.close()
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(lock_fd, damaged)

    @classmethod
    def share(cls, path: Path, durability: str) -> Claim:
        """For a role run alone (`--role`, no supervisor; roles in containers of their own on one volume): the first
        to come claims the file as `take` does, then holds the lock shared; the others hold it shared at once. A
        whole shipper (which holds it exclusively) is refused, and refuses them."""
        prepare_dir(path)
        real = path.resolve()
        fd = os.open(real.with_name(real.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if _try(fd, fcntl.LOCK_EX):
                damaged = prepare_file(path, durability)
                cls(fd, None).reclaim(path, durability)
                fcntl.flock(fd, fcntl.LOCK_SH)  # shared from now on: the next role alone joins
                return cls(fd, damaged)
            deadline = time.monotonic() + SHARE_WAIT
            while not _try(fd, fcntl.LOCK_SH):  # the first role may still be preparing the file
                if time.monotonic() > deadline:
                    raise SpoolError(f"another shipper is already using the spool {path}: a role alone cannot join it")
                time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, None)

    def reclaim(self, path: Path, durability: str) -> int:
        """Give back the leases of processes that died since (the supervisor calls this when it sees one die)."""
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            apply_pragmas(conn, durability)
            return recover(conn, path)
        finally:
            conn.close()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def recover(conn: sqlite3.Connection, path: Path) -> int:
    """A lease whose holder is dead is from a sender whose send may or may not have reached the remote, so it counts
    as an attempt (owners.py). Also forgets entity scopes past their retention. Returns the leases given back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        given = reclaim_dead(conn, path)
        conn.execute("DELETE FROM entity_scopes WHERE created_at < ?", (time.time() - SCOPE_RETENTION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    sweep(path)
    return given
