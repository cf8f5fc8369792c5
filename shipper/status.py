"""`shipper status`: the spool's view (works with the daemon stopped) merged with the daemon's live view.

The live part comes from `GET /v1/status` on the daemon's own socket, with a short timeout so a hung daemon
cannot hang the command. The daemon answering at this config's address is the truth about what runs: every sink it
reports is shown, with the figures of the spool it names, even when this config (the built-in default, say) names
other sinks or another spool; what the view lacks (no daemon, an unreadable spool, sinks the daemon does not run) is
said in words. Not responsible for gathering numbers (spool/stats.py, metrics.py).
"""

from __future__ import annotations

import http.client
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from shipper.client import UnixConnection
from shipper.config import Config
from shipper.config.listeners import parse_host_port
from shipper.errors import SpoolError
from shipper.logs import human_age
from shipper.spool.stats import SpoolStats, read_stats

LIVE_TIMEOUT = 1.0
# The table fits a 100-column terminal: sink names are cut to 20 characters, errors go on lines of their own.
WIDTH = 100
MAX_SINK_CHARS = 20


def fetch_live(config: Config) -> dict[str, Any] | None:
    """The running daemon's view, or None when no daemon answers. A relay serves no ingest listener: with
    `[relay]` in the config, its admin listener is asked."""
    candidates: list[tuple[http.client.HTTPConnection, dict[str, str]]] = []
    headers = {"X-Shipper-Token": config.ingest.token.get_secret_value()} if config.ingest.token else {}
    if config.ingest.unix:
        candidates.append((UnixConnection(config.ingest.unix, LIVE_TIMEOUT), headers))
    if config.ingest.http:
        host, port = parse_host_port(config.ingest.http)
        candidates.append((http.client.HTTPConnection(host, port, timeout=LIVE_TIMEOUT), headers))
    if config.relay is not None and config.admin.http:
        host, port = parse_host_port(config.admin.http)
        admin = {"X-Shipper-Token": config.admin.token.get_secret_value()} if config.admin.token else {}
        candidates.append((http.client.HTTPConnection(host, port, timeout=LIVE_TIMEOUT), admin))
    for conn, headers in candidates:
        try:
            conn.request("GET", "/v1/status", headers=headers)
            response = conn.getresponse()
            if response.status == 200:
                live: dict[str, Any] = orjson.loads(response.read())
                return live
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
            continue
        finally:
            conn.close()
    return None


def gather(config: Config) -> dict[str, Any]:
    """Every sink the spool or the daemon knows, with `partial` saying in words what the view lacks, and why."""
    live = fetch_live(config)
    partial: list[str] = []
    if live is None:
        partial.append(f"no daemon answered at {_addresses(config)}: spool figures only, no live state or errors")
    # The daemon at our address says which spool it uses; it may not be the one this config names.
    spool = Path(live["spool"]) if live is not None and live.get("spool") else config.spool.path
    running: dict[str, dict[str, Any]] = {} if live is None else live["sinks"]
    stats: SpoolStats | None = None
    try:
        # This config's sinks matter only when no daemon says what runs: it may not be the daemon's config.
        stats = read_stats(spool, sorted(running) if live is not None else list(config.sinks))
    except SpoolError as exc:
        if live is None:
            raise
        partial.append(f"{exc}: live figures only, no queue depths")
    counts = {s.sink: asdict(s) for s in stats.sinks} if stats is not None else {}
    sinks = []
    for name in sorted({*counts, *running}):
        entry = counts.get(name, {"sink": name})
        if name in running:
            entry.update(running[name])
        sinks.append(entry)
    idle = sorted(set(counts) - set(running))
    if live is not None and idle:
        partial.append(f"not run by the daemon, spool figures only: {', '.join(idle)}")
    daemon = {"running": live is not None, "pid": live["pid"] if live else None}
    size = stats.file_bytes if stats is not None else None
    return {"daemon": daemon, "spool": {"path": str(spool), "bytes": size}, "sinks": sinks, "partial": partial}


def _addresses(config: Config) -> str:
    relay = config.admin.http if config.relay is not None else ""
    tried = [a for a in (config.ingest.unix and str(config.ingest.unix), config.ingest.http, relay) if a]
    return " or ".join(tried) or "no address (this config has no listener)"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_table(view: dict[str, Any], now: float | None = None) -> str:
    """The table, at most WIDTH columns: one row per sink, then each sink's last error and why the view is partial."""
    now = time.time() if now is None else now
    header = ("SINK", "QUEUED", "IN-FLIGHT", "DELIVERED/MIN", "STATE", "RETRYING", "DEAD", "OLDEST")
    rows = []
    errors = []
    for s in view["sinks"]:
        since = s.get("retrying_since")
        rows.append(
            (
                _cut(s["sink"], MAX_SINK_CHARS),
                _count(s.get("queued")),
                _count(s.get("in_flight", s.get("leased"))),
                _rate(s.get("delivered_per_minute")),
                s.get("state", "-"),
                "-" if since is None else f"for {human_age(now - since)}",
                _count(s.get("dead_lettered")),
                human_age(s.get("oldest_age")),
            )
        )
        if s.get("last_error"):
            at = s.get("last_error_at")
            when = "" if at is None else f" ({human_age(max(0.0, now - at))} ago)"
            errors.append(_cut(f"last error, {s['sink']}{when}: {' '.join(s['last_error'].split())}", WIDTH))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines += errors
    daemon = view["daemon"]
    state = f"running (pid {daemon['pid']})" if daemon["running"] else "not running"
    size = "size unknown" if view["spool"]["bytes"] is None else human_bytes(view["spool"]["bytes"])
    lines.append(f"daemon: {state}; spool {view['spool']['path']}: {size}")
    lines += [textwrap.fill(f"partial view: {why}", WIDTH, subsequent_indent="  ") for why in view.get("partial", [])]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
