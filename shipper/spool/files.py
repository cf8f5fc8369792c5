"""The spool's files on disk: the exclusive lock, creation with safe modes, and what to do with a damaged file.

A spool written by a newer shipper is refused (schema.NewerSchema), never touched. A spool that fails
`PRAGMA quick_check`, or is not a database at all, is moved aside with a timestamp (with its WAL
and shared-memory files, so `shipper spool salvage` can read it) and a fresh one takes its place: the daemon keeps
serving, and the operator salvages the readable rows. A file that cannot be opened for other reasons (permissions,
a full disk) is an error, never moved. Not responsible for queue logic (store.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from shipper import pidlock
from shipper.errors import SpoolError
from shipper.spool.schema import apply_pragmas, check_version, ensure_incremental_vacuum, migrate

log = logging.getLogger(__name__)

SIDE_FILES = ("", "-wal", "-shm")


def lock(path: Path) -> int:
    """Hold an exclusive lock for the daemon's life: one process owns a spool. The lock file sits beside the resolved
    path, so configs that reach one spool through a symlink (of the file or of a directory) or a bind mount meet at
    the same lock."""
    real = path.resolve()
    lock_path = real.with_name(real.name + ".lock")
    try:
        return pidlock.take(lock_path)
    except pidlock.Held as held:
        where = str(path) if real == path else f"{path} (that is {real})"
        raise SpoolError(
            f"another shipper is already using the spool {where}: {held.holder} holds {lock_path}"
        ) from None
    except OSError as exc:
        raise SpoolError(f"spool.path: cannot open the lock {lock_path}: {exc.strerror or exc}") from None


def prepare_dir(path: Path) -> None:
    """Create the spool's directory, or say in one line why it cannot be used (before the lock is tried in it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpoolError(f"spool.path: cannot create {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.R_OK | os.W_OK | os.X_OK):
        raise SpoolError(f"spool.path: cannot use {path}: no permission to read and write in {path.parent}")


def _create(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise SpoolError(f"spool.path: cannot open {path}: {exc.strerror or exc}") from None


def _check(path: Path, durability: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        apply_pragmas(conn, durability)
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        check_version(conn, path)  # before anything writes to a file this shipper may not understand
        ensure_incremental_vacuum(conn)
        migrate(conn)
    finally:
        conn.close()


def move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in SIDE_FILES:
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


def _keep_wal(path: Path) -> Path | None:
    """A hard link to the WAL: SQLite deletes or checkpoints it when the checking connection closes, even if the
    database itself proves unreadable, and the WAL may hold the newest acknowledged rows."""
    wal = path.with_name(path.name + "-wal")
    kept = path.with_name(path.name + "-wal.kept")
    with contextlib.suppress(FileNotFoundError):
        kept.unlink()
    try:
        os.link(wal, kept)
    except FileNotFoundError:
        return None
    return kept


def prepare_file(path: Path, durability: str) -> Path | None:
    """Create (0600), check and migrate the file; returns where a damaged file was moved, if one was."""
    prepare_dir(path)
    _create(path)
    kept = _keep_wal(path)
    try:
        _check(path, durability)
        if kept is not None:
            kept.unlink()
        return None
    except SpoolError:
        if kept is not None:
            kept.unlink()
        raise
    except sqlite3.OperationalError as exc:
        if kept is not None:
            kept.unlink()
        raise SpoolError(f"cannot open spool {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        damaged = move_aside(path)
        if kept is not None:
            kept.replace(damaged.with_name(damaged.name + "-wal"))
        log.error(
            "spool %s is damaged (%s); moved it to %s and started a fresh one."
            " Recover its rows with: shipper spool salvage %s",
            path,
            exc,
            damaged,
            damaged,
        )
    _create(path)
    try:
        _check(path, durability)
    except sqlite3.DatabaseError as exc:
        raise SpoolError(f"cannot create a fresh spool at {path}: {exc}") from exc
    return damaged
