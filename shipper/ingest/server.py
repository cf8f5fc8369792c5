"""Serve one application on a TCP port and a Unix socket at once, so both transports share every code path.

Not responsible for routes. Stopping the server is the first step of a graceful shutdown: it stops accepting,
then waits (up to the drain timeout) for handlers already committing rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from aiohttp import web

from shipper.config import IngestConfig, parse_host_port

log = logging.getLogger(__name__)


class IngestServer:
    def __init__(self, app: web.Application, config: IngestConfig, drain_timeout: float) -> None:
        self._app = app
        self._config = config
        self._drain_timeout = drain_timeout
        self._runner: web.AppRunner | None = None
        self.addresses: list[str] = []

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        if self._config.http:
            host, port = parse_host_port(self._config.http)
            site = web.TCPSite(
                runner, host, port, backlog=1024, reuse_address=True, shutdown_timeout=self._drain_timeout
            )
            await site.start()
            self.addresses.append(site.name)
        if self._config.unix:
            path = Path(self._config.unix)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The spool lock proves no other shipper owns this config, so a leftover socket is stale.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            unix_site = web.UnixSite(runner, str(path), backlog=1024, shutdown_timeout=self._drain_timeout)
            await unix_site.start()
            os.chmod(path, self._config.unix_mode)
            self.addresses.append(unix_site.name)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._config.unix:
            with contextlib.suppress(FileNotFoundError):
                Path(self._config.unix).unlink()
