"""The shipper's own start and stop lines, said by the supervisor for all its processes."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from pathlib import Path

from shipper.config import Config
from shipper.ingest.activation import Listeners
from shipper.stopping import queued, say_stopped
from shipper.supervisor.child import Child

log = logging.getLogger("shipper.supervisor")


def started(config: Config, config_path: Path | None, listening: Listeners, children: list[Child]) -> None:
    log.info(
        "shipper started",
        extra={
            "listen": [_address(sock) for sock in (*listening.http, *listening.unix)],
            "admin": [_address(sock) for sock in listening.admin],
            "otlp": [_address(sock) for sock in listening.otlp],
            "sinks": list(config.sinks),
            "config": str(config_path or "built-in defaults"),
            "roles": dict(Counter(c.role for c in children)),
        },
    )


def stopped(config: Config, children: list[Child], uptime: float, drained: float) -> None:
    """The shipper's stop line, as one process says it: the roles' reports added up."""
    reports = [c.stopped for c in children if c.stopped is not None]
    sinks: dict[str, Counter[str]] = {}
    for report in reports:
        for name, counts in report.get("sinks", {}).items():
            sinks.setdefault(name, Counter()).update(counts)
    abandoned = sum(int(r.get("abandoned", 0)) for r in reports)
    added = {name: dict(counts) for name, counts in sinks.items()}
    say_stopped(log, logging.INFO, uptime, drained, abandoned, queued(config), added)


def _address(sock: socket.socket) -> str:
    """As aiohttp names a site: http://host:port, or http://unix:PATH: for a Unix socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"http://unix:{name}:"
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"http://{host}:{name[1]}"
