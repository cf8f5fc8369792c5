"""The supervisor's listeners: bound once, before any role starts, and inherited by every ingest process.

The same rules as a daemon alone binds by (server.py): a Unix socket path is claimed first (socket_claim.py), born
owner-only and opened up to `unix_mode`; a busy port is one ConfigError naming its key. Sockets systemd passed
(socket activation) are used as they are. Several ingest processes accepting on one listening socket share its
connections (the kernel hands each to one of them). Not responsible for serving (server.py, admin.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from shipper.config import Config
from shipper.config.listeners import parse_host_port
from shipper.errors import ConfigError
from shipper.ingest.activation import Listeners, by_family
from shipper.ingest.socket_claim import claim

BACKLOG = 1024


@dataclass
class Bound:
    """Closed (and the socket files removed) on leaving the `with` block."""

    listeners: Listeners
    fds: dict[str, list[int]]
    _socket_files: list[Path] = field(default_factory=list)
    _claim_fds: list[int] = field(default_factory=list)

    def __enter__(self) -> Bound:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sock in [*self.listeners.http, *self.listeners.unix, *self.listeners.admin, *self.listeners.otlp]:
            sock.close()
        for path in self._socket_files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for fd in self._claim_fds:
            os.close(fd)


def _tcp(key: str, address: str) -> socket.socket:
    host, port = parse_host_port(address)
    try:
        sock = socket.create_server((host, port), family=_family(host), backlog=BACKLOG, reuse_port=False)
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot listen on {address}: {os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _unix(key: str, address: str, config: Config, bound: Bound) -> socket.socket:
    """`key`'s socket at `address` (ingest.unix, otlp.unix), with `[ingest] unix_mode` and `unix_group`."""
    path = Path(address)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {path.parent}: {exc.strerror or exc}") from None
    bound._claim_fds.append(claim(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(umask)
    bound._socket_files.append(path)
    sock.listen(BACKLOG)
    if config.ingest.unix_group:
        try:
            shutil.chown(path, group=config.ingest.unix_group)
        except (LookupError, PermissionError) as exc:
            sock.close()
            raise ConfigError(
                f"ingest.unix_group: cannot give the socket to {config.ingest.unix_group!r}: {exc}"
            ) from exc
    os.chmod(path, config.ingest.unix_mode)
    sock.set_inheritable(True)
    return sock


def _otlp(config: Config, inherited: Listeners, bound: Bound) -> tuple[socket.socket, ...]:
    """The OTLP receiver's TCP and Unix listeners, each the one the service manager passed, else bound here."""
    passed = by_family(inherited.otlp)
    tcp = passed.http or ((_tcp("otlp.http", config.otlp.http),) if config.otlp.http else ())
    unix = passed.unix or ((_unix("otlp.unix", config.otlp.unix, config, bound),) if config.otlp.unix else ())
    return (*tcp, *unix)


def bind_listeners(config: Config, inherited: Listeners) -> Bound:
    bound = Bound(Listeners(), {})
    try:
        http = inherited.http or ((_tcp("ingest.http", config.ingest.http),) if config.ingest.http else ())
        bound.listeners = Listeners(http=http)
        unix = inherited.unix or (
            (_unix("ingest.unix", config.ingest.unix, config, bound),) if config.ingest.unix else ()
        )
        bound.listeners = Listeners(http=http, unix=unix)
        admin = (_tcp("admin.http", config.admin.http),) if config.admin.http else ()
        bound.listeners = Listeners(http=http, unix=unix, admin=admin)
        otlp = _otlp(config, inherited, bound)
        bound.listeners = Listeners(http=http, unix=unix, admin=admin, otlp=otlp)
    except BaseException:
        bound.__exit__(None, None, None)
        raise
    for sock in [*http, *unix, *otlp]:
        sock.set_inheritable(True)
    bound.fds = {
        "http": [s.fileno() for s in http],
        "unix": [s.fileno() for s in unix],
        "admin": [s.fileno() for s in admin],
        "otlp": [s.fileno() for s in otlp],
    }
    return bound
