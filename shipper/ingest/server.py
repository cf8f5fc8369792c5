"""Serve one application on a TCP port and a Unix socket at once, so both transports share every code path.

Each listener is either inherited from the service manager (socket activation, see activation.py) or bound here
from `[ingest] http` / `[ingest] unix`, role by role. A socket path is claimed before it is bound
(socket_claim.py), so a second daemon cannot take over a live one's socket; a listener that cannot be bound (a busy
port, say) is one ConfigError naming its key and address. Not responsible for routes. Stopping the server is the
first step of a graceful shutdown: it stops accepting, then cuts what is still open once the daemon's drain is over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from pathlib import Path

from aiohttp import web

from shipper.config.listeners import IngestConfig, is_loopback, parse_host_port
from shipper.errors import ConfigError
from shipper.ingest.activation import Listeners, inherited_listeners
from shipper.ingest.socket_claim import claim

log = logging.getLogger(__name__)

BACKLOG = 1024


class IngestServer:
    def __init__(
        self,
        app: web.Application,
        config: IngestConfig,
        listeners: Listeners | None = None,
        section: str = "ingest",
    ) -> None:
        """`listeners`: inherited sockets to serve; None reads them from the environment (LISTEN_FDS) at start.
        `section`: the config section an error binding `http` or `unix` names (the OTLP receiver is served by this
        too)."""
        self._section = section
        self._app = app
        self._config = config
        self._listeners = listeners
        self._runner: web.AppRunner | None = None
        # The socket file this process bound, and so must remove; never one the service manager owns.
        self._own_socket_file: Path | None = None
        self._socket_lock: int | None = None  # held from before the bind until after the unlink
        self.addresses: list[str] = []

    async def start(self) -> None:
        """Serve every listener, or none: a listener that cannot start undoes the ones already serving."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        listeners = self._listeners if self._listeners is not None else inherited_listeners()
        config = self._config
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=config.client_timeout,
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            auto_decompress=False,  # bodies are inflated by ingest/encoding.py, bounded by max_body_bytes
        )
        await runner.setup()
        self._runner = runner
        if listeners.http:
            await self._serve_inherited(runner, listeners.http)
        elif self._config.http:
            host, port = parse_host_port(self._config.http)
            site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True)
            await self._start_site(site, f"{self._section}.http: cannot listen on {self._config.http}")
        if listeners.unix:
            await self._serve_inherited(runner, listeners.unix)
        elif self._config.unix:
            await self._bind_unix(runner, Path(self._config.unix))

    async def _serve_inherited(self, runner: web.AppRunner, sockets: tuple[socket.socket, ...]) -> None:
        # Already bound, with the path, owner and mode the unit gave it: serve as is, never chmod or unlink.
        for sock in sockets:
            if sock.family != socket.AF_UNIX and not is_loopback(sock.getsockname()[0]) and not self._config.token:
                where = sock.getsockname()[0]
                raise ConfigError(f"ingest.token: the inherited listener on {where} is not loopback; set a token")
            await self._start_site(web.SockSite(runner, sock, backlog=BACKLOG))

    async def _start_site(self, site: web.BaseSite, failure: str = "") -> None:
        """`failure` names the key and address for an error binding it (a busy port, a missing directory)."""
        try:
            await site.start()
        except OSError as exc:
            if not failure:
                raise
            raise ConfigError(f"{failure}: {os.strerror(exc.errno) if exc.errno else exc}") from None
        self.addresses.append(site.name)

    async def _bind_unix(self, runner: web.AppRunner, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self._section}.unix: cannot create {path.parent}: {exc.strerror or exc}") from None
        # Another daemon (with another spool, so the spool lock cannot tell) may serve this very path.
        self._socket_lock = claim(path)
        # Born owner-only, then opened up to unix_mode: never, even for an instant, wider than configured.
        umask = os.umask(0o177)
        try:
            await self._start_site(
                web.UnixSite(runner, str(path), backlog=BACKLOG), f"{self._section}.unix: cannot listen on {path}"
            )
        finally:
            os.umask(umask)
        self._own_socket_file = path
        if self._config.unix_group:
            try:
                shutil.chown(path, group=self._config.unix_group)
            except (LookupError, PermissionError) as exc:
                group = self._config.unix_group
                raise ConfigError(f"ingest.unix_group: cannot give the socket to {group!r}: {exc}") from exc
        os.chmod(path, self._config.unix_mode)

    async def stop(self, timeout: float = 0.0) -> None:
        """Close the listeners and every connection; a handler still running gets `timeout` to end, then is
        cancelled (the caller has already waited for requests in flight: see the daemon's drain)."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
            if self._runner.server is not None:
                await self._runner.server.shutdown(timeout)
            await self._runner.cleanup()  # nothing left open: returns at once
            self._runner = None
        if self._own_socket_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._own_socket_file.unlink()
            self._own_socket_file = None
        if self._socket_lock is not None:  # only now: a successor must not see our socket file as its own
            os.close(self._socket_lock)
            self._socket_lock = None
