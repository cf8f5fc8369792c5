"""Socket activation: listening sockets inherited from systemd (the sd_listen_fds(3) protocol) instead of our own.

Why: the service manager owns the listeners, so connections made while shipper restarts (an upgrade, a crash, a
watchdog kill) wait in the kernel's backlog instead of being refused, and the socket file's path, owner and mode
are set by the unit, outside the daemon's sandbox.

The protocol: `LISTEN_FDS=N` sockets start at fd 3, `LISTEN_PID` names the process they are for, and
`LISTEN_FDNAMES` (colon-separated) names each one (`FileDescriptorName=`; by default the socket unit's name).
A socket named `http`, `unix` or `otlp` (the OTLP receiver's, TCP or Unix) takes that role; any other is placed by
its family (AF_UNIX → unix, AF_INET/AF_INET6 → http), since one socket unit can give all its sockets only one name.
Not responsible for serving the sockets (ingest/server.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from shipper.errors import ShipperError

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_ROLE_BY_FAMILY = {socket.AF_UNIX: "unix", socket.AF_INET: "http", socket.AF_INET6: "http"}


class ActivationError(ShipperError):
    """The inherited sockets do not fit: not sockets, not listening, or not of the family their name says."""


@dataclass(frozen=True, slots=True)
class Listeners:
    """Inherited listeners by role; an empty role means "bind the configured address yourself"."""

    http: tuple[socket.socket, ...] = ()
    unix: tuple[socket.socket, ...] = ()
    admin: tuple[socket.socket, ...] = ()  # only from a supervisor (supervisor.py), never from systemd
    otlp: tuple[socket.socket, ...] = ()  # the OTLP receiver's, TCP or Unix (shipper/ingest/otlp.py)


def listen_fds(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[tuple[str, socket.socket]]:
    """The inherited sockets as (name, socket); name is "" when `LISTEN_FDNAMES` is absent.

    The variables are removed from the environment first, whatever they hold, so no child process inherits
    them (as sd_listen_fds(unset_environment=1) does), and the fds are made close-on-exec for the same reason.
    """
    env = os.environ if environ is None else environ
    values = {name: env.pop(name, None) for name in _VARIABLES}
    count, names = values["LISTEN_FDS"], values["LISTEN_FDNAMES"]
    if count is None or values["LISTEN_PID"] != str(os.getpid() if pid is None else pid):
        return []  # none passed, or passed to another process (we were forked or exec'd by the real recipient)
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number")
    labels = names.split(":") if names else [""] * int(count)
    if len(labels) != int(count):
        raise ActivationError(f"LISTEN_FDNAMES has {len(labels)} name(s) for LISTEN_FDS={count}")
    inherited: list[tuple[str, socket.socket]] = []
    for fd, label in enumerate(labels, start=SD_LISTEN_FDS_START):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            for _, opened in inherited:
                opened.close()
            raise ActivationError(f"inherited fd {fd} ({label or 'unnamed'}) is not a socket: {exc}") from exc
        sock.set_inheritable(False)
        inherited.append((label, sock))
    return inherited


def _role(fd_label: str, sock: socket.socket) -> str:
    where = f"inherited fd {sock.fileno()} ({fd_label or 'unnamed'})"
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ActivationError(f"{where} is not a listening stream socket (use ListenStream=)")
    by_family = _ROLE_BY_FAMILY.get(sock.family)
    role = fd_label if fd_label in ("http", "unix", "otlp") else by_family
    if role is None or by_family is None or (role != "otlp" and role != by_family):
        family = getattr(sock.family, "name", sock.family)
        raise ActivationError(f"{where} has family {family}, which cannot serve {role or 'ingest'}")
    return role


def by_family(sockets: Sequence[socket.socket]) -> Listeners:
    """Sockets of one role, TCP or Unix (the OTLP receiver's), as the `http` and `unix` listeners of a server."""
    tcp = tuple(sock for sock in sockets if sock.family != socket.AF_UNIX)
    return Listeners(http=tcp, unix=tuple(sock for sock in sockets if sock.family == socket.AF_UNIX))


def classify(inherited: Sequence[tuple[str, socket.socket]]) -> Listeners:
    """Sort inherited sockets into roles, refusing any that shipper could not serve."""
    roles: dict[str, list[socket.socket]] = {"http": [], "unix": [], "otlp": []}
    for label, sock in inherited:
        roles[_role(label, sock)].append(sock)
    return Listeners(http=tuple(roles["http"]), unix=tuple(roles["unix"]), otlp=tuple(roles["otlp"]))


def inherited_listeners(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> Listeners:
    """What the service manager passed us, by role (both roles empty when not socket-activated)."""
    inherited = listen_fds(environ, pid)
    try:
        listeners = classify(inherited)
    except ActivationError:
        for _, sock in inherited:
            sock.close()
        raise
    if inherited:
        names = [label for label, _ in inherited]
        log.info("socket-activated: %d inherited listener(s)", len(inherited), extra={"names": names})
    return listeners
