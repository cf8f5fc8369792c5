"""Who may bind `[ingest] unix`: one live process per socket path, whatever spool each daemon uses.

The spool lock says nothing here: two daemons with different spools can name the same socket. So the path is
claimed with a lock file beside it (`<socket>.lock`, see pidlock.py), and a socket that still answers a connect is
left alone even without a lock (a process that keeps none). Only a socket nobody holds or answers on is stale,
and replaced. Not responsible for binding or serving (server.py); sockets inherited from the service manager are
never claimed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from shipper import pidlock
from shipper.errors import ConfigError

# A listening Unix socket accepts a connect at once; the bound only matters for a listener that is stuck.
PROBE_TIMEOUT = 1.0


def claim(path: Path) -> int:
    """Lock the path for this process and clear a stale socket from it; the lock's fd, to keep until unbound."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = pidlock.take(lock_path)
    except pidlock.Held as held:
        raise ConfigError(
            f"ingest.unix: {path} is in use by another shipper ({held.holder} holds {lock_path})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"ingest.unix: cannot create the lock {lock_path}: {exc.strerror or exc}") from None
    try:
        _clear_stale(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _clear_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"ingest.unix: {path} exists and is not a socket; shipper will not replace it")
    if _answers(path):
        raise ConfigError(f"ingest.unix: {path} is served by a live process that holds no lock on it")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # a listener whose backlog is full is still alive
        except OSError as exc:
            raise ConfigError(f"ingest.unix: cannot tell whether {path} is in use: {exc.strerror or exc}") from None
        return True
