"""`shipper status`: the spool's view (works with the daemon stopped) merged with the daemon's live view.

The live part comes from `GET /v1/status` on the daemon's own socket, with a short timeout so a hung daemon
cannot hang the command. Not responsible for gathering numbers (spool/stats.py, metrics.py).
"""

from __future__ import annotations

import http.client
import time
from typing import Any

import orjson

from shipper.client import UnixConnection
from shipper.config import Config, parse_host_port
from shipper.spool.stats import read_stats

LIVE_TIMEOUT = 1.0


def fetch_live(config: Config) -> dict[str, Any] | None:
    """The running daemon's view, or None when no daemon answers."""
    candidates: list[http.client.HTTPConnection] = []
    if config.ingest.unix:
        candidates.append(UnixConnection(config.ingest.unix, LIVE_TIMEOUT))
    if config.ingest.http:
        host, port = parse_host_port(config.ingest.http)
        candidates.append(http.client.HTTPConnection(host, port, timeout=LIVE_TIMEOUT))
    headers = {"X-Shipper-Token": config.ingest.token.get_secret_value()} if config.ingest.token else {}
    for conn in candidates:
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
    stats = read_stats(config.spool.path, list(config.sinks))
    live = fetch_live(config)
    sinks = []
    for s in stats.sinks:
        entry: dict[str, Any] = {
            "sink": s.sink,
            "queued": s.queued,
            "leased": s.leased,
            "retrying": s.retrying,
            "dead_lettered": s.dead_lettered,
            "oldest_age": s.oldest_age,
        }
        if live is not None:
            entry.update(live["sinks"].get(s.sink, {}))
        sinks.append(entry)
    daemon = {"running": live is not None, "pid": live["pid"] if live else None}
    return {"daemon": daemon, "spool": {"path": stats.path, "bytes": stats.file_bytes}, "sinks": sinks}


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_table(view: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("SINK", "QUEUED", "IN-FLIGHT", "DELIVERED/MIN", "STATE", "RETRYING", "DEAD", "OLDEST", "LAST ERROR")
    rows = []
    for s in view["sinks"]:
        since = s.get("retrying_since")
        rows.append(
            (
                s["sink"],
                str(s["queued"]),
                str(s.get("in_flight", s["leased"])),
                _rate(s.get("delivered_per_minute")),
                s.get("state", "-"),
                "-" if since is None else f"for {human_age(now - since)}",
                str(s["dead_lettered"]),
                human_age(s["oldest_age"]),
                (s.get("last_error") or "-")[:60] if s.get("state", "up") != "up" else "-",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    daemon = view["daemon"]
    state = f"running (pid {daemon['pid']})" if daemon["running"] else "not running"
    lines.append(f"daemon: {state}; spool {view['spool']['path']}: {human_bytes(view['spool']['bytes'])}")
    return "\n".join(lines)
